"""Blend controls a producer can steer (Stage 2, second half): which objective sets the
lambda lane, how loud the music may get, and an honest report of where that cost masking.

* Objective: ``paper`` (the paper's loss per window) or ``coverage`` (the lowest lane that
  masks ``target_coverage`` of each window's high-energy bins); see
  :func:`bnmusic_bridge.amplify.lambda_lane`.
* Loudness ceiling ``max_loudness_lu``: in every lane window the gained music is at most
  that many LU above the noise's integrated loudness (BS.1770 through
  :func:`bnmusic_bridge.loudness.integrated_lufs`, both measured in the output's channel
  layout). Because every window obeys it, the whole stem does too; the rendered stem is
  measured again at the end (:func:`finish_blend`) and trimmed if it still exceeds the
  ceiling (by more than :data:`OUTPUT_TOLERANCE_LU`), with a warning.
* Peaks, by ``peak_mode`` (:data:`~bnmusic_bridge.request.PEAK_MODES`):

  - ``"bus-trim"`` (the default): the blend is relative to the noise, so the peaks do
    not decide it. The music keeps the level the objective and the loudness ceiling
    give it, even where that passes full scale (the export writes such a stem as 32-bit
    float), and :func:`finish_blend` measures the mix (noise stem + blended music, true
    peak) and reports the :class:`~bnmusic_bridge.result.BusTrim` that brings it to
    :data:`PEAK_CEILING_DBFS` when the producer applies it to both, as a mix engineer
    pulls a bus or VCA down without touching the balance inside it.
  - ``"lane"``: the gained music's sample peak stays at or under
    :data:`PEAK_CEILING_DBFS` (-1 dBFS: headroom for the resampler's overshoot), so an
    integer export holds it without clipping; the lane is lowered where the music's peaks
    would cross it, held like a look-ahead limiter's gain (down ahead of the peaks, a
    hold of :data:`~bnmusic_bridge.amplify.LANE_HOLD_S`, then a release) rather than
    chasing every transient. The rendered stem is checked again at 0 dBFS.

  No limiter or clipper touches the waveform in either mode: the blended stem is
  exactly the unity stem times the lane (:func:`~bnmusic_bridge.amplify.lane_gain_at`),
  as a DAW plays it back from the exported lane.
* Absolute limits ``min_gain_db`` / ``max_gain_db`` as in the lane. The loudness ceiling
  and the peak limit win over ``min_gain_db`` (the floor only stops the paper's loss
  from muting the music), with a warning.

When a cap stops a window reaching its target, the window is listed in
:attr:`Blend.shortfalls` (a :class:`~bnmusic_bridge.result.Shortfall` each: how far short,
what gain it needed, what the cap allowed, which cap) and summarised in
:attr:`Blend.warnings`. Nothing is muted or clipped silently.

Arrays are on the analysis grid (10 ms frames, frame ``j`` centred on sample ``j * 441``
at 44.1 kHz); audio is ``(channels, samples)`` linear amplitude (pedalboard layout).
Whole-stem arrays (mels, mask, audio, the gained stem) are block arrays
(:mod:`bnmusic_bridge.scratch`: numpy or :class:`~bnmusic_bridge.scratch.DiskArray`),
read and written only by time slices; ``store`` says where the arrays a stage makes live.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from . import scratch
from .amplify import LambdaLane, LaneSettings, apply_lane, lambda_lane, window_bounds
from .errors import AudioInputError, ParameterError
from .grid import FRAME_PERIOD_S, HOP_SAMPLES, SAMPLE_RATE_HZ
from .loudness import SILENCE_LUFS, integrated_lufs
from .masking import MaskingField, masking_field
from .metering import (
    as_rows,
    coverage,
    lane_motion,
    masked_counts,
    nmr_db,
    sample_peak_dbfs,
    true_peak_dbtp,
)
from .request import PEAK_MODES, RenderRequest
from .result import (
    LIMITS,
    SHORTFALL_PREFIX,
    BlendSummary,
    BusTrim,
    LaneMotion,
    RenderedLevels,
    Shortfall,
)
from .scratch import ArrayStore, BlockArray

PEAK_CEILING_DBFS = -1.0
"""Highest sample peak the gained music is planned to reach with ``peak_mode="lane"``,
dBFS; with ``"bus-trim"``, the true peak (dBTP) the bus trim brings the mix to."""
OUTPUT_TOLERANCE_LU = 0.05
"""The rendered stem is trimmed when its loudness exceeds the ceiling by more than this."""
SHORTFALL_TOLERANCE = 0.005
"""A window falls short when its coverage is under its target by more than this (0..1)."""


@dataclass(frozen=True)
class BlendSettings:
    """Stage 2's controls: the request's fields as Stage 2 reads them, plus the peak
    ceiling. No defaults here (the request holds them): :meth:`from_request` builds it.

    Attributes:
        threshold_model: ``"smr"`` or ``"spreading"``.
        smr_db: the smr model's signal-to-mask ratio, dB.
        max_loudness_lu: the music at most this many LU over the noise (None: no ceiling).
        peak_ceiling_dbfs: highest planned sample peak of the gained music (``lane``), or
            the mix's true peak after the bus trim (``bus-trim``), dB.
        lane: the lane's objective, limits and shaping.
        peak_mode: ``"bus-trim"`` or ``"lane"`` (see the module docstring).
    """

    threshold_model: str
    smr_db: float
    max_loudness_lu: float | None
    peak_ceiling_dbfs: float
    lane: LaneSettings
    peak_mode: str = "lane"

    def __post_init__(self) -> None:
        if self.peak_mode not in PEAK_MODES:
            raise ParameterError(f"peak_mode must be one of {PEAK_MODES}, got {self.peak_mode!r}")

    @classmethod
    def from_request(
        cls, req: RenderRequest, *, peak_ceiling_dbfs: float = PEAK_CEILING_DBFS
    ) -> BlendSettings:
        """The settings ``req`` asks for; the peak ceiling is :data:`PEAK_CEILING_DBFS`
        unless given (dBFS)."""
        return cls(
            threshold_model=req.threshold_model,
            smr_db=req.smr_db,
            max_loudness_lu=req.max_loudness_lu,
            peak_ceiling_dbfs=peak_ceiling_dbfs,
            lane=LaneSettings.from_request(req),
            peak_mode=req.peak_mode,
        )


@dataclass(frozen=True)
class FrameCaps:
    """Upper bounds on the lane per 10 ms frame, dB on the unity music, by cause.

    Attributes:
        loudness_db: float64 ``(frames,)`` from the loudness ceiling (inf: none).
        peak_db: float64 ``(frames,)`` from the peak limit (inf: silent music there, or
            ``peak_mode="bus-trim"``: no peak limit in the lane).
    """

    loudness_db: np.ndarray
    peak_db: np.ndarray

    @property
    def combined_db(self) -> np.ndarray:
        return np.minimum(self.loudness_db, self.peak_db)


@dataclass(frozen=True)
class Blend:
    """Stage 2's result: the lane, its metering and what the caps cost.

    Attributes:
        lane: the lambda lane (see :class:`~bnmusic_bridge.amplify.LambdaLane`).
        field: the masking field the lane was solved on.
        caps: the frame caps (loudness ceiling, peak limit).
        coverage: overall share (0..1) of mask bins masked under the lane.
        coverage_per_frame: float64 ``(frames,)``, NaN where a frame has no mask bin.
        nmr_db: total noise-to-mask ratio, dB.
        nmr_per_frame_db: float64 ``(frames,)``.
        shortfalls: windows kept from their target by a limit.
        warnings: human-readable notes (lane clamps, shortfalls by cause, trims).
        settings: the controls used.
        noise_lufs: the noise's integrated loudness in the output's layout, LUFS.
        noise_mel: the noise's mel (kept for re-metering after a trim).
        mask: the high-energy mask (the same).
        trim_db: the trim :func:`finish_blend` applied to the whole lane (0 or negative), dB.
        rendered: loudness and peak of the rendered gained stem (after
            :func:`finish_blend`; None before).
        bus_trim: the trim for the noise + music mix (after :func:`finish_blend`; None
            before).
        motion: how the lane moves (:func:`~bnmusic_bridge.metering.lane_motion`).
    """

    lane: LambdaLane
    field: MaskingField
    caps: FrameCaps
    coverage: float
    coverage_per_frame: np.ndarray
    nmr_db: float
    nmr_per_frame_db: np.ndarray
    shortfalls: tuple[Shortfall, ...]
    warnings: tuple[str, ...]
    settings: BlendSettings
    noise_lufs: float
    noise_mel: BlockArray
    mask: BlockArray
    trim_db: float
    rendered: RenderedLevels | None
    bus_trim: BusTrim | None = None
    motion: LaneMotion | None = None

    def summary(self) -> BlendSummary:
        """The controls and the outcome in brief (``RenderResult.details.blend``)."""
        s, lane = self.settings, self.settings.lane
        return BlendSummary(
            objective=lane.objective,
            threshold_model=s.threshold_model,
            target_coverage=lane.target_coverage if lane.objective == "coverage" else None,
            max_loudness_lu=s.max_loudness_lu,
            peak_ceiling_dbfs=s.peak_ceiling_dbfs,
            smoothing_s=lane.smoothing_s,
            max_slew_db_per_s=lane.max_slew_db_per_s,
            coverage=self.coverage,
            noise_lufs_output_layout=self.noise_lufs,
            trim_db=self.trim_db,
            windows=int(self.lane.window_times_s.size),
            windows_short=len(self.shortfalls),
            rendered=self.rendered,
            peak_mode=s.peak_mode,
            bus_trim=self.bus_trim,
            motion=self.motion,
        )


def _audio_rows(music: BlockArray) -> BlockArray:
    """``music`` as a 2-D ``(channels, samples)`` block array (1-D: one channel)."""
    if len(music.shape) not in (1, 2):
        raise AudioInputError(f"audio must be (channels, samples), got shape {music.shape}")
    return as_rows(music)


def loudness_caps_db(
    music: BlockArray,
    noise_lufs: float,
    max_loudness_lu: float | None,
    bounds: list[tuple[int, int]],
    num_frames: int,
) -> np.ndarray:
    """Per-frame gain caps that keep every lane window's music loudness at or under
    ``noise_lufs + max_loudness_lu``.

    Window ``w`` (frames ``[a, b)``, samples ``[a * 441, b * 441)`` at 44.1 kHz) allows
    ``noise_lufs + max_loudness_lu - L_w`` dB, with ``L_w`` the unity music's integrated
    loudness over the window; a frame takes the lowest cap of the windows holding it.

    Args:
        music: float ``(channels, samples)`` unity music at 44.1 kHz, in the output's
            channel layout (loudness depends on it); a block array, read window by window.
        noise_lufs: the noise's integrated loudness in the same layout, LUFS.
        max_loudness_lu: the ceiling, LU over the noise (None: no caps, all inf).
        bounds: the lane windows (:func:`~bnmusic_bridge.amplify.window_bounds`).
        num_frames: frames of the analysis grid.

    Returns:
        float64 ``(num_frames,)`` caps in dB; inf where no window caps a frame.
    """
    caps = np.full(num_frames, np.inf)
    if max_loudness_lu is None:
        return caps
    if not math.isfinite(max_loudness_lu):
        raise ParameterError(f"max_loudness_lu must be finite or None, got {max_loudness_lu}")
    if not math.isfinite(noise_lufs):
        raise ParameterError(f"noise_lufs must be finite, got {noise_lufs}")
    audio = _audio_rows(music)  # each window is taken to float64 by the meter
    for a, b in bounds:
        seg = audio[:, a * HOP_SAMPLES : b * HOP_SAMPLES]
        level = integrated_lufs(seg, SAMPLE_RATE_HZ) if seg.size else SILENCE_LUFS
        if level <= SILENCE_LUFS:
            continue
        cap = noise_lufs + max_loudness_lu - level
        caps[a:b] = np.minimum(caps[a:b], cap)
    return caps


def peak_caps_db(music: BlockArray, num_frames: int, peak_ceiling_dbfs: float) -> np.ndarray:
    """Per-frame gain caps that keep the gained music's sample peak at or under
    ``peak_ceiling_dbfs``.

    Frame ``j``'s cap is ``peak_ceiling_dbfs - 20 log10(peak_j)`` with ``peak_j`` the
    largest ``|x|`` over samples ``[(j - 1) * 441, (j + 1) * 441)`` (all channels).
    Between frames ``j`` and ``j + 1`` the lane (linear in dB) never exceeds the larger
    of the two, and both frames' spans hold those samples: so the per-sample gain times
    the music never crosses the ceiling at 44.1 kHz.

    Args:
        music: float ``(channels, samples)`` unity music at 44.1 kHz, output layout; a
            block array, read a few thousand hops at a time.
        num_frames: frames of the analysis grid.
        peak_ceiling_dbfs: the ceiling, dBFS.

    Returns:
        float64 ``(num_frames,)`` caps in dB; inf where the music is silent.
    """
    if not math.isfinite(peak_ceiling_dbfs):
        raise ParameterError(f"peak_ceiling_dbfs must be finite, got {peak_ceiling_dbfs}")
    audio = _audio_rows(music)
    blocks = num_frames + 1
    block_peak = np.zeros(blocks)
    # a few thousand hops at a time (no whole-stem float64 copy); past the end: silence
    step = 4096
    for k0 in range(0, blocks, step):
        k1 = min(k0 + step, blocks)
        part = np.zeros((k1 - k0) * HOP_SAMPLES)
        lo, hi = k0 * HOP_SAMPLES, min(k1 * HOP_SAMPLES, audio.shape[1])
        if hi > lo:
            part[: hi - lo] = np.abs(audio[:, lo:hi].astype(np.float64)).max(axis=0)
        block_peak[k0:k1] = part.reshape(k1 - k0, HOP_SAMPLES).max(axis=1)
    frame_peak = block_peak[:num_frames].copy()
    frame_peak[1:] = np.maximum(frame_peak[1:], block_peak[: num_frames - 1])
    with np.errstate(divide="ignore"):
        return peak_ceiling_dbfs - 20.0 * np.log10(frame_peak)


def plan_blend(
    noise_mel: BlockArray,
    music_mel: BlockArray,
    mask: BlockArray,
    music: BlockArray,
    noise_lufs: float,
    settings: BlendSettings,
    progress: Callable[[float], None] | None = None,
    *,
    store: ArrayStore | None = None,
) -> Blend:
    """Stage 2: masking field, frame caps, lambda lane, metering and shortfalls.

    Args:
        noise_mel: float ``(n_mels, frames)`` linear mel magnitude of the noise.
        music_mel: same shape, the unity music (loudness-matched to the noise).
        mask: bool ``(n_mels, frames)`` high-energy mask.
        music: float ``(channels, samples)`` the same unity music as audio at 44.1 kHz,
            in the output's channel layout (for the loudness and peak caps).
        noise_lufs: the noise's integrated loudness in that layout, LUFS.
        settings: the controls.
        progress: called with the share done (0..1) between the steps (a cancel raised
            from it stops Stage 2 there).
        store: where the masking field's whole-stem arrays live (None: numpy arrays).

    The whole-stem inputs are block arrays (numpy or
    :class:`~bnmusic_bridge.scratch.DiskArray`), read by time slices only; the blend
    keeps ``noise_mel`` and ``mask`` as they are given (for re-metering after a trim).
    """

    def step(fraction: float) -> None:
        if progress is not None:
            progress(fraction)

    field = masking_field(
        settings.threshold_model,
        noise_mel,
        music_mel,
        smr_db=settings.smr_db,
        store=store,
        progress=lambda f: step(0.35 * f),
    )
    step(0.35)
    num_frames = field.num_frames
    bounds = window_bounds(num_frames, settings.lane.window_frames, settings.lane.hop_frames)
    caps = FrameCaps(
        loudness_db=loudness_caps_db(
            music, noise_lufs, settings.max_loudness_lu, bounds, num_frames
        ),
        peak_db=peak_caps_db(music, num_frames, settings.peak_ceiling_dbfs)
        if settings.peak_mode == "lane"
        else np.full(num_frames, np.inf),
    )
    step(0.5)
    lane = lambda_lane(music_mel, field, mask, settings.lane, frame_cap_db=caps.combined_db)
    step(0.8)
    return _metered(
        field=field,
        caps=caps,
        lane=lane,
        settings=settings,
        noise_lufs=float(noise_lufs),
        noise_mel=noise_mel,
        mask=mask,
        trim_db=0.0,
        rendered=None,
        notes=(),
    )


def _metered(
    *,
    field: MaskingField,
    caps: FrameCaps,
    lane: LambdaLane,
    settings: BlendSettings,
    noise_lufs: float,
    noise_mel: BlockArray,
    mask: BlockArray,
    trim_db: float,
    rendered: RenderedLevels | None,
    notes: tuple[str, ...],
) -> Blend:
    gain = np.power(10.0, lane.frame_gain_db / 20.0)
    overall, per_frame = coverage(field, mask, gain)
    nmr_total, nmr_frames = nmr_db(noise_mel, field, gain)
    bounds = window_bounds(field.num_frames, settings.lane.window_frames, settings.lane.hop_frames)
    # per-frame counts (metered in blocks of frames), summed per window: the same
    # integers as counting each window's bins, without a whole-stem bool array
    hit, bins = masked_counts(field, mask, gain)
    reached = np.array(
        [int(hit[a:b].sum()) / m if (m := int(bins[a:b].sum())) else np.nan for a, b in bounds]
    )
    lane = replace(lane, window_coverage=reached)
    shortfalls = find_shortfalls(lane, caps, bounds)
    return Blend(
        lane=lane,
        field=field,
        caps=caps,
        coverage=float(overall),
        coverage_per_frame=np.asarray(per_frame, dtype=np.float64),
        nmr_db=float(nmr_total),
        nmr_per_frame_db=np.asarray(nmr_frames, dtype=np.float64),
        shortfalls=shortfalls,
        warnings=tuple(lane.warnings)
        + _shortfall_warnings(shortfalls, settings, len(bounds))
        + notes,
        settings=settings,
        noise_lufs=noise_lufs,
        noise_mel=noise_mel,
        mask=mask,
        trim_db=trim_db,
        rendered=rendered,
        motion=lane_motion(lane.frame_gain_db, FRAME_PERIOD_S, settings.lane.max_slew_db_per_s),
    )


def find_shortfalls(
    lane: LambdaLane, caps: FrameCaps, bounds: list[tuple[int, int]]
) -> tuple[Shortfall, ...]:
    """The windows whose coverage under ``lane`` is short of their target, with the
    limit that held each one back (the tightest of loudness ceiling, peak limit and
    ``max_gain_db`` under the gain the window needed; "unmaskable" when no gain
    reaches the target; "smoothing" when no limit is under the needed gain)."""
    out = []
    for i, (a, b) in enumerate(bounds):
        target = float(lane.window_target[i])
        reached = float(lane.window_coverage[i])
        if not (np.isfinite(target) and np.isfinite(reached)):
            continue
        if reached >= target - SHORTFALL_TOLERANCE:
            continue
        needed = float(lane.window_gain_db[i])
        limits = {
            "loudness ceiling": float(caps.loudness_db[a:b].min()),
            "peak limit": float(caps.peak_db[a:b].min()),
            "max_gain_db": lane.max_gain_db,
        }
        name, value = min(limits.items(), key=lambda kv: kv[1])
        if needed == math.inf:
            name = "unmaskable"
        elif value >= needed:
            name = "smoothing"
        if lane.objective == "paper" and name == "smoothing":
            continue  # the paper's optimum, smoothed: no cap stopped it
        out.append(
            Shortfall(
                window=i,
                start_s=a * FRAME_PERIOD_S,
                end_s=b * FRAME_PERIOD_S,
                target=target,
                reached=reached,
                needed_gain_db=needed if math.isfinite(needed) else None,
                capped_gain_db=value,
                lane_gain_db=float(np.mean(lane.frame_gain_db[a:b])),
                limited_by=name,
            )
        )
    return tuple(out)


def shortfall_line(
    shortfalls: tuple[Shortfall, ...], settings: BlendSettings, num_windows: int
) -> str | None:
    """One line in the producer's terms: how many windows fell short, how many LU over
    the noise masking them would need, and what capped the music (the loudness ceiling,
    the peak limit, the gain limit). None when nothing fell short.

    The unity music is loudness-matched to the noise, so a gain in dB on it is the
    music's loudness in LU over the noise's.
    """
    if not shortfalls:
        return None
    worst = min(shortfalls, key=lambda s: s.reached - s.target)
    if settings.lane.objective == "paper":
        goal = "less than the paper objective's optimum would"
    else:
        goal = f"less than the {worst.target * 100:.0f} % target"
    ceiling = settings.max_loudness_lu
    what = {
        "loudness ceiling": f"the {ceiling if ceiling is not None else 0:+g} LU loudness ceiling "
        "(--max-loudness-lu)",
        "peak limit": f"the {settings.peak_ceiling_dbfs:g} dBFS peak limit (--peak-mode lane)",
        "max_gain_db": f"the {settings.lane.max_gain_db:+g} dB gain limit (--max-gain-db)",
        "unmaskable": "noise no music level masks (no music energy near it)",
        "smoothing": "the lane's smoothing and slew limit",
    }
    counts = {name: sum(s.limited_by == name for s in shortfalls) for name in LIMITS}
    causes = [name for name in LIMITS if counts[name]]
    if len(causes) == 1:
        capped = what[causes[0]]
    else:
        capped = ", ".join(f"{what[name]} in {counts[name]}" for name in causes)
    one = len(shortfalls) == 1
    needed = [s.needed_gain_db for s in shortfalls if s.needed_gain_db is not None]
    need = (
        f"masking {'it' if one else 'them'} needs the music "
        f"{'' if len(needed) == 1 else 'up to '}{max(needed):+.1f} LU over the noise; "
        if needed
        else ""
    )
    windows = "window masks" if one else "windows mask"
    return (
        f"{SHORTFALL_PREFIX}{len(shortfalls)} of {num_windows} {windows} {goal} "
        f"(worst {worst.reached * 100:.0f} % at {worst.start_s:.1f}-{worst.end_s:.1f} s); "
        f"{need}capped by {capped} (report: details.shortfall)"
    )


def _shortfall_warnings(
    shortfalls: tuple[Shortfall, ...], settings: BlendSettings, num_windows: int
) -> tuple[str, ...]:
    line = shortfall_line(shortfalls, settings, num_windows)
    return () if line is None else (line,)


def finish_blend(
    blend: Blend,
    music: BlockArray,
    sample_rate_hz: int,
    noise: BlockArray | None = None,
    *,
    store: ArrayStore | None = None,
) -> tuple[np.ndarray | BlockArray, Blend]:
    """Apply the lane to the rendered music, check the promises on that very stem, and
    measure the bus trim for the mix.

    Measures the gained stem's integrated loudness against the noise's (``blend.noise_lufs``,
    measured by the caller on the noise stem in the same layout and rate) and its sample
    peak. If the loudness exceeds the ceiling by more than :data:`OUTPUT_TOLERANCE_LU`,
    or (``peak_mode="lane"`` only) the peak exceeds 0 dBFS (the lane's planning is on the
    44.1 kHz music; resampling and loudness gating can move both a little), the whole
    lane is trimmed by the excess, metering is redone, and a warning says so. Then the
    mix, ``noise + gained``, is metered (true peak) and the
    :class:`~bnmusic_bridge.result.BusTrim` that brings it to
    :data:`PEAK_CEILING_DBFS` dBTP is recorded (0 dB when it is already there).

    The gained stem is exactly ``music * lane_gain_at(lane)`` (float32, sample by
    sample) for the final lane, trimmed or not: what a DAW plays from the exported lane.

    Args:
        blend: the planned blend (:func:`plan_blend`).
        music: float ``(channels, samples)`` unity music at ``sample_rate_hz``, the
            output's layout and length; a block array (numpy or
            :class:`~bnmusic_bridge.scratch.DiskArray`), read block by block.
        sample_rate_hz: their sample rate, Hz.
        noise: float ``(channels, samples)`` the noise stem, same rate, layout and length
            (the bus trim meters noise + music; None: the music alone, with a note); a
            block array too.
        store: where the gained stem lives (None: a numpy array); after a trim it is
            rewritten in place.

    Returns:
        ``(music_gained, blend)``: float32 ``(channels, samples)`` (an array of
        ``store``) and the blend with ``rendered`` and ``bus_trim`` filled in (and the
        trim, if one was needed).
    """
    shape = tuple(music.shape)
    if len(shape) != 2:
        raise AudioInputError(f"music must be (channels, samples), got shape {shape}")
    noise_arr = None
    if noise is not None:
        noise_shape = tuple(noise.shape)
        if len(noise_shape) in (1, 2):
            # float32 block by block, as the whole noise was taken to float32
            noise_arr = as_rows(noise, np.float32)
            noise_shape = tuple(noise_arr.shape)
        if noise_shape != shape:
            raise AudioInputError(
                f"noise has shape {noise_shape}, the music {shape}: the bus trim "
                "needs both in the output's layout and length"
            )
    lane = blend.lane
    gained = apply_lane(music, sample_rate_hz, lane, store=store)
    noise_lufs = blend.noise_lufs
    music_lufs, peak = _levels(gained, sample_rate_hz)
    ceiling = blend.settings.max_loudness_lu
    trim = 0.0
    notes: list[str] = []
    if ceiling is not None and music_lufs - noise_lufs > ceiling + OUTPUT_TOLERANCE_LU:
        trim = ceiling - (music_lufs - noise_lufs)
        notes.append(
            f"the rendered music measured {music_lufs - noise_lufs:+.2f} LU over the noise, "
            f"over the ceiling max_loudness_lu={ceiling:g}: the whole lane was trimmed by "
            f"{trim:+.2f} dB."
        )
    lane_limits_peaks = blend.settings.peak_mode == "lane"
    if lane_limits_peaks and peak > 0.0 and 20.0 * math.log10(peak) + trim > 0.0:
        peak_trim = blend.settings.peak_ceiling_dbfs - 20.0 * math.log10(peak)
        notes.append(
            f"the rendered music would peak at {20.0 * math.log10(peak) + trim:+.2f} dBFS: the "
            f"whole lane was trimmed by {min(trim, peak_trim):+.2f} dB so it peaks at "
            f"{blend.settings.peak_ceiling_dbfs:g} dBFS instead of clipping."
        )
        trim = min(trim, peak_trim)
    if trim < 0.0:
        lane = lane.shifted(trim)
        # the stem is the unity music times the final lane, not a trimmed copy of the
        # first product (which would differ by rounding); it takes the first one's place
        gained = apply_lane(music, sample_rate_hz, lane, out=gained)
        music_lufs, peak = _levels(gained, sample_rate_hz)
    rendered = RenderedLevels(
        music_lufs_output=music_lufs,
        noise_lufs_output=noise_lufs,
        music_minus_noise_lu=music_lufs - noise_lufs,
        peak_dbfs=20.0 * math.log10(peak) if peak > 0.0 else SILENCE_LUFS,
    )
    bus = bus_trim(gained, noise_arr, sample_rate_hz, blend.settings)
    if noise_arr is None:
        notes.append("no noise stem was given: the bus trim meters the music alone.")
    if bus.trim_db < 0.0:
        notes.append(
            f"noise + music would peak at {bus.mix_true_peak_dbtp:+.1f} dBTP: pull the bus "
            f"carrying both (or both faders alike) down by {-bus.trim_db:.1f} dB "
            f"(bus trim {bus.trim_db:+.1f} dB) to stay under {bus.ceiling_dbtp:g} dBTP without "
            "changing the blend"
            + (
                "; the blended music stem itself peaks over full scale "
                f"({bus.music_peak_dbfs:+.1f} dBFS): keep it in 32-bit float."
                if bus.music_peak_dbfs > 0.0
                else "."
            )
        )
    if trim == 0.0:
        done = replace(blend, rendered=rendered, bus_trim=bus)
        if notes:
            done = replace(done, warnings=blend.warnings + tuple(notes))
        return gained, done
    done = _metered(
        field=blend.field,
        caps=blend.caps,
        lane=replace(lane, warnings=blend.lane.warnings),
        settings=blend.settings,
        noise_lufs=noise_lufs,
        noise_mel=blend.noise_mel,
        mask=blend.mask,
        trim_db=blend.trim_db + trim,
        rendered=rendered,
        notes=tuple(notes),
    )
    return gained, replace(done, bus_trim=bus)


def _levels(gained: BlockArray, sample_rate_hz: int) -> tuple[float, float]:
    """The gained stem's integrated loudness (LUFS; :data:`SILENCE_LUFS` when it is all
    zeros) and sample peak (linear ``max |x|``, NaN if any sample is; 0 when empty),
    the peak metered block by block."""
    maxima: list[float] = []
    nonzero = False
    for a, b in scratch.blocks(gained.shape[1], scratch.BLOCK_SAMPLES):
        part = gained[:, a:b]
        if part.size:
            maxima.append(float(np.max(np.abs(part))))
            nonzero = nonzero or bool(np.any(part))
    music_lufs = integrated_lufs(gained, sample_rate_hz) if nonzero else SILENCE_LUFS
    # np.max of the block maxima: a NaN comes through as the whole array's max gives it
    return music_lufs, float(np.max(maxima)) if maxima else 0.0


def bus_trim(
    music_gained: BlockArray,
    noise: BlockArray | None,
    sample_rate_hz: int,
    settings: BlendSettings,
) -> BusTrim:
    """The trim that brings ``noise + music_gained`` to ``settings.peak_ceiling_dbfs``
    dB true peak (0 dB when the mix is already there).

    Applied to both stems alike (one bus, or both faders), it keeps their balance, so
    the blend (the music's level relative to the noise) is unchanged; the true peak
    covers the overshoot between samples that a DAW's resampling or a converter shows.

    Args:
        music_gained: float ``(channels, samples)`` the blended music.
        noise: the noise stem in the same layout, rate and length (None: silence).
        sample_rate_hz: their rate, Hz.
        settings: the blend's settings (ceiling and peak mode).
    """
    # the mix (noise + music in float64) is metered block by block, never copied whole
    mix_tp = true_peak_dbtp(music_gained, sample_rate_hz, plus=noise)
    trim = min(0.0, settings.peak_ceiling_dbfs - mix_tp) if math.isfinite(mix_tp) else 0.0
    return BusTrim(
        trim_db=trim,
        ceiling_dbtp=settings.peak_ceiling_dbfs,
        mix_true_peak_dbtp=mix_tp,
        mix_peak_dbfs=sample_peak_dbfs(music_gained, plus=noise),
        music_peak_dbfs=sample_peak_dbfs(music_gained),
        noise_peak_dbfs=sample_peak_dbfs(noise) if noise is not None else -math.inf,
        peak_mode=settings.peak_mode,
    )
