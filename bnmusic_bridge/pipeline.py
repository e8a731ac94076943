"""The render pipeline: the one place where the BNMusic steps are put in order.

The CLI, the OSC server, batch rendering and pedalboard scripts all call
:func:`render` (numpy audio in) or :func:`render_file` (a path in). Data flows one way:
check -> load + analyse -> generate -> stitch -> loudness-match -> threshold + lambda ->
effects -> result. Writing files is :mod:`bnmusic_bridge.export`'s job.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import audio as audio_io
from .errors import AudioInputError, GeneratorError
from .generators.base import GenerationSettings, NoiseWindow, ProgressFn, WindowMusic
from .grid import FRAME_RATE_HZ, IMAGE_FRAMES, SAMPLE_RATE_HZ, WINDOW_SAMPLES
from .loudness import integrated_lufs
from .mask import enlarge_mask, high_energy_mask
from .request import RenderRequest, RenderResult, check_request
from .windows import WindowPlan, plan_windows, stitch

SILENCE_PEAK_DBFS = -100.0
SILENCE_LUFS_GATE = -70.0
"""BS.1770's absolute gate: a noise stem no louder than this is treated as silent."""
"""A noise stem whose peak is below this has no high-energy region to blend into."""
MODEL_GENERATORS = ("riffusion", "riffusion-a2a", "outpaint-only")
"""Generators that take the model/device/dtype/local_files_only options."""

StageHook = Callable[[str, float], None]


class _Progress:
    """Turns stage-local fractions into calls of the user's callback and keeps timings."""

    def __init__(self, callback: ProgressFn | None) -> None:
        self.callback = callback
        self.timings_s: dict[str, float] = {}
        self._stage: str | None = None
        self._t0 = 0.0

    def start(self, stage: str) -> None:
        self._finish()
        self._stage = stage
        self._t0 = time.perf_counter()
        self(stage, 0.0)

    def __call__(self, stage: str, fraction: float) -> None:
        if self.callback is not None:
            self.callback(stage, float(min(max(fraction, 0.0), 1.0)))

    def _finish(self) -> None:
        if self._stage is not None:
            self.timings_s[self._stage] = self.timings_s.get(self._stage, 0.0) + (
                time.perf_counter() - self._t0
            )
            self(self._stage, 1.0)
            self._stage = None

    def done(self) -> dict[str, float]:
        self._finish()
        self.timings_s["total"] = sum(v for k, v in self.timings_s.items() if k != "total")
        return self.timings_s


def generator_for(request: RenderRequest):  # type: ignore[no-untyped-def]
    """The (process-cached) generator a request asks for."""
    from .generators import get_generator

    options: dict[str, Any] = {}
    if request.generator in MODEL_GENERATORS:
        options = {
            "model": request.model,
            "device": request.device,
            "dtype": request.dtype,
            "local_files_only": request.local_files_only,
            "scheduler": request.scheduler,
        }
    return get_generator(request.generator, **options)


def render_file(
    path: str | os.PathLike[str],
    request: RenderRequest | None = None,
    *,
    progress: ProgressFn | None = None,
) -> RenderResult:
    """Read an audio file and :func:`render` it. The result's ``source`` is the path."""
    req = request or RenderRequest()
    check_request(req)
    t0 = time.perf_counter()
    stem = audio_io.read_stem(path)
    return _render_stem(stem, req, progress, load_s=time.perf_counter() - t0)


def render(
    noise: np.ndarray,
    sample_rate_hz: int,
    request: RenderRequest | None = None,
    *,
    progress: ProgressFn | None = None,
) -> RenderResult:
    """Blend a noise stem into generated music.

    Args:
        noise: float ``(channels, samples)`` (or ``(samples,)``), linear amplitude, 1 to 8
            channels, 8 to 192 kHz, at least 0.5 s.
        sample_rate_hz: the stem's sample rate in Hz; every output has it too.
        request: parameters (defaults: :class:`RenderRequest`).
        progress: ``progress(stage, fraction)``; raise
            :class:`~bnmusic_bridge.errors.CancelledError` from it to cancel.

    Returns:
        :class:`RenderResult` with the music (unity gain and gained), the lambda lane,
        coverage, NMR, loudness, timings and every parameter used.
    """
    req = request or RenderRequest()
    check_request(req)
    stem = audio_io.check_audio(noise, sample_rate_hz)
    return _render_stem(stem, req, progress)


def _render_stem(
    stem: audio_io.Stem, req: RenderRequest, callback: ProgressFn | None, load_s: float = 0.0
) -> RenderResult:
    from . import spectrogram as spec
    from .analysis import analyse_stem

    prog = _Progress(callback)
    prog.timings_s["load"] = load_s
    warnings: list[str] = []
    where = str(stem.path) if stem.path else "<audio array>"

    # 1. Analysis-rate mono, silence and clipping checks.
    prog.start("analyse")
    peak = float(np.max(np.abs(stem.audio)))
    peak_dbfs = 20 * np.log10(peak) if peak > 0 else float("-inf")
    if peak_dbfs < SILENCE_PEAK_DBFS:
        raise AudioInputError(
            f"{where}: the noise is silent (peak {peak_dbfs:.1f} dBFS, below "
            f"{SILENCE_PEAK_DBFS:.0f} dBFS): it has no high-energy region to blend music into"
        )
    # Loudness as a DAW meters it (the stem's own rate and layout): the music is matched
    # to it, and the ceiling is relative to it.
    # DC is inaudible but K-weighting's start-up turns a DC step into loudness: remove it.
    noise_lufs = integrated_lufs(stem.audio - stem.audio.mean(axis=1, keepdims=True), stem.sample_rate_hz)
    dc = float(np.max(np.abs(stem.audio.mean(axis=1))))
    if dc > 0.01:
        warnings.append(f"{where}: DC offset of {dc:.3f} (linear): high-pass the stem before bouncing")
    if noise_lufs <= SILENCE_LUFS_GATE:
        raise AudioInputError(
            f"{where}: the noise is inaudible ({noise_lufs:.1f} LUFS, at or below the "
            f"{SILENCE_LUFS_GATE:.0f} LUFS gate of ITU-R BS.1770, e.g. dither or DC only): "
            "there is nothing to blend music into"
        )
    if stem.clipped_share > 0:
        warnings.append(
            f"{where}: {stem.clipped_share * 100:.2f} % of samples are clipped (|x| >= 0.999); "
            "the analysis uses them as they are"
        )
    mono = audio_io.to_analysis_mono(stem)
    n = mono.shape[0]
    plan = plan_windows(n, req.overlap_frames)
    padded = audio_io.fit_length(mono[None, :], plan.padded_samples)[0]

    # 2. Noise mel, high-energy mask, rhythm and band analysis.
    noise_mel_padded = spec.audio_to_mel(padded)
    mask_padded = high_energy_mask(
        noise_mel_padded,
        req.mask_area,
        window_starts=list(plan.start_frames),
        window_frames=IMAGE_FRAMES,
        valid_frames=plan.valid_frames,
    )
    frames = spec.num_frames(n)
    noise_mel = noise_mel_padded[:, :frames]
    mask = mask_padded[:, :frames]
    analysis = analyse_stem(mono, noise_mel, mask)
    prog("analyse", 0.7)
    windows = _noise_windows(plan, padded, noise_mel_padded, mask_padded)

    # 3. Stage 1: music per window.
    prog.start("generate")
    generator = generator_for(req)
    settings = GenerationSettings(
        prompt=req.prompt,
        negative_prompt=req.negative_prompt,
        seed=req.seed,
        overlap_frames=req.overlap_frames,
        params=dict(req.generator_params),
    )
    music_windows = generator.generate(windows, analysis, settings, prog)
    if len(music_windows) != len(windows):
        raise GeneratorError(
            f"generator {req.generator!r} returned {len(music_windows)} windows for {len(windows)}"
        )

    # 4. Decode images, join windows, effects; bring the music to the stem's rate,
    # length and channels and loudness-match it to the noise there.
    prog.start("decode")
    per_window_audio = _window_audio(music_windows, windows, req.seed, prog)
    music_44k, join_correlations = stitch(plan, per_window_audio)
    if req.effects:
        from .fx import apply_effects

        prog.start("effects")
        music_44k = apply_effects(music_44k, SAMPLE_RATE_HZ, req.effects)
    music = audio_io.match_channels(
        audio_io.resample(music_44k, SAMPLE_RATE_HZ, stem.sample_rate_hz, stem.num_samples),
        stem.num_channels,
    )
    if np.any(music):
        # Unity = the music on the stem's rate and channels, as loud as the noise stem.
        unity = np.float32(10.0 ** ((noise_lufs - integrated_lufs(music, stem.sample_rate_hz)) / 20.0))
        music_44k = music_44k * unity
        music = music * unity

    # 5. Stage 2: threshold, lambda lane (objective, loudness ceiling, peak limit),
    # coverage, NMR.
    prog.start("amplify")
    music_mel = spec.audio_to_mel(music_44k.mean(axis=0))
    stage2 = _stage2(noise_mel, music_mel, mask, req, music_44k=music_44k, stem=stem, noise_lufs=noise_lufs)

    # 6. Apply the lane to the music on the stem's rate, channels and length, and check
    # the loudness ceiling and the peak limit on that very stem (trimming the lane if needed).
    prog.start("output")
    music_gained, stage2 = _stage2_output(stage2, music, stem.sample_rate_hz)
    warnings.extend(stage2["warnings"])
    # Report both loudnesses as the DAW will meter them: the stems' own rate and layout.
    music_lufs = float(stage2["blend"].rendered["music_lufs_output"])
    timings = prog.done()
    lane = stage2["lane"]
    return RenderResult(
        sample_rate_hz=stem.sample_rate_hz,
        num_samples=stem.num_samples,
        music=music.astype(np.float32),
        music_gained=music_gained,
        lane_times_s=np.asarray(lane.frame_times_s, dtype=np.float64),
        lane_gain_db=np.asarray(lane.frame_gain_db, dtype=np.float64),
        window_times_s=np.asarray(lane.window_times_s, dtype=np.float64),
        window_gain_db=np.asarray(lane.window_gain_db, dtype=np.float64),
        coverage=stage2["coverage"],
        coverage_per_frame=stage2["coverage_per_frame"],
        frame_rate_hz=FRAME_RATE_HZ,
        nmr_db=stage2["nmr_db"],
        noise_lufs=noise_lufs,
        music_lufs=music_lufs,
        timings_s=timings,
        request=req,
        generator_diagnostics=[dict(m.diagnostics) for m in music_windows],
        warnings=tuple(warnings),
        analysis={"noise_mel": noise_mel, "music_mel": music_mel, "mask": mask},
        source=stem.path,
        extra={
            "windows": plan.count,
            "join_correlations": join_correlations,
            "tempo_bpm": analysis.tempo_bpm,
            "nmr_per_frame_db": stage2["nmr_per_frame_db"],
            "peak_dbfs": peak_dbfs,
            "clipped_share": stem.clipped_share,
            **stage2["extra"],
        },
    )


def _noise_windows(
    plan: WindowPlan, padded: np.ndarray, noise_mel: np.ndarray, mask: np.ndarray
) -> list[NoiseWindow]:
    from .spectrogram import mel_to_image

    windows = []
    for k, (f0, s0) in enumerate(zip(plan.start_frames, plan.start_samples, strict=True)):
        mel_w = noise_mel[:, f0 : f0 + IMAGE_FRAMES]
        image, max_value = mel_to_image(mel_w)
        core = mask[:, f0 : f0 + IMAGE_FRAMES]
        windows.append(
            NoiseWindow(
                index=k,
                start_sample=s0,
                num_samples=WINDOW_SAMPLES,
                valid_samples=int(min(WINDOW_SAMPLES, max(0, plan.num_samples - s0))),
                audio=padded[s0 : s0 + WINDOW_SAMPLES],
                image=image,
                max_value=max_value,
                # Picture orientation, as the image: row 0 = highest band.
                mask=np.ascontiguousarray(core[::-1]),
                mask_enlarged=np.ascontiguousarray(enlarge_mask(core)[::-1]),
            )
        )
    return windows


def _window_audio(
    music: Sequence[WindowMusic], windows: Sequence[NoiseWindow], seed: int, prog: StageHook
) -> list[np.ndarray]:
    from .spectrogram import image_to_audio

    out = []
    for k, (m, w) in enumerate(zip(music, windows, strict=True)):
        if m.audio is not None:
            a = np.asarray(m.audio, dtype=np.float32)
            if a.ndim == 1:
                a = a[None, :]
            if a.shape[1] != w.num_samples or a.shape[0] not in (1, 2):
                raise GeneratorError(
                    f"window {k}: generator audio has shape {a.shape}; expected "
                    f"(1 or 2, {w.num_samples})"
                )
        elif m.image is not None:
            # The noise window's max_value keeps the music's level in step with the
            # noise from window to window (the image alone has no absolute scale).
            a = image_to_audio(m.image, w.max_value, num_samples=w.num_samples, seed=seed + k)[None, :]
        else:
            raise GeneratorError(f"window {k}: the generator returned neither audio nor image")
        if not np.all(np.isfinite(a)):
            raise GeneratorError(f"window {k}: the generator returned NaN or inf samples")
        out.append(a)
        prog("decode", (k + 1) / len(music))
    return out


def _stage2(
    noise_mel: np.ndarray,
    music_mel: np.ndarray,
    mask: np.ndarray,
    req: RenderRequest,
    *,
    music_44k: np.ndarray,
    stem: audio_io.Stem,
    noise_lufs: float,
) -> dict[str, Any]:
    from .blend import BlendSettings, plan_blend

    # Loudness and peaks are planned in the output's channel layout (music copied or
    # mixed as match_channels does it; noise as the stem is), on the 44.1 kHz music.
    music_out = audio_io.match_channels(music_44k, stem.num_channels)
    blend = plan_blend(
        noise_mel, music_mel, mask, music_out, noise_lufs, BlendSettings.from_request(req)
    )
    return _stage2_dict(blend)


def _stage2_output(
    stage2: dict[str, Any], music: np.ndarray, sample_rate_hz: int
) -> tuple[np.ndarray, dict[str, Any]]:
    from .blend import finish_blend

    music_gained, blend = finish_blend(stage2["blend"], music, sample_rate_hz)
    return music_gained, _stage2_dict(blend)


def _stage2_dict(blend: Any) -> dict[str, Any]:
    return {
        "blend": blend,
        "lane": blend.lane,
        "coverage": blend.coverage,
        "coverage_per_frame": blend.coverage_per_frame,
        "nmr_db": blend.nmr_db,
        "nmr_per_frame_db": blend.nmr_per_frame_db,
        "warnings": list(blend.warnings),
        "extra": {
            "blend": blend.summary(),
            "shortfall": [s.to_dict() for s in blend.shortfalls],
        },
    }
