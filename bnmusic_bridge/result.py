"""What a render gives back (:class:`RenderResult`) and the typed records it carries:
Stage 2's summary (:class:`BlendSummary`), the windows a cap kept from their target
(:class:`Shortfall`), the bus trim for the mix (:class:`BusTrim`), how the lane moves
(:class:`LaneMotion`), the analysis-grid arrays (:class:`AnalysisArrays`) and the render's
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
from .scratch import Cropped, DiskArray

WholeStemArray = np.ndarray | DiskArray | Cropped
"""A whole-stem array of a result: numpy (short stems) or, for a long stem, a
:class:`~bnmusic_bridge.scratch.DiskArray` (a scratch file) or a
:class:`~bnmusic_bridge.scratch.Cropped` view of one (the noise's mel and mask, cut
from the padded analysis to the stem's frames). All answer time slices (``x[:, a:b]``)
with numpy arrays; ``np.asarray(x)`` reads a long one whole, which a long stem's
memory budget does not allow."""

LIMITS = ("loudness ceiling", "peak limit", "max_gain_db", "unmaskable", "smoothing")
"""What can stop a lane window reaching its target (``Shortfall.limited_by``)."""
SHORTFALL_PREFIX = "shortfall: "
"""Start of the one warning line that explains a render's shortfalls
(``blend.shortfall_line``); the report's ``details.shortfall_summary`` and the OSC
server's ``/bnmusic/warning`` kind key on it."""


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


def _r(x: float | None, digits: int) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), digits)


@dataclass(frozen=True)
class BusTrim:
    """The trim that keeps the mix (the noise stem plus the blended music) under the
    peak ceiling, for the producer to apply to both alike.

    The blend is relative: the music's level is set against the noise stem as it was
    bounced. On a loud bounce the music may need to peak over full scale; the stems are
    then delivered as they are (32-bit float where needed) and this trim, put on a bus
    (or a VCA) carrying both the noise and the blended music, brings the sum under the
    ceiling without changing the blend. The unity music stem with the lane as automation
    plays the same as the blended stem, so the same trim applies to it.

    Attributes:
        trim_db: gain for the noise + music bus, dB (0 or negative).
        ceiling_dbtp: the ceiling the trimmed mix meets, dB true peak.
        mix_true_peak_dbtp: true peak (4x oversampled, ITU-R BS.1770) of noise +
            blended music before the trim, dBTP.
        mix_peak_dbfs: sample peak of the same, dBFS.
        music_peak_dbfs: sample peak of the blended music alone, dBFS.
        noise_peak_dbfs: sample peak of the noise stem alone, dBFS.
        peak_mode: the request's ``peak_mode`` ("bus-trim" or "lane").
    """

    trim_db: float
    ceiling_dbtp: float
    mix_true_peak_dbtp: float
    mix_peak_dbfs: float
    music_peak_dbfs: float
    noise_peak_dbfs: float
    peak_mode: str

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the report (rounded to 0.01 dB), with what the trim applies to."""
        return {
            "trim_db": _r(self.trim_db, 2),
            "applies_to": "the noise stem and the blended music alike (a bus or VCA on both)",
            "ceiling_dbtp": self.ceiling_dbtp,
            "mix_true_peak_dbtp": _r(self.mix_true_peak_dbtp, 2),
            "mix_peak_dbfs": _r(self.mix_peak_dbfs, 2),
            "music_peak_dbfs": _r(self.music_peak_dbfs, 2),
            "noise_peak_dbfs": _r(self.noise_peak_dbfs, 2),
            "peak_mode": self.peak_mode,
        }


@dataclass(frozen=True)
class LaneMotion:
    """How a lane moves, as a mix engineer would judge a fader ride
    (:func:`bnmusic_bridge.metering.lane_motion`).

    Attributes:
        duration_s: the lane's length, s.
        slew_share: share (0..1) of frame steps at the slew limit (at least 95 % of it).
        moving_share: share (0..1) of frame steps that move at all (over 0.001 dB).
        turns: times the lane changes direction (a rise becoming a fall or back; flat
            stretches do not count as a direction).
        turns_per_s: the same per second.
        min_turn_gap_s: shortest time between two turns, s (None: fewer than two).
        median_swing_1s_db: median over every 1 s span of the lane's range in it, dB.
        spikes: short excursions: runs of at most 50 ms where the lane stands more than
            0.05 dB off its 90 ms running median.
    """

    duration_s: float
    slew_share: float
    moving_share: float
    turns: int
    turns_per_s: float
    min_turn_gap_s: float | None
    median_swing_1s_db: float
    spikes: int

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the report (rounded)."""
        return {
            "duration_s": round(self.duration_s, 3),
            "slew_share": round(self.slew_share, 4),
            "moving_share": round(self.moving_share, 4),
            "turns": self.turns,
            "turns_per_s": round(self.turns_per_s, 4),
            "min_turn_gap_s": _r(self.min_turn_gap_s, 3),
            "median_swing_1s_db": round(self.median_swing_1s_db, 3),
            "spikes": self.spikes,
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
        peak_mode: the request's ``peak_mode``.
        bus_trim: the trim for the noise + music mix (None before the lane was applied).
        motion: how the final lane moves.
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
    peak_mode: str = "lane"
    bus_trim: BusTrim | None = None
    motion: LaneMotion | None = None

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
        out["peak_mode"] = self.peak_mode
        out["bus_trim_db"] = None if self.bus_trim is None else _r(self.bus_trim.trim_db, 2)
        out["bus_trim"] = None if self.bus_trim is None else self.bus_trim.to_dict()
        out["lane_motion"] = None if self.motion is None else self.motion.to_dict()
        return out


@dataclass(frozen=True)
class AnalysisArrays:
    """A render's arrays on the analysis grid, for plots and metering: mel orientation
    (row 0 = lowest band), one column per 10 ms frame.

    Each is a numpy array, or for a long stem a :class:`~bnmusic_bridge.scratch.DiskArray`
    (a scratch file; see :data:`WholeStemArray`): read them by time slices
    (``x[:, a:b]``, e.g. over :func:`bnmusic_bridge.scratch.blocks`);
    ``np.asarray(x)`` reads it whole.

    Attributes:
        noise_mel: float32 ``(512, frames)`` linear mel magnitude of the noise.
        music_mel: the same of the unity music (before the lane).
        mask: bool, the same shape: the noise's high-energy mask M.
    """

    noise_mel: WholeStemArray
    music_mel: WholeStemArray
    mask: WholeStemArray


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
        speakers: the music stem's speakers, one per channel (WAV channel-mask names:
            ``("FL", "FR")`` stereo, ``("FC",)`` mono, a multichannel stem's own layout;
            :mod:`bnmusic_bridge.channel_layout`); empty in a result built by hand.
    """

    generation_windows: int
    join_correlations: tuple[float, ...]
    tempo_bpm: float | None
    noise_peak_dbfs: float
    noise_clipped_share: float
    blend: BlendSummary
    shortfalls: tuple[Shortfall, ...]
    alignment: AlignmentSummary
    speakers: tuple[str, ...] = ()


@dataclass(frozen=True)
class RenderResult:
    """Everything a render produced, on the input stem's own sample rate and length.

    The whole-stem arrays (``music``, ``music_gained`` and ``analysis``'s) are numpy
    arrays, or for a long stem :class:`~bnmusic_bridge.scratch.DiskArray` scratch files
    (:data:`WholeStemArray`): read them by time slices (``x[:, a:b]``, block by block
    with :func:`bnmusic_bridge.scratch.blocks`); ``np.asarray(x)`` reads it whole. A
    DiskArray is pickled by value (whole), so a result sent to another process carries
    its arrays in memory. The per-frame vectors (lane, coverage, NMR) are always numpy.

    Attributes:
        sample_rate_hz: the input's sample rate (every output stem has it).
        num_samples: the input's length in samples (every output stem has it).
        music: float32 ``(channels, num_samples)`` at unity gain (loudness-matched to the
            noise: the same integrated LUFS).
        music_gained: ``music`` with the lambda lane applied (the blend-ready stem):
            exactly ``music * lane_gain_at(lane)`` sample by sample, as a DAW plays the
            exported lane. With ``peak_mode="bus-trim"`` it keeps the level the blend
            needs and may pass full scale; :attr:`bus_trim_db` keeps noise + music in
            range.
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
        noise_lufs: integrated loudness of the noise stem (BS.1770, its own rate, in the
            music's channel layout: a mono stem under stereo music is metered on both
            channels, a stem under mono music as its mono sum), LUFS.
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
    music: WholeStemArray
    music_gained: WholeStemArray
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

    @property
    def bus_trim(self) -> BusTrim | None:
        """The trim for a bus carrying the noise stem and the blended music (None in a
        result built by hand without details)."""
        return None if self.details is None else self.details.blend.bus_trim

    @property
    def bus_trim_db(self) -> float | None:
        """:attr:`bus_trim`'s gain in dB (0 or negative): apply it to the noise and the
        music alike and their sum stays at or under -1 dBTP."""
        trim = self.bus_trim
        return None if trim is None else trim.trim_db
