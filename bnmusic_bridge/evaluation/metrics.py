"""Per clip and method measurements: masking coverage, NMR, the loudness the music needs,
the paper's lambda, and spectral / rhythmic alignment, in two scenarios.

Mel arrays are float ``(n_mels, frames)`` linear mel magnitude, one frame per
:data:`~bnmusic_bridge.grid.FRAME_PERIOD_S`; audio is float ``(channels, samples)``,
linear amplitude. dB/LUFS/LU are in the names; shares are 0..1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..alignment import DEFAULT_TOLERANCE_MS, rhythmic_alignment, spectral_alignment
from ..loudness import integrated_lufs
from ..request import THRESHOLD_MODELS
from ..result import RenderResult, WholeStemArray
from .data import NoiseClip, analysis_mono

if TYPE_CHECKING:
    from ..masking import MaskingField

NEEDED_LOUDNESS_COVERAGE = 0.9
"""Coverage (share 0..1 of the noise's high-energy bins) at which the eval reports the
loudness the music needs to mask them: the paper-style "LUFS@90%" / "LU@90%" columns
(``--eval-coverage``'s default). A measuring point of the report, not a render setting:
the render's own coverage objective is :attr:`~bnmusic_bridge.request.RenderRequest.target_coverage`."""
SCENARIOS = ("normalised", "direct")
"""``normalised``: music at unity (loudness-matched to the noise); ``direct``: music with
the lambda lane the pipeline chose."""
SCENARIO_LABELS = {"normalised": "loudness normalised", "direct": "direct (lambda applied)"}
"""How the report names each scenario."""


@dataclass(frozen=True)
class ClipMetrics:
    """The measurements of one clip x method x scenario. dB/LUFS/LU in the names;
    shares 0..1; ``inf`` for a loudness the music can never reach (bins it cannot mask);
    NaN where a metric is undefined (e.g. alignment of silent music).

    Attributes:
        clip, category, method, scenario: what was measured.
        generator, prompt, seed: how the music was made.
        noise_lufs: the noise's loudness as the pipeline measured it (mono mix), LUFS.
        gain_db: mean gain applied to the unity music in this scenario, dB (0 for
            ``normalised``; the lane's mean for ``direct``).
        music_lufs: the music's loudness as played in this scenario, LUFS.
        music_lu: ``music_lufs - noise_lufs``, LU.
        coverage: share of high-energy bins masked (request's threshold model).
        nmr_db: PEAQ-style noise-to-mask ratio, dB (lower: better masked).
        lufs_90_smr, lu_90_smr: loudness of the music scaled to mask ``target_coverage``
            (by default :data:`NEEDED_LOUDNESS_COVERAGE`) of the high-energy bins under
            the paper's smr model (LUFS; LU over the noise).
        lufs_90_spreading, lu_90_spreading: the same under the spreading model.
        ceiling_smr: largest reachable coverage under smr (bins the music has no energy
            in can never be masked).
        lambda_paper_db: the paper's scalar lambda (exact minimiser of its loss over the
            whole clip), dB re unity; ``-inf`` when the loss chooses silence.
        spectral_time_r, spectral_freq_r, mask_energy_share: see
            :class:`~bnmusic_bridge.alignment.SpectralAlignment`.
        onset_xcorr, onset_lag_ms, onset_precision, onset_recall, onset_f,
            noise_onsets, music_onsets: see :class:`~bnmusic_bridge.alignment.RhythmicAlignment`.
        render_s: seconds the render took.
    """

    clip: str
    category: str
    method: str
    scenario: str
    generator: str
    prompt: str
    seed: int
    noise_lufs: float
    gain_db: float
    music_lufs: float
    music_lu: float
    coverage: float
    nmr_db: float
    lufs_90_smr: float
    lu_90_smr: float
    lufs_90_spreading: float
    lu_90_spreading: float
    ceiling_smr: float
    lambda_paper_db: float
    spectral_time_r: float
    spectral_freq_r: float
    mask_energy_share: float
    onset_xcorr: float
    onset_lag_ms: float
    onset_precision: float
    onset_recall: float
    onset_f: float
    noise_onsets: int
    music_onsets: int
    render_s: float


def loudness_for_coverage(
    field: MaskingField,
    mask: WholeStemArray,
    music: WholeStemArray,
    sample_rate_hz: int,
    target_coverage: float,
) -> tuple[float, float]:
    """Loudness the unity music would need to mask ``target_coverage`` of the mask's bins.

    The lowest linear gain reaching the target (:func:`~bnmusic_bridge.amplify.solve_gain_for_coverage`
    on the unity music's masking field) is applied to ``music`` and the result measured.

    Args:
        field: the :class:`~bnmusic_bridge.masking.MaskingField` of the unity music.
        mask: bool ``(n_mels, frames)`` high-energy mask.
        music: the unity music, ``(channels, samples)`` at ``sample_rate_hz``.
        target_coverage: 0..1.

    Returns:
        ``(loudness in LUFS, linear gain)``; ``(inf, inf)`` when the target is out of
        reach (too many bins where the music is silent).
    """
    from ..amplify import solve_gain_for_coverage

    gain = solve_gain_for_coverage(field, mask, target_coverage)
    if not math.isfinite(gain) or not np.any(music):
        return math.inf, math.inf
    return integrated_lufs(np.asarray(music, dtype=np.float64) * gain, sample_rate_hz), gain


def coverage_ceiling(field: MaskingField, mask: WholeStemArray) -> float:
    """Largest coverage (0..1) any gain reaches: share of mask bins with a finite
    required gain (1.0 for an empty mask)."""
    gains = field.required_gain()[np.asarray(mask, dtype=bool)]
    return float(np.isfinite(gains).mean()) if gains.size else 1.0


def threshold_fields(result: RenderResult) -> tuple[dict[str, MaskingField], MaskingField]:
    """The unity music's masking field under every model of
    :data:`~bnmusic_bridge.request.THRESHOLD_MODELS`, and the one of the request's model."""
    from ..masking import masking_field

    req = result.request
    noise_mel = result.analysis.noise_mel
    music_mel = result.analysis.music_mel
    fields = {
        model: masking_field(model, noise_mel, music_mel, smr_db=req.smr_db)
        for model in THRESHOLD_MODELS
    }
    if req.threshold_model in fields:
        return fields, fields[req.threshold_model]
    return fields, masking_field(req.threshold_model, noise_mel, music_mel, smr_db=req.smr_db)


def paper_lambda_db(
    music_mel: WholeStemArray, field: MaskingField, mask: WholeStemArray, alpha: float
) -> float:
    """The paper's scalar lambda over the whole clip (exact minimiser of its loss), dB re
    unity; ``-inf`` when the loss chooses silence or the music is silent."""
    from ..amplify import solve_lambda_exact

    silent = not np.any(music_mel)
    lam = 0.0 if silent else solve_lambda_exact(music_mel, field, mask, alpha=alpha)
    return 20.0 * math.log10(lam) if lam > 0 else -math.inf


@dataclass(frozen=True)
class ScenarioSignals:
    """The music as heard in one scenario.

    Attributes:
        gain: linear gain on the unity music: a scalar, or one per mel frame.
        gain_db: mean gain, dB.
        audio: the music as played, ``(channels, samples)``.
        mel: its mel magnitude, ``(n_mels, frames)``.
        mono: its analysis signal (:func:`~bnmusic_bridge.evaluation.data.analysis_mono`).
    """

    gain: float | np.ndarray
    gain_db: float
    audio: WholeStemArray
    mel: WholeStemArray
    mono: np.ndarray


def scenario_signals(result: RenderResult, scenario: str) -> ScenarioSignals:
    """The music of ``result`` as heard in ``scenario`` (see :data:`SCENARIOS`)."""
    music_mel = result.analysis.music_mel
    if scenario == "normalised":
        return ScenarioSignals(
            1.0, 0.0, result.music, music_mel, analysis_mono(result.music, result.sample_rate_hz)
        )
    frame_gain = np.power(10.0, np.asarray(result.lane_gain_db, dtype=np.float64) / 20.0)
    return ScenarioSignals(
        gain=frame_gain,
        gain_db=float(np.mean(result.lane_gain_db)) if len(result.lane_gain_db) else 0.0,
        audio=result.music_gained,
        mel=music_mel * frame_gain[None, :],
        mono=analysis_mono(result.music_gained, result.sample_rate_hz),
    )


def measure_result(
    result: RenderResult,
    noise_mono_44k: np.ndarray,
    *,
    clip: NoiseClip,
    method: str,
    target_coverage: float = NEEDED_LOUDNESS_COVERAGE,
    tolerance_ms: float = DEFAULT_TOLERANCE_MS,
) -> list[ClipMetrics]:
    """Measure one render in both scenarios.

    Args:
        result: the :class:`~bnmusic_bridge.result.RenderResult` of the normalised noise.
        noise_mono_44k: that noise as mono float ``(samples,)`` at 44.1 kHz (the
            pipeline's analysis signal, :func:`~bnmusic_bridge.evaluation.data.analysis_mono`).
        clip, method: labels of the rows.
        target_coverage: 0..1 for the loudness-for-coverage metric (not the render's
            coverage objective).
        tolerance_ms: rhythmic tolerance and largest cross-correlation lag, ms.

    Returns:
        one :class:`ClipMetrics` per scenario, in :data:`SCENARIOS` order.
    """
    from ..metering import coverage, nmr_db

    req = result.request
    noise_mel = result.analysis.noise_mel
    mask = result.analysis.mask
    sr = result.sample_rate_hz
    noise_lufs = float(result.noise_lufs)

    # 1. Masking fields of the unity music under each threshold model
    fields, field_req = threshold_fields(result)
    # 2. What does not depend on the scenario: loudness needed, ceiling, the paper's lambda
    lufs_90 = {
        m: loudness_for_coverage(f, mask, result.music, sr, target_coverage)[0]
        for m, f in fields.items()
    }
    ceiling = coverage_ceiling(fields["smr"], mask)
    lambda_db = paper_lambda_db(result.analysis.music_mel, field_req, mask, req.alpha)
    rows = []
    for scenario in SCENARIOS:
        # 3. The music as heard in this scenario
        heard = scenario_signals(result, scenario)
        # 4. Masking, loudness and alignment of that music
        cov, _ = coverage(field_req, mask, heard.gain)
        nmr, _ = nmr_db(noise_mel, field_req, heard.gain)
        # Silence has no loudness: -inf rather than the meter's -120 LUFS floor, so that
        # tables say "silent" instead of averaging a made-up level.
        music_lufs = integrated_lufs(heard.audio, sr) if np.any(heard.audio) else -math.inf
        spec = spectral_alignment(noise_mel, heard.mel, mask)
        n = min(heard.mono.size, noise_mono_44k.size)
        rhythm = rhythmic_alignment(
            noise_mono_44k[:n], heard.mono[:n], max_lag_ms=tolerance_ms, tolerance_ms=tolerance_ms
        )
        rows.append(
            ClipMetrics(
                clip=clip.name,
                category=clip.category,
                method=method,
                scenario=scenario,
                generator=req.generator,
                prompt=req.prompt,
                seed=int(req.seed),
                noise_lufs=noise_lufs,
                gain_db=heard.gain_db,
                music_lufs=float(music_lufs),
                music_lu=float(music_lufs - noise_lufs),
                coverage=float(cov),
                nmr_db=float(nmr),
                lufs_90_smr=lufs_90["smr"],
                lu_90_smr=lufs_90["smr"] - noise_lufs,
                lufs_90_spreading=lufs_90["spreading"],
                lu_90_spreading=lufs_90["spreading"] - noise_lufs,
                ceiling_smr=ceiling,
                lambda_paper_db=lambda_db,
                spectral_time_r=spec.time_correlation,
                spectral_freq_r=spec.frequency_correlation,
                mask_energy_share=spec.mask_energy_share,
                onset_xcorr=rhythm.envelope_correlation,
                onset_lag_ms=rhythm.envelope_lag_ms,
                onset_precision=rhythm.onset_precision,
                onset_recall=rhythm.onset_recall,
                onset_f=rhythm.onset_f_measure,
                noise_onsets=rhythm.noise_onsets,
                music_onsets=rhythm.music_onsets,
                render_s=float(result.timings_s.get("total", 0.0)),
            )
        )
    return rows
