"""What a render gives back (:class:`RenderResult`) and the typed records it carries:
Stage 2's summary (:class:`BlendSummary`), the windows a cap kept from their target
(:class:`Shortfall`), the analysis-grid arrays (:class:`AnalysisArrays`) and the render's
other measurements (:class:`RenderDetails`).

Plain data only: Stage 2 (:mod:`bnmusic_bridge.blend`) and the pipeline fill these in,
the exporters read them by attribute.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .request import RenderRequest

LIMITS = ("loudness ceiling", "peak limit", "max_gain_db", "unmaskable", "smoothing")
"""What can stop a lane window reaching its target (``Shortfall.limited_by``)."""


@dataclass(frozen=True)
class Shortfall:
    """One lane window that a cap kept from its target.

    Attributes:
        window: index of the lane window.
        start_s, end_s: the window's span in seconds from the stem's start.
        target: coverage (0..1) the objective aimed at in the window (for ``paper``: the
            coverage at the window's optimum).
        reached: coverage (0..1) the final lane reaches there.
        needed_gain_db: the scalar gain the objective asked for in the window, dB on the
            unity music (None: no gain reaches it, bins the music cannot mask).
        capped_gain_db: the most the binding limit allows in the window, dB (its lowest
            value there).
        lane_gain_db: the lane's mean over the window, dB.
        limited_by: one of :data:`LIMITS`.
    """

    window: int
    start_s: float
    end_s: float
    target: float
    reached: float
    needed_gain_db: float | None
    capped_gain_db: float
    lane_gain_db: float
    limited_by: str

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the report (rounded)."""
        return {
            "window": self.window,
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
            "target": round(self.target, 4),
            "reached": round(self.reached, 4),
            "needed_gain_db": None
            if self.needed_gain_db is None
            else round(self.needed_gain_db, 2),
            "capped_gain_db": round(self.capped_gain_db, 2),
            "lane_gain_db": round(self.lane_gain_db, 2),
            "limited_by": self.limited_by,
        }


@dataclass(frozen=True)
class RenderedLevels:
    """Loudness and peak of the rendered gained music stem (its own rate and layout).

    Attributes:
        music_lufs_output: integrated loudness of the gained music, LUFS.
        noise_lufs_output: the noise's, measured the same way, LUFS.
        music_minus_noise_lu: their difference, LU.
        peak_dbfs: sample peak of the gained music, dBFS (the silence floor for silence).
    """

    music_lufs_output: float
    noise_lufs_output: float
    music_minus_noise_lu: float
    peak_dbfs: float

    def to_dict(self) -> dict[str, float]:
        """Plain data for the report (rounded to 0.001)."""
        return {
            "music_lufs_output": round(self.music_lufs_output, 3),
            "noise_lufs_output": round(self.noise_lufs_output, 3),
            "music_minus_noise_lu": round(self.music_minus_noise_lu, 3),
            "peak_dbfs": round(self.peak_dbfs, 3),
        }


@dataclass(frozen=True)
class BlendSummary:
    """Stage 2's controls and outcome in brief (:meth:`bnmusic_bridge.blend.Blend.summary`).

    Attributes:
        objective, threshold_model: as in the request.
        target_coverage: the coverage objective's target (None for ``paper``).
        max_loudness_lu: the loudness ceiling, LU over the noise (None: no ceiling).
        peak_ceiling_dbfs: highest planned sample peak of the gained music, dBFS.
        smoothing_s: the lane's smoothing time constant, s.
        max_slew_db_per_s: the lane's largest rate of change, dB/s (None: no limit).
        coverage: overall share (0..1) of mask bins masked under the lane.
        noise_lufs_output_layout: the noise's loudness in the output's layout, LUFS.
        trim_db: trim applied to the whole lane after rendering, dB (0 or negative).
        windows: lane windows.
        windows_short: lane windows short of their target (:class:`Shortfall`).
        rendered: the rendered stem's levels (None before the lane was applied).
    """

    objective: str
    threshold_model: str
    target_coverage: float | None
    max_loudness_lu: float | None
    peak_ceiling_dbfs: float
    smoothing_s: float
    max_slew_db_per_s: float | None
    coverage: float
    noise_lufs_output_layout: float
    trim_db: float
    windows: int
    windows_short: int
    rendered: RenderedLevels | None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the report: the fields in order (measurements rounded), the
        rendered levels' keys at the top level."""
        out: dict[str, Any] = {
            "objective": self.objective,
            "threshold_model": self.threshold_model,
            "target_coverage": self.target_coverage,
            "max_loudness_lu": self.max_loudness_lu,
            "peak_ceiling_dbfs": self.peak_ceiling_dbfs,
            "smoothing_s": self.smoothing_s,
            "max_slew_db_per_s": self.max_slew_db_per_s,
            "coverage": round(self.coverage, 6),
            "noise_lufs_output_layout": round(self.noise_lufs_output_layout, 3),
            "trim_db": round(self.trim_db, 3),
            "windows": self.windows,
            "windows_short": self.windows_short,
        }
        if self.rendered is not None:
            out.update(self.rendered.to_dict())
        return out


@dataclass(frozen=True)
class AnalysisArrays:
    """A render's arrays on the analysis grid, for plots and metering: mel orientation
    (row 0 = lowest band), one column per 10 ms frame.

    Attributes:
        noise_mel: float ``(512, frames)`` linear mel magnitude of the noise.
        music_mel: the same of the unity music (before the lane).
        mask: bool, the same shape: the noise's high-energy mask M.
    """

    noise_mel: np.ndarray
    music_mel: np.ndarray
    mask: np.ndarray


@dataclass(frozen=True)
class AlignmentSummary:
    """What the alignment step did (:mod:`bnmusic_bridge.align`).

    Attributes:
        strength: share (0..1) of the distance to the noise's band envelope moved.
        max_db: largest boost or cut allowed per band, dB.
        mean_abs_gain_db: mean absolute band gain over all bands and frames, dB (0: off).
        share_at_bound: share (0..1) of band-frames whose gain reached ``max_db``.
        event_lift_db: mean lift the noise's events gave the music, dB.
    """

    strength: float
    max_db: float
    mean_abs_gain_db: float
    share_at_bound: float
    event_lift_db: float

    def to_dict(self) -> dict[str, float]:
        return {
            "strength": self.strength,
            "max_db": self.max_db,
            "mean_abs_gain_db": round(self.mean_abs_gain_db, 3),
            "share_at_bound": round(self.share_at_bound, 4),
            "event_lift_db": round(self.event_lift_db, 3),
        }


@dataclass(frozen=True)
class RenderDetails:
    """What a render measured beside the headline figures (the report's ``details``).

    Attributes:
        generation_windows: Stage 1 windows the stem was cut into.
        join_correlations: correlation of the music across each join of two windows.
        tempo_bpm: the noise's tempo estimate, BPM (None: no periodicity found).
        noise_peak_dbfs: sample peak of the noise stem, dBFS.
        noise_clipped_share: share (0..1) of the noise's samples at full scale.
        blend: Stage 2's summary.
        shortfalls: lane windows a cap kept from their target.
        alignment: what the alignment step did to the music.
    """

    generation_windows: int
    join_correlations: tuple[float, ...]
    tempo_bpm: float | None
    noise_peak_dbfs: float
    noise_clipped_share: float
    blend: BlendSummary
    shortfalls: tuple[Shortfall, ...]
    alignment: AlignmentSummary


@dataclass(frozen=True)
class RenderResult:
    """Everything a render produced, on the input stem's own sample rate and length.

    Attributes:
        sample_rate_hz: the input's sample rate (every output stem has it).
        num_samples: the input's length in samples (every output stem has it).
        music: float32 ``(channels, num_samples)`` at unity gain (loudness-matched to the
            noise: the same integrated LUFS).
        music_gained: ``music`` with the lambda lane applied (the blend-ready stem).
        lane_times_s: lambda lane point times in seconds (one per 10 ms analysis frame).
        lane_gain_db: lambda at each point in dB relative to ``music``.
        window_times_s: centre of each lambda window in seconds.
        window_gain_db: the objective's raw gain per lane window in dB, before caps and
            smoothing: the paper loss's optimum (-inf: the loss chose silence there; the
            lane then holds ``min_gain_db``) or the gain the coverage target needs (+inf:
            no gain reaches it).
        coverage: overall share (0..1) of high-energy bins masked by the gained music.
        coverage_per_frame: per 10 ms frame (NaN where a frame has no high-energy bin).
        frame_rate_hz: rate of ``coverage_per_frame``, ``nmr_per_frame_db`` and the lane
            points (100 Hz).
        nmr_db: total noise-to-mask ratio in dB (lower is better masking).
        nmr_per_frame_db: per 10 ms frame, dB (-inf for a silent noise frame; NaN where
            not measured).
        noise_lufs: integrated loudness of the noise stem (BS.1770, its own rate and
            channel layout), LUFS.
        music_lufs: integrated loudness of ``music_gained``, measured the same way.
        timings_s: seconds spent per stage.
        request: every parameter used.
        generator_diagnostics: what the generator reported per window.
        warnings: things the user should know (clamped windows, clipping, ...).
        analysis: the noise's and the music's mel and the mask (:class:`AnalysisArrays`).
        source: the input path, when the render started from a file.
        details: the render's other measurements (None in a result built by hand).
    """

    sample_rate_hz: int
    num_samples: int
    music: np.ndarray
    music_gained: np.ndarray
    lane_times_s: np.ndarray
    lane_gain_db: np.ndarray
    window_times_s: np.ndarray
    window_gain_db: np.ndarray
    coverage: float
    coverage_per_frame: np.ndarray
    frame_rate_hz: float
    nmr_db: float
    nmr_per_frame_db: np.ndarray
    noise_lufs: float
    music_lufs: float
    timings_s: dict[str, float]
    request: RenderRequest
    generator_diagnostics: list[dict[str, Any]]
    warnings: tuple[str, ...]
    analysis: AnalysisArrays
    source: Path | None = None
    details: RenderDetails | None = None

    @property
    def num_channels(self) -> int:
        return int(self.music.shape[0])
