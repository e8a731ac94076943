"""Adaptive amplification: the paper's gain lambda and a smoothed lambda lane (Stage 2).

Arrays are on the analysis grid of the whole stem: float ``(n_mels=512, frames)`` linear
mel magnitude, mel orientation (row 0 = lowest band), one frame per 10 ms (frame ``j``
centred on sample ``j * 441`` at 44.1 kHz). The music is at *unity gain*: the pipeline has
loudness-matched it to the noise (same integrated LUFS), so a gain in dB is the music's
level relative to the noise's loudness. Gains are LINEAR amplitude factors unless the
name says ``_db`` (``20 log10`` of the linear gain).

The paper's objective (alpha the volume weight, ``RenderRequest.alpha``; M the
high-energy mask)::

    loss(g) = SUM(alpha * g * S_music) + SUM(max((required - g * capacity) * M, 0))

With the ``smr`` field (``required = noise * 10**(smr_db/20)``, ``capacity = music``) this is
exactly the paper's ``SUM(alpha S') + SUM(max((T_mask - S') M, 0))`` with ``S' = g S``.
It is convex and piecewise linear in ``g``; :func:`solve_lambda_exact` finds its minimiser
by sorting the breakpoints ``required / capacity``; :func:`solve_lambda_gd` is the
paper's gradient descent, kept as the reference.

A second objective (ours), ``coverage``: per window, the lowest gain that masks a target
share of the window's mask bins (:func:`solve_gain_for_coverage`). :func:`lambda_lane`
solves either per window, then smooths, slew-limits and caps the lane (frame caps come
from :mod:`bnmusic_bridge.blend`: loudness ceiling and, when asked, peak limit) and holds
it steady: caps act like a look-ahead limiter (ramp down ahead of the event, hold, release;
:func:`hold_envelope_db`) and no turn of the lane follows the previous one by less than
the hold, :data:`LANE_HOLD_S` (:func:`steady_lane_db`). :class:`LaneSettings` carries the
request's Stage 2 fields it needs.

Policy (ours): the literal loss picks ``g = 0`` (silence) whenever raising the music
costs more (alpha x its total magnitude) than it gains inside M, which happens for music
not aligned with the noise. :func:`lambda_lane` never mutes silently: such windows are
clamped to ``min_gain_db``, flagged, and described in ``LambdaLane.warnings``.

Whole-stem inputs (the music mel, the field's arrays, the mask, audio) are block arrays
(:mod:`bnmusic_bridge.scratch`: numpy or :class:`~bnmusic_bridge.scratch.DiskArray`),
read only by frame (or sample) slices: a window reads its own frames, whole-stem sums and
gathers go block by block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from dataclasses import field as dc_field
from typing import Any

import numpy as np

from . import scratch
from .errors import AudioInputError, ParameterError
from .grid import FRAME_PERIOD_S
from .masking import MaskingField, masking_gain
from .request import OBJECTIVES, RenderRequest
from .scratch import ArrayStore, BlockArray

LANE_SOLVERS = ("exact", "gd")
"""Solvers of the paper objective: :func:`solve_lambda_exact` (used) and
:func:`solve_lambda_gd` (the paper's gradient descent, the reference)."""

LANE_HOLD_S = 2.0
"""Shortest time between two turns of the lane (a rise becoming a fall or back), s: about
a bar at 120 BPM, as a mix engineer rides a fader. Caps are held at least this long
(:func:`hold_envelope_db`) and shorter bumps and dips are levelled
(:func:`steady_lane_db`)."""

_GD_ZERO_GAIN = 1e-9
"""Gradient descent on log-gain cannot reach 0; a result under this counts as silence."""


def _check_inputs(
    music_mel: BlockArray, field: MaskingField, mask: BlockArray, alpha: float
) -> tuple[BlockArray, BlockArray]:
    # shapes and dtypes only: the arrays may be scratch files, read by blocks later
    shape = tuple(music_mel.shape)
    if shape != tuple(field.required.shape):
        raise ParameterError(
            f"music_mel shape {shape} differs from the masking field's {field.required.shape}"
        )
    if tuple(mask.shape) != shape or mask.dtype != np.bool_:
        raise ParameterError(
            f"mask must be bool of shape {shape}, got {mask.dtype} of shape {mask.shape}"
        )
    if not (math.isfinite(alpha) and alpha >= 0.0):
        raise ParameterError(f"alpha must be finite and >= 0, got {alpha}")
    return music_mel, mask


def _frames(x: BlockArray, start: int, stop: int) -> np.ndarray:
    """Frames ``start..stop`` of a 2-D block array, laid out as that slice of a
    C-ordered numpy array is: a strided view unless it spans every frame.

    Why: numpy's float64 sum of a float32 array walks a strided view row by row and a
    contiguous one as a single run, and the two round differently; the paper loss sums
    the music, so a :class:`~bnmusic_bridge.scratch.DiskArray` (whose slices come back
    contiguous) must be summed in the numpy input's layout to give its bits.
    """
    if scratch.is_whole(x):
        return x[:, start:stop]
    part = x[:, start:stop]
    if stop - start >= x.shape[1] or part.shape[0] < 2:
        return part
    strided = np.empty((part.shape[0], stop - start + 1), dtype=part.dtype)[:, : stop - start]
    strided[...] = part
    return strided


def _mask_bins(field: MaskingField, mask: BlockArray) -> tuple[np.ndarray, np.ndarray]:
    """``required`` and ``capacity`` (float64 ``(bins,)``) of the mask bins, gathered
    frame block by frame block: in the order of ``x[mask]`` (band by band) within each
    block, so in exactly that order up to :data:`~bnmusic_bridge.scratch.BLOCK_FRAMES`
    frames (every lane window)."""
    reqs, caps = [np.zeros(0)], [np.zeros(0)]
    for a, b in scratch.blocks(field.num_frames, scratch.BLOCK_FRAMES):
        m = np.asarray(mask[:, a:b], dtype=bool)
        reqs.append(field.required[:, a:b][m].astype(np.float64))
        caps.append(field.capacity[:, a:b][m].astype(np.float64))
    return np.concatenate(reqs), np.concatenate(caps)


def _music_sum(music: BlockArray) -> float:
    """``SUM(S_music)`` in float64, frame block by frame block (one block, numpy's own
    sum of the array, up to :data:`~bnmusic_bridge.scratch.BLOCK_FRAMES` frames)."""
    total = 0.0
    for a, b in scratch.blocks(music.shape[1], scratch.BLOCK_FRAMES):
        total += float(np.sum(_frames(music, a, b), dtype=np.float64))
    return total


@dataclass(frozen=True)
class _LossTerms:
    """The loss reduced to what depends on the gain."""

    volume_slope: float  # alpha * SUM(S_music)
    constant: float  # SUM of required over mask bins that no gain can mask (capacity 0)
    breakpoints: np.ndarray  # required / capacity of maskable mask bins, float64, > 0
    weights: np.ndarray  # capacity of those bins, float64


def _loss_terms(
    music_mel: BlockArray, field: MaskingField, mask: BlockArray, alpha: float
) -> _LossTerms:
    music, m = _check_inputs(music_mel, field, mask, alpha)
    req, cap = _mask_bins(field, m)
    need = req > 0.0
    maskable = need & (cap > 0.0)
    return _LossTerms(
        volume_slope=alpha * _music_sum(music),
        constant=float(req[need & ~maskable].sum()),
        breakpoints=masking_gain(req[maskable], cap[maskable]),
        weights=cap[maskable],
    )


def paper_loss(
    gain: float,
    music_mel: BlockArray,
    field: MaskingField,
    mask: BlockArray,
    alpha: float,
) -> float:
    """The paper's loss at linear gain ``gain`` (see the module docstring).

    Args:
        gain: linear gain on the unity-gain music (>= 0).
        music_mel: float ``(n_mels, frames)`` linear mel magnitude of the music at unity.
        field: the masking field of the same shape.
        mask: bool ``(n_mels, frames)``, the high-energy mask M, mel orientation.
        alpha: volume weight (``RenderRequest.alpha``).

    Returns:
        the loss in linear mel-magnitude units (float).
    """
    music, m = _check_inputs(music_mel, field, mask, alpha)
    if not (math.isfinite(gain) and gain >= 0.0):
        raise ParameterError(f"gain must be finite and >= 0 (linear), got {gain}")
    volume = alpha * gain * _music_sum(music)
    req, cap = _mask_bins(field, m)
    shortfall = req - gain * cap
    return volume + float(np.maximum(shortfall, 0.0).sum())


def solve_lambda_exact(
    music_mel: BlockArray,
    field: MaskingField,
    mask: BlockArray,
    alpha: float,
    max_gain: float | None = None,
) -> float:
    """Exact minimiser of :func:`paper_loss` over ``gain >= 0`` (linear gain).

    The loss's slope between breakpoints ``b_i = required_i / capacity_i`` (mask bins
    with both > 0) is ``alpha SUM(S_music) - SUM(capacity_i for b_i > g)``, which only
    grows with ``g``; the minimiser is the first breakpoint after which the slope is
    >= 0, found by sorting the breakpoints (O(n log n), vectorised). Where the loss is
    flat over a range, the lowest gain of the range is returned (quietest music).

    Args:
        max_gain: optional upper bound on the gain (linear); the loss is convex, so the
            bounded minimiser is ``min(unbounded minimiser, max_gain)``.

    Returns:
        the linear gain; 0.0 when silence minimises the loss.
    """
    if max_gain is not None and not (math.isfinite(max_gain) and max_gain >= 0.0):
        raise ParameterError(f"max_gain must be finite and >= 0 (linear), got {max_gain}")
    terms = _loss_terms(music_mel, field, mask, alpha)
    gain = _minimiser(terms)
    return gain if max_gain is None else min(gain, float(max_gain))


_BUCKETS = 4096
"""Log-spaced buckets that narrow the breakpoint search before the one exact sort."""


def _first_feasible_sorted(
    b: np.ndarray, w: np.ndarray, volume_slope: float, above: float
) -> float:
    """Smallest breakpoint ``b_i`` with (weight of breakpoints > b_i) + above <= volume_slope."""
    order = np.argsort(b, kind="stable")
    b_sorted = b[order]
    # pull[i]: weight of breakpoints sorted after i (the slope still pulling the gain up
    # just above b_sorted[i]), plus the weight above this subset
    pull = np.cumsum(w[order][::-1])[::-1] - w[order] + above
    first = int(np.argmax(pull <= volume_slope))
    return float(b_sorted[first])


def _minimiser(terms: _LossTerms) -> float:
    b, w = terms.breakpoints, terms.weights
    if b.size == 0 or terms.volume_slope >= w.sum():
        return 0.0
    if b.size <= _BUCKETS:
        return _first_feasible_sorted(b, w, terms.volume_slope, 0.0)
    # O(n) narrowing: a histogram of the weights over log-spaced buckets finds the bucket
    # holding the minimiser; only that bucket is sorted.
    log_b = np.log(b)
    lo, hi = float(log_b.min()), float(log_b.max())
    if hi <= lo:
        return float(b[0])
    idx = np.minimum(((log_b - lo) * (_BUCKETS / (hi - lo))).astype(np.int64), _BUCKETS - 1)
    bucket_w = np.bincount(idx, weights=w, minlength=_BUCKETS)
    above = np.cumsum(bucket_w[::-1])[::-1] - bucket_w  # weight in buckets strictly above
    j = int(np.argmax(above <= terms.volume_slope))
    sel = idx == j
    return _first_feasible_sorted(b[sel], w[sel], terms.volume_slope, float(above[j]))


def solve_lambda_gd(
    music_mel: BlockArray,
    field: MaskingField,
    mask: BlockArray,
    alpha: float,
    steps: int = 3000,
    lr: float = 0.2,
    lr_final: float = 1e-5,
    init_gain: float = 1.0,
) -> float:
    """The paper's gradient descent on the loss, run on log-gain (numpy, Adam steps).

    The (sub)gradient of :func:`paper_loss` in ``g`` is ``alpha SUM(S_music) -
    SUM(capacity over mask bins still unmasked)``. The parameter is ``theta = ln g``
    (keeps the gain positive), moved by Adam steps driven by that subgradient (same sign
    as the one in ``theta``; Adam normalises the scale) with a learning rate decaying
    geometrically from ``lr`` to ``lr_final``, so it settles on the kink where the
    subgradient changes sign.

    Args:
        steps: number of descent steps.
        lr: first learning rate (in ln-gain per step).
        lr_final: last learning rate.
        init_gain: starting linear gain (unity = the loudness-matched music).

    Returns:
        the linear gain; 0.0 when the descent ran towards silence (gain < 1e-9), which is
        where the exact minimiser is 0.
    """
    if steps < 1:
        raise ParameterError(f"steps must be >= 1, got {steps}")
    if not (lr > 0.0 and lr_final > 0.0):
        raise ParameterError(f"lr and lr_final must be > 0, got {lr} and {lr_final}")
    if not (math.isfinite(init_gain) and init_gain > 0.0):
        raise ParameterError(f"init_gain must be finite and > 0, got {init_gain}")
    terms = _loss_terms(music_mel, field, mask, alpha)
    b, w = terms.breakpoints, terms.weights
    theta = math.log(init_gain)
    m1 = m2 = 0.0
    beta1, beta2, eps = 0.9, 0.999, 1e-12
    decay = (lr_final / lr) ** (1.0 / max(steps - 1, 1))
    rate = lr
    for t in range(1, steps + 1):
        g = math.exp(theta)
        # d loss / d g; the log-gain gradient is g times it (same sign). Adam normalises
        # the scale away, and this one does not vanish as the gain heads to silence.
        grad = terms.volume_slope - float(w[b > g].sum())
        m1 = beta1 * m1 + (1.0 - beta1) * grad
        m2 = beta2 * m2 + (1.0 - beta2) * grad * grad
        m1_hat = m1 / (1.0 - beta1**t)
        m2_hat = m2 / (1.0 - beta2**t)
        theta -= rate * m1_hat / (math.sqrt(m2_hat) + eps)
        theta = max(theta, math.log(_GD_ZERO_GAIN) - 1.0)
        rate *= decay
    gain = math.exp(theta)
    return 0.0 if gain < _GD_ZERO_GAIN else gain


def solve_gain_for_coverage(field: MaskingField, mask: BlockArray, target_coverage: float) -> float:
    """Lowest linear gain whose coverage of the mask reaches ``target_coverage`` (0..1).

    A well-posed alternative to the paper's loss: the ``target``-quantile of the mask
    bins' required gains (see :func:`bnmusic_bridge.metering.coverage`), gathered frame
    block by frame block (a quantile does not depend on their order).

    Returns:
        the linear gain; ``inf`` when the target needs bins the music cannot mask
        (capacity 0); 0.0 for an empty mask.
    """
    if not 0.0 <= target_coverage <= 1.0:
        raise ParameterError(f"target_coverage must be in 0..1, got {target_coverage}")
    if tuple(mask.shape) != tuple(field.required.shape):
        raise ParameterError(
            f"mask shape {tuple(mask.shape)} differs from the field's {field.required.shape}"
        )
    parts = [
        field.required_gain_block(a, b)[np.asarray(mask[:, a:b], dtype=bool)]
        for a, b in scratch.blocks(field.num_frames, scratch.BLOCK_FRAMES)
    ]
    gains = np.concatenate(parts) if parts else np.zeros(0)
    if gains.size == 0:
        return 0.0
    needed = math.ceil(target_coverage * gains.size - 1e-9)
    if needed <= 0:
        return 0.0
    return float(np.partition(gains, needed - 1)[needed - 1])


@dataclass(frozen=True)
class LambdaLane:
    """A time-varying gain lane for the music (ours; the paper uses one scalar per clip).

    Attributes:
        frame_times_s: float64 ``(frames,)``, time of each 10 ms analysis frame's centre,
            seconds from the stem's start.
        frame_gain_db: float64 ``(frames,)``, the smoothed, slew-limited, capped gain in
            dB (``20 log10`` of the linear gain), within ``[min_gain_db, max_gain_db]``
            except where a frame cap (loudness ceiling, peak) sits under ``min_gain_db``.
        window_times_s: float64 ``(windows,)``, centre time of each solve window, s.
        window_gain_db: float64 ``(windows,)``, each window's raw objective gain in dB
            before clamping and smoothing: the paper's optimum (``-inf`` where the loss
            chose silence), or the scalar gain that reaches the coverage target in that
            window (``inf`` where no gain can: bins the music cannot mask).
        window_clamped: bool ``(windows,)``, True where that gain lay outside
            ``[min_gain_db, max_gain_db]``.
        min_gain_db: lowest gain the lane may take, dB.
        max_gain_db: highest gain the lane may take, dB.
        warnings: human-readable notes on clamped windows (which, and why).
        objective: the objective that set the lane, ``"paper"`` or ``"coverage"``.
        window_start_s: float64 ``(windows,)``, first frame's time of each window, s.
        window_end_s: float64 ``(windows,)``, end of each window (last frame + 10 ms), s.
        window_target: float64 ``(windows,)``, the coverage (0..1) the objective aims at
            in each window: ``target_coverage``, or for ``paper`` the coverage at the
            window's optimum; NaN where the window has no mask bins.
        window_coverage: float64 ``(windows,)``, coverage (0..1) the final lane reaches in
            each window; NaN where the window has no mask bins.
    """

    frame_times_s: np.ndarray
    frame_gain_db: np.ndarray
    window_times_s: np.ndarray
    window_gain_db: np.ndarray
    window_clamped: np.ndarray
    min_gain_db: float
    max_gain_db: float
    warnings: tuple[str, ...]
    objective: str
    window_start_s: np.ndarray = dc_field(default_factory=lambda: np.zeros(0))
    window_end_s: np.ndarray = dc_field(default_factory=lambda: np.zeros(0))
    window_target: np.ndarray = dc_field(default_factory=lambda: np.zeros(0))
    window_coverage: np.ndarray = dc_field(default_factory=lambda: np.zeros(0))

    def shifted(self, offset_db: float) -> LambdaLane:
        """The same lane moved by ``offset_db`` dB everywhere (a trim). Window coverages
        are left as they were; the caller re-meters."""
        return replace(self, frame_gain_db=self.frame_gain_db + float(offset_db))


def _window_starts(num_frames: int, window_frames: int, hop_frames: int) -> list[int]:
    if num_frames <= window_frames:
        return [0]
    starts = list(range(0, num_frames - window_frames + 1, hop_frames))
    if starts[-1] + window_frames < num_frames:
        starts.append(num_frames - window_frames)
    return starts


def window_bounds(num_frames: int, window_frames: int, hop_frames: int) -> list[tuple[int, int]]:
    """The lane's solve windows as ``(start_frame, stop_frame)`` pairs (stop exclusive).

    Windows of ``window_frames`` frames every ``hop_frames``; the last one is aligned to
    the stem's end; one window (the whole stem) when it is shorter than a window.
    """
    if num_frames < 1 or window_frames < 1 or hop_frames < 1:
        raise ParameterError(
            f"need num_frames, window_frames, hop_frames >= 1, got {num_frames}, "
            f"{window_frames}, {hop_frames}"
        )
    return [
        (s, min(s + window_frames, num_frames))
        for s in _window_starts(num_frames, window_frames, hop_frames)
    ]


def _smooth_db(values_db: np.ndarray, smoothing_s: float) -> np.ndarray:
    """Zero-phase one-pole smoothing (forward then backward) with time constant ``smoothing_s``."""
    if smoothing_s <= 0.0 or values_db.size < 2:
        return values_db.copy()
    from scipy.signal import lfilter

    a = math.exp(-FRAME_PERIOD_S / smoothing_s)
    b_coef, a_coef = [1.0 - a], [1.0, -a]
    fwd = lfilter(b_coef, a_coef, values_db, zi=[a * values_db[0]])[0]
    back = lfilter(b_coef, a_coef, fwd[::-1], zi=[a * fwd[-1]])[0]
    return back[::-1]


def slew_envelope_db(
    values_db: np.ndarray, max_step_db: float, *, upper: bool = True
) -> np.ndarray:
    """The tightest curve whose frame-to-frame change is at most ``max_step_db`` dB.

    ``upper=True``: the lowest curve ``y >= values_db`` with ``|y[i+1] - y[i]| <=
    max_step_db`` (``y[i] = max_k(x[k] - max_step_db |i - k|)``): it only ever raises,
    so a slew limit never takes away masking the objective asked for. ``upper=False``:
    the highest such curve ``y <= values_db`` (for caps: it only ever lowers). Two
    vectorised running-maximum passes, O(n).

    Args:
        values_db: float ``(frames,)``, dB; ``-inf``/``inf`` entries are allowed.
        max_step_db: largest change between neighbouring frames, dB (> 0).

    Returns:
        float64 ``(frames,)``.
    """
    if not max_step_db > 0.0:
        raise ParameterError(f"max_step_db must be > 0, got {max_step_db}")
    x = np.asarray(values_db, dtype=np.float64)
    if not upper:
        return -slew_envelope_db(-x, max_step_db, upper=True)
    if x.size < 2:
        return x.copy()
    ramp = max_step_db * np.arange(x.size, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        fwd = np.maximum.accumulate(x + ramp) - ramp
        back = np.maximum.accumulate((fwd - ramp)[::-1])[::-1] + ramp
    # the ramps cancel up to rounding; never let rounding put the envelope under x, and
    # where it touches x, give x itself: a flat stretch stays exactly flat (rounding
    # ripples would read as tiny dips to the hold, :func:`hold_envelope_db`)
    out = np.maximum(back, x)
    with np.errstate(invalid="ignore"):
        tol = 16.0 * np.finfo(np.float64).eps * (np.abs(x) + ramp[-1] + max_step_db)
        touch = np.isfinite(x) & (np.abs(out - x) <= tol)
    out[touch] = x[touch]
    return out


def _padded(x: np.ndarray, pad: int) -> np.ndarray:
    """``x`` extended by ``pad`` copies of its first and last values: the lane is taken to
    hold its level before the stem starts and after it ends, so a stretch that runs into
    an end is as wide as it would be in a longer stem (a rise or fall from an end is no
    turn)."""
    return np.pad(x, pad, mode="edge")


def _min_filter(x: np.ndarray, half: int) -> np.ndarray:
    """Running minimum over ``[i - half, i + half]`` (edges: the nearest value)."""
    from scipy.ndimage import minimum_filter1d

    return minimum_filter1d(x, 2 * half + 1, mode="nearest")


def _max_filter(x: np.ndarray, half: int) -> np.ndarray:
    """Running maximum over ``[i - half, i + half]`` (edges: the nearest value)."""
    from scipy.ndimage import maximum_filter1d

    return maximum_filter1d(x, 2 * half + 1, mode="nearest")


def hold_envelope_db(caps_db: np.ndarray, hold_frames: int, max_step_db: float) -> np.ndarray:
    """The caps as a look-ahead limiter would follow them: under ``caps_db`` everywhere,
    each dip narrower than the hold held at its floor for ``hold_frames + 1`` frames
    around it, ramps down ahead of it and back up after it at most ``max_step_db`` per
    frame, and no rise between two dips shorter than the hold either.

    Steps, each O(n) on the frames:

    1. the slew-limited envelope under the caps (:func:`slew_envelope_db`,
       ``upper=False``);
    2. dips narrower than the hold found by a morphological closing over
       ``+-hold_frames // 2`` (it fills exactly those), and each one's floor spread
       over ``+-hold_frames // 2`` (a running minimum of the dips alone, so the edges of
       wide dips and steps stay where they are);
    3. the slew limit again (the look-ahead attack and the release ramps);
    4. a morphological opening over the same span: a rise between two holds that would
       not last the hold is left out.

    Every step only lowers, so the result never exceeds the caps; running minima and
    maxima of a slew-limited curve are slew-limited, so its slope stays within
    ``max_step_db``. Why: per-frame peak caps move with every transient; chasing them
    turned the lane of a 134 s stem into a pump (at the slew limit 83 % of the time,
    turning 4.5 times a second) and a one-frame gap between transients into a spike of
    one slew step (0.12 to 0.18 dB) that became an envelope point.

    Args:
        caps_db: float ``(frames,)`` upper bounds in dB (finite).
        hold_frames: how long a dip is held, frames (0: only the slew limit).
        max_step_db: largest change between neighbouring frames, dB (inf: no limit).

    Returns:
        float64 ``(frames,)``, at most ``caps_db`` everywhere.
    """
    x = np.asarray(caps_db, dtype=np.float64)
    finite_step = math.isfinite(max_step_db)
    if finite_step:
        x = slew_envelope_db(x, max_step_db, upper=False)
    half = hold_frames // 2
    if half < 1 or x.size < 2:
        return x
    pad = 4 * half
    y = _padded(x, pad)
    closed = _min_filter(_max_filter(y, half), half)
    dips = np.where(closed > y, y, np.inf)
    held = np.minimum(y, _min_filter(dips, half))
    if finite_step:
        held = slew_envelope_db(held, max_step_db, upper=False)
    opened = _max_filter(_min_filter(held, half), half)[pad:-pad]
    return np.minimum(opened, x)


def steady_lane_db(lane_db: np.ndarray, upper_db: np.ndarray, hold_frames: int) -> np.ndarray:
    """The lane without turns closer together than ``hold_frames`` frames.

    Dips narrower than the hold are filled (a morphological closing over
    ``+-hold_frames // 2``, kept under ``upper_db``: filling only ever adds masking and
    never passes a cap), then bumps narrower than the hold are levelled (an opening over
    the same span: it only ever lowers). Every local minimum and maximum of the result is
    then a flat stretch of at least ``hold_frames + 1`` frames, so a rise and the fall
    that follows it (or a fall and the next rise) start at least that far apart. Both
    operations take values of shifted copies, so the slope limit of the inputs is kept.

    Args:
        lane_db: float ``(frames,)`` the lane, dB.
        upper_db: float ``(frames,)`` what the lane may never exceed (the held caps,
            :func:`hold_envelope_db`; their own turns are already ``hold_frames`` apart).
        hold_frames: shortest time between turns, frames (0: the lane unchanged).

    Returns:
        float64 ``(frames,)``.
    """
    x = np.asarray(lane_db, dtype=np.float64)
    half = hold_frames // 2
    if half < 1 or x.size < 2:
        return x.copy()
    pad = 4 * half
    filled = np.minimum(
        _min_filter(_max_filter(_padded(x, pad), half), half),
        _padded(np.asarray(upper_db, dtype=np.float64), pad),
    )
    return _max_filter(_min_filter(filled, half), half)[pad:-pad]


def _describe(indices: list[int], bounds: list[tuple[int, int]]) -> str:
    parts = []
    for i in indices[:8]:
        t0 = bounds[i][0] * FRAME_PERIOD_S
        t1 = bounds[i][1] * FRAME_PERIOD_S
        parts.append(f"{i} ({t0:.2f}-{t1:.2f} s)")
    more = f" and {len(indices) - 8} more" if len(indices) > 8 else ""
    return ", ".join(parts) + more


@dataclass(frozen=True)
class _WindowBins:
    """The mask bins of one window: each bin's required gain in dB and its frame.

    ``gain_db`` is a view into the stem's one array of mask-bin gains
    (:func:`_window_bins`), so overlapping windows share their bins rather than copy
    them; the frames are spelled out only when asked for (:attr:`frame`). Bins come
    frame by frame (then band by band): the quantiles and counts taken of them do not
    depend on the order.
    """

    start: int
    stop: int
    gain_db: np.ndarray  # float64 (bins,), 20 log10 of the required linear gain
    counts: np.ndarray  # int64 (stop - start,), mask bins in each frame

    @property
    def frame(self) -> np.ndarray:
        """int64 ``(bins,)``: the absolute frame index of each bin."""
        return np.repeat(np.arange(self.start, self.stop), self.counts)


def _window_bins(
    field: MaskingField, mask: BlockArray, bounds: list[tuple[int, int]]
) -> list[_WindowBins]:
    """Each window's mask bins, from one pass over the stem in frame blocks.

    Memory: 8 bytes per mask bin of the stem, once (about 0.2 GB for an hour at the
    usual 14 % of bins in the mask); the windows (which overlap) hold views of it.
    """
    num_frames = field.num_frames
    counts = np.zeros(num_frames, dtype=np.int64)
    for a, b in scratch.blocks(num_frames, scratch.BLOCK_FRAMES):
        counts[a:b] = np.asarray(mask[:, a:b], dtype=bool).sum(axis=0)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    gain_db = np.empty(int(offsets[-1]))
    for a, b in scratch.blocks(num_frames, scratch.BLOCK_FRAMES):
        # transposed: the bins of a frame together, frame after frame
        m = np.asarray(mask[:, a:b], dtype=bool).T
        req = field.required[:, a:b].T[m].astype(np.float64)
        cap = field.capacity[:, a:b].T[m].astype(np.float64)
        gain = np.zeros(req.shape)
        need = req > 0.0
        ok = need & (cap > 0.0)
        gain[ok] = masking_gain(req[ok], cap[ok])
        gain[need & ~ok] = np.inf
        with np.errstate(divide="ignore"):
            gain_db[offsets[a] : offsets[b]] = 20.0 * np.log10(gain)
    return [
        _WindowBins(start, stop, gain_db[offsets[start] : offsets[stop]], counts[start:stop])
        for start, stop in bounds
    ]


def _quantile_offset_db(bins: _WindowBins, lane_db: np.ndarray, target: float) -> float:
    """dB to add to the lane over this window for its coverage to reach ``target``.

    A bin is masked iff lane_db[frame] >= its required gain in dB (the same test as
    :meth:`MaskingField.masked`, up to rounding in the dB conversion), so the offset is
    the ``target``-quantile of ``required_db - lane_db`` over the window's mask bins.
    Negative: the window is already over its target. ``inf``: unreachable.
    """
    n = bins.gain_db.size
    needed = math.ceil(target * n - 1e-9)
    if n == 0 or needed <= 0:
        return -np.inf
    diff = bins.gain_db - lane_db[bins.frame]
    # the k-th smallest value, whatever the bins' order
    return float(np.partition(diff, needed - 1)[needed - 1])


def _coverage_db(bins: _WindowBins, lane_db: np.ndarray) -> float:
    if bins.gain_db.size == 0:
        return float("nan")
    return float(np.mean(lane_db[bins.frame] >= bins.gain_db))


def frames_in(seconds: float) -> int:
    """Whole 10 ms analysis frames in ``seconds`` (at least one)."""
    return max(1, int(round(seconds / FRAME_PERIOD_S)))


@dataclass(frozen=True)
class LaneSettings:
    """How :func:`lambda_lane` solves and shapes a lane: the request's Stage 2 fields
    with the windows in frames. No defaults here (the request holds them):
    :meth:`from_request` builds it.

    Attributes:
        objective: ``"paper"`` or ``"coverage"`` (:data:`~bnmusic_bridge.request.OBJECTIVES`).
        alpha: the paper's loss's volume weight.
        target_coverage: share (0..1] of each window's mask bins the ``coverage``
            objective masks.
        window_frames: frames per solve window (10 ms each; 256 = 2.56 s).
        hop_frames: frames between window starts.
        min_gain_db: floor of the lane, dB (frame caps may go under it; they win).
        max_gain_db: ceiling of the lane, dB.
        smoothing_s: one-pole time constant in seconds (0 = no smoothing).
        max_slew_db_per_s: largest rate of change in dB per second (None: no limit).
        solver: the paper objective's solver, one of :data:`LANE_SOLVERS`.
        hold_frames: shortest time between two turns of the lane, and how long a cap
            is held, in frames (:func:`hold_envelope_db`, :func:`steady_lane_db`; 0: no
            hold). :meth:`from_request` gives :data:`LANE_HOLD_S`.

    Raises:
        ParameterError: a value out of range (checked on construction).
    """

    objective: str
    alpha: float
    target_coverage: float
    window_frames: int
    hop_frames: int
    min_gain_db: float
    max_gain_db: float
    smoothing_s: float
    max_slew_db_per_s: float | None
    solver: str = LANE_SOLVERS[0]
    hold_frames: int = 0

    @classmethod
    def from_request(cls, req: RenderRequest) -> LaneSettings:
        """The settings ``req`` asks for (lane window and hop rounded to whole frames)."""
        return cls(
            objective=req.objective,
            alpha=req.alpha,
            target_coverage=req.target_coverage,
            window_frames=frames_in(req.lane_window_s),
            hop_frames=frames_in(req.lane_hop_s),
            min_gain_db=req.min_gain_db,
            max_gain_db=req.max_gain_db,
            smoothing_s=req.smoothing_s,
            max_slew_db_per_s=req.max_slew_db_per_s,
            hold_frames=frames_in(LANE_HOLD_S),
        )

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ParameterError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.solver not in LANE_SOLVERS:
            raise ParameterError(f"solver must be one of {LANE_SOLVERS}, got {self.solver!r}")
        if not (math.isfinite(self.alpha) and self.alpha >= 0.0):
            raise ParameterError(f"alpha must be finite and >= 0, got {self.alpha}")
        if not 0.0 < self.target_coverage <= 1.0:
            raise ParameterError(f"target_coverage must be in (0, 1], got {self.target_coverage}")
        if self.window_frames < 1 or self.hop_frames < 1:
            raise ParameterError(
                f"window_frames and hop_frames must be >= 1, got {self.window_frames} and "
                f"{self.hop_frames}"
            )
        lo, hi = self.min_gain_db, self.max_gain_db
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
            raise ParameterError(f"need finite min_gain_db <= max_gain_db, got {lo} and {hi}")
        if not (math.isfinite(self.smoothing_s) and self.smoothing_s >= 0.0):
            raise ParameterError(f"smoothing_s must be finite and >= 0, got {self.smoothing_s}")
        slew = self.max_slew_db_per_s
        if slew is not None and not (math.isfinite(slew) and slew > 0.0):
            raise ParameterError(f"max_slew_db_per_s must be finite and > 0 (or None), got {slew}")
        if self.hold_frames < 0:
            raise ParameterError(f"hold_frames must be >= 0, got {self.hold_frames}")

    @property
    def step_db(self) -> float:
        """Largest change of the lane between neighbouring frames, dB (inf: no limit)."""
        if self.max_slew_db_per_s is None:
            return math.inf
        return self.max_slew_db_per_s * FRAME_PERIOD_S


@dataclass(frozen=True)
class _LaneGrid:
    """What one lane is built on: its frames, its solve windows and its caps."""

    frame_times: np.ndarray  # float64 (frames,), s
    bounds: list[tuple[int, int]]  # solve windows, (start, stop) frames
    centres: np.ndarray  # float64 (windows,), window centre times, s
    bins: list[_WindowBins]  # each window's mask bins
    cap_env: np.ndarray  # float64 (frames,), dB: frame caps and max_gain_db, slew-limited
    window_cap: np.ndarray  # float64 (windows,), dB: the highest cap_env in each window
    step_db: float  # largest change between frames, dB (inf: no limit)
    smoothing_s: float
    hold_frames: int  # shortest time between turns, frames (0: no hold)

    def shape(self, level_db: np.ndarray) -> np.ndarray:
        """Window levels (dB) to a lane on the frames: linear interpolation between the
        window centres (held flat at the ends), zero-phase smoothing, the slew limit
        (only ever raising), the held caps, then no turns closer than the hold."""
        curve = _smooth_db(np.interp(self.frame_times, self.centres, level_db), self.smoothing_s)
        if math.isfinite(self.step_db):
            curve = slew_envelope_db(curve, self.step_db, upper=True)
        return self.finish(curve)

    def finish(self, curve_db: np.ndarray) -> np.ndarray:
        """A slew-limited curve under the held caps, its turns at least the hold apart."""
        return steady_lane_db(np.minimum(curve_db, self.cap_env), self.cap_env, self.hold_frames)


def lambda_lane(
    music_mel: BlockArray,
    field: MaskingField,
    mask: BlockArray,
    settings: LaneSettings,
    frame_cap_db: np.ndarray | None = None,
) -> LambdaLane:
    """Solve an objective per window and turn the results into a smooth gain lane.

    Steps:

    1. check the inputs and the frame caps;
    2. windows of ``window_frames`` frames every ``hop_frames`` (:func:`window_bounds`),
       their mask bins, and the caps as a look-ahead limiter holds them
       (:func:`hold_envelope_db`: slew-limited, so capping keeps the slew limit, and each
       dip held for ``hold_frames``);
    3. each window's gain: ``objective="paper"``: the paper's optimum
       (:func:`solve_lambda_exact` or :func:`solve_lambda_gd`); ``"coverage"``: the
       lowest scalar gain whose coverage of the window's mask bins reaches
       ``target_coverage`` (:func:`solve_gain_for_coverage`);
    4. clamp to ``[min_gain_db, max_gain_db]`` and to the window's highest frame cap
       (silence is never applied: ``lambda* = 0`` becomes ``min_gain_db``);
    5. shape the lane: linear interpolation in dB between window centres (held flat at
       the ends), zero-phase one-pole smoothing with time constant ``smoothing_s``, the
       slew limit (the lowest curve above that whose change is at most
       ``max_slew_db_per_s``, :func:`slew_envelope_db`, so the limit raises neighbours
       rather than taking masking away), the minimum with the cap envelope, then no
       turn closer than ``hold_frames`` to the previous one (:func:`steady_lane_db`:
       short dips filled up to the caps, short bumps levelled);
    6. ``coverage`` only: windows whose coverage under the lane is still short of the
       target (smoothing lowered their peak) get their level raised by the missing dB
       and the lane is shaped again, until every window reaches its target or sits at a
       cap;
    7. the result: each window's target and reached coverage, and a warning for every
       clamped window (which, and why).

    The lane's slope is at most ``max_slew_db_per_s`` everywhere and it is continuous,
    so :func:`lane_gain_at` (linear in dB between frames) has no steps: no zipper noise;
    every local minimum and maximum is a flat stretch of at least ``hold_frames + 1``
    frames, so it turns at most once per hold.

    Args:
        music_mel: float ``(n_mels, frames)`` linear mel magnitude of the unity-gain music.
        field: masking field of the same shape.
        mask: bool ``(n_mels, frames)`` high-energy mask M.
        settings: objective, limits and shaping (:meth:`LaneSettings.from_request`).
        frame_cap_db: optional float ``(frames,)`` upper bound per frame in dB (a
            loudness ceiling, a peak limit; see :mod:`bnmusic_bridge.blend`);
            ``inf`` where a frame has none.
    """
    # 1. Check the inputs and the frame caps.
    music, m = _check_inputs(music_mel, field, mask, settings.alpha)
    caps = _checked_frame_caps(frame_cap_db, music.shape[1])
    # 2. Prepare the solve windows, their mask bins and the cap envelope.
    grid = _lane_grid(field, m, caps, settings)
    # 3. Solve the objective in every window.
    raw_db = _window_gains_db(music, field, m, grid.bounds, settings)
    # 4. Clamp each window's level to the gain limits and its cap.
    level_db = np.minimum(
        np.clip(raw_db, settings.min_gain_db, settings.max_gain_db), grid.window_cap
    )
    # 5. Shape the lane on the frames.
    frame_db = grid.shape(level_db)
    # 6. Coverage objective: raise the windows that smoothing left short.
    if settings.objective == "coverage":
        frame_db = _reach_targets(frame_db, level_db, grid, settings)
    # 7. Collect targets, reached coverage and warnings.
    return _lane_result(frame_db, raw_db, grid, settings)


def _checked_frame_caps(frame_cap_db: np.ndarray | None, num_frames: int) -> np.ndarray:
    """The frame caps as float64 ``(num_frames,)`` dB (all inf when None)."""
    if num_frames == 0:
        raise ParameterError("music_mel has no frames")
    if frame_cap_db is None:
        return np.full(num_frames, np.inf)
    caps = np.asarray(frame_cap_db, dtype=np.float64)
    if caps.shape != (num_frames,) or np.any(np.isnan(caps)):
        raise ParameterError(
            f"frame_cap_db must be float ({num_frames},) without NaN, got shape {caps.shape}"
        )
    return caps


def _lane_grid(
    field: MaskingField, mask: BlockArray, caps: np.ndarray, settings: LaneSettings
) -> _LaneGrid:
    num_frames = caps.size
    step_db = settings.step_db
    # the caps themselves must respect the slew limit, or capping would cut steps back
    # in; and they are held like a look-ahead limiter's gain, or the lane would chase
    # every transient of the music (a pump)
    cap_env = hold_envelope_db(
        np.minimum(caps, settings.max_gain_db), settings.hold_frames, step_db
    )
    bounds = window_bounds(num_frames, settings.window_frames, settings.hop_frames)
    return _LaneGrid(
        frame_times=np.arange(num_frames) * FRAME_PERIOD_S,
        bounds=bounds,
        centres=np.array([(a + b - 1) / 2.0 * FRAME_PERIOD_S for a, b in bounds]),
        bins=_window_bins(field, mask, bounds),
        cap_env=cap_env,
        window_cap=np.array([float(cap_env[a:b].max()) for a, b in bounds]),
        step_db=step_db,
        smoothing_s=settings.smoothing_s,
        hold_frames=settings.hold_frames,
    )


def _window_gains_db(
    music: BlockArray,
    field: MaskingField,
    mask: BlockArray,
    bounds: list[tuple[int, int]],
    settings: LaneSettings,
) -> np.ndarray:
    """Each window's raw objective gain in dB (-inf: silence, inf: out of reach); each
    window reads its own frames of the whole-stem arrays."""
    raw_db = np.empty(len(bounds))
    for i, (start, stop) in enumerate(bounds):
        cols = slice(start, stop)
        sub = MaskingField(
            field.required[:, cols], field.capacity[:, cols], field.model, field.margin_db
        )
        sub_mask = mask[:, cols]
        if settings.objective == "coverage":
            gain = solve_gain_for_coverage(sub, sub_mask, settings.target_coverage)
        elif settings.solver == "exact":
            gain = solve_lambda_exact(_frames(music, start, stop), sub, sub_mask, settings.alpha)
        else:
            gain = solve_lambda_gd(_frames(music, start, stop), sub, sub_mask, settings.alpha)
        raw_db[i] = 20.0 * math.log10(gain) if gain > 0.0 else -np.inf
    return raw_db


def _lane_result(
    frame_db: np.ndarray, raw_db: np.ndarray, grid: _LaneGrid, settings: LaneSettings
) -> LambdaLane:
    if settings.objective == "coverage":
        target = np.array(
            [settings.target_coverage if wb.gain_db.size else np.nan for wb in grid.bins]
        )
    else:
        num_frames = grid.frame_times.size
        target = np.array(
            [_coverage_db(wb, np.full(num_frames, raw_db[i])) for i, wb in enumerate(grid.bins)]
        )
    return LambdaLane(
        frame_times_s=grid.frame_times,
        frame_gain_db=frame_db,
        window_times_s=grid.centres,
        window_gain_db=raw_db,
        window_clamped=(raw_db < settings.min_gain_db) | (raw_db > settings.max_gain_db),
        min_gain_db=float(settings.min_gain_db),
        max_gain_db=float(settings.max_gain_db),
        warnings=tuple(_lane_warnings(raw_db, grid, settings)),
        objective=settings.objective,
        window_start_s=np.array([a * FRAME_PERIOD_S for a, _ in grid.bounds]),
        window_end_s=np.array([b * FRAME_PERIOD_S for _, b in grid.bounds]),
        window_target=target,
        window_coverage=np.array([_coverage_db(wb, frame_db) for wb in grid.bins]),
    )


_COVERAGE_ROUNDS = 8
_COVERAGE_NUDGE_DB = 0.01
"""Added to each raise, so rounding in the dB domain cannot leave a window one bin short."""
_MIN_SELF_RESPONSE = 0.05


def _self_response(
    bounds: list[tuple[int, int]], centres: np.ndarray, frame_times: np.ndarray, smoothing_s: float
) -> np.ndarray:
    """How much of a 1 dB raise of one window's level reaches its own frames (mean over
    them) through interpolation and smoothing: float64 ``(windows,)`` in (0, 1]."""
    n = frame_times.size
    span = int(10.0 * smoothing_s / FRAME_PERIOD_S) + 1
    out = np.empty(len(bounds))
    for w, (a, b) in enumerate(bounds):
        # the raise is zero outside the neighbouring centres; smoothing spreads it by
        # a few time constants: a local span is exact to float precision
        lo = max(0, a - span - (b - a))
        hi = min(n, b + span + (b - a))
        unit = np.zeros(centres.size)
        unit[w] = 1.0
        curve = _smooth_db(np.interp(frame_times[lo:hi], centres, unit), smoothing_s)
        out[w] = float(np.mean(curve[a - lo : b - lo]))
    return np.clip(out, _MIN_SELF_RESPONSE, 1.0)


def _reach_targets(
    frame_db: np.ndarray, level_db: np.ndarray, grid: _LaneGrid, settings: LaneSettings
) -> np.ndarray:
    """Raise the lane until every window reaches the target coverage or sits at its cap.

    Smoothing lowers a window's peak, so its coverage can fall short of the target its
    own gain reaches. 1. A few rounds raise each short window's level by the dB it
    misses (a quantile shift, exact for a uniform raise) divided by the share of a raise
    that smoothing lets through to its own frames. 2. Any window still short gets the
    rest as a flat raise over its frames, slew-limited (only ever raising), then capped:
    its coverage then reaches the target unless a cap cut the raise.
    """
    target = settings.target_coverage
    top_db = np.minimum(grid.window_cap, settings.max_gain_db)
    response = _self_response(grid.bounds, grid.centres, grid.frame_times, grid.smoothing_s)
    for _ in range(_COVERAGE_ROUNDS):
        offsets = np.array([_quantile_offset_db(wb, frame_db, target) for wb in grid.bins])
        short = (offsets > 0.0) & (level_db < top_db)
        if not short.any():
            break
        raise_db = np.where(short, offsets / response + _COVERAGE_NUDGE_DB, 0.0)
        level_db = np.minimum(level_db + raise_db, np.maximum(level_db, top_db))
        frame_db = grid.shape(level_db)
    offsets = np.array([_quantile_offset_db(wb, frame_db, target) for wb in grid.bins])
    bump = np.zeros(frame_db.size)
    for (a, b), off in zip(grid.bounds, offsets, strict=True):
        if off > 0.0:
            bump[a:b] = np.maximum(bump[a:b], min(off, 1e3) + _COVERAGE_NUDGE_DB)
    if not bump.any():
        return frame_db
    raised = frame_db + bump
    if math.isfinite(grid.step_db):
        raised = slew_envelope_db(raised, grid.step_db, upper=True)
    return grid.finish(raised)


def _lane_warnings(raw_db: np.ndarray, grid: _LaneGrid, settings: LaneSettings) -> list[str]:
    bounds = grid.bounds
    objective, alpha = settings.objective, settings.alpha
    min_gain_db, max_gain_db = settings.min_gain_db, settings.max_gain_db
    n = len(bounds)
    empty_mask = [i for i, wb in enumerate(grid.bins) if wb.gain_db.size == 0]
    warnings: list[str] = []
    silent = [i for i in range(n) if raw_db[i] == -np.inf and i not in empty_mask]
    low = [i for i in range(n) if np.isfinite(raw_db[i]) and raw_db[i] < min_gain_db]
    high = [i for i in range(n) if raw_db[i] > max_gain_db]
    if silent and objective == "paper":
        warnings.append(
            f"window(s) {_describe(silent, bounds)}: the paper's loss is lowest with the "
            f"music muted (lambda* = 0): the music has too little of its energy inside the "
            f"noise's high-energy mask for alpha={alpha}, so raising it costs more than it "
            f"masks; gain held at min_gain_db={min_gain_db:g} dB instead of muting."
        )
    if empty_mask:
        warnings.append(
            f"window(s) {_describe(empty_mask, bounds)}: no high-energy mask bins, nothing "
            f"to mask; gain held at min_gain_db={min_gain_db:g} dB."
        )
    if low:
        warnings.append(
            f"window(s) {_describe(low, bounds)}: the {objective} objective's gain is below "
            f"min_gain_db={min_gain_db:g} dB; clamped up to it."
        )
    if high:
        finite = raw_db[high][np.isfinite(raw_db[high])]
        peak = f"up to {float(np.max(finite)):+.1f} dB" if finite.size else "no finite gain"
        warnings.append(
            f"window(s) {_describe(high, bounds)}: the {objective} objective's gain is above "
            f"max_gain_db={max_gain_db:g} dB ({peak}); clamped down to it, so those "
            "windows are masked less than the objective asks."
        )
    if np.any(grid.cap_env < min_gain_db):
        lowest = float(np.min(grid.cap_env))
        warnings.append(
            f"frame caps (loudness ceiling or peak limit) take the lane down to {lowest:+.1f} dB, "
            f"below min_gain_db={min_gain_db:g} dB: the caps win over the floor."
        )
    return warnings


_CHUNK_SAMPLES = 1 << 20


def lane_gain_at(
    lane: LambdaLane,
    num_samples: int,
    sample_rate_hz: int,
    start_s: float = 0.0,
    *,
    first_sample: int = 0,
) -> np.ndarray:
    """The lane as a per-sample LINEAR gain at any sample rate.

    Sample ``n`` sits at ``start_s + n / sample_rate_hz`` seconds; the lane's dB values
    are interpolated linearly between frame centres (held flat outside them) and then
    converted to linear gain, so the gain is continuous, exact at frame centres, and a
    sample-to-sample step is at most the lane's dB slope times one sample period.

    Args:
        lane: the lane.
        num_samples: output length in samples (>= 0).
        sample_rate_hz: output sample rate in Hz (8,000 to 192,000 typical; any > 0).
        start_s: time of sample 0 on the lane's time axis, seconds.
        first_sample: the first sample to return (>= 0): the output is samples
            ``first_sample .. first_sample + num_samples`` of the whole gain curve, the
            same values as slicing it (each sample's gain depends on its index alone),
            so a long stem is gained block by block.

    Returns:
        float32 ``(num_samples,)`` linear gain.
    """
    if num_samples < 0:
        raise ParameterError(f"num_samples must be >= 0, got {num_samples}")
    if first_sample < 0:
        raise ParameterError(f"first_sample must be >= 0, got {first_sample}")
    if sample_rate_hz <= 0:
        raise ParameterError(f"sample_rate_hz must be > 0, got {sample_rate_hz}")
    if not math.isfinite(start_s):
        raise ParameterError(f"start_s must be finite, got {start_s}")
    out = np.empty(num_samples, dtype=np.float32)
    for lo in range(0, num_samples, _CHUNK_SAMPLES):
        hi = min(lo + _CHUNK_SAMPLES, num_samples)
        n = np.arange(first_sample + lo, first_sample + hi, dtype=np.float64)
        t = start_s + n / sample_rate_hz
        db = np.interp(t, lane.frame_times_s, lane.frame_gain_db)
        out[lo:hi] = 10.0 ** (db / 20.0)
    return out


def apply_lane(
    audio: BlockArray,
    sample_rate_hz: int,
    lane: LambdaLane,
    *,
    store: ArrayStore | None = None,
    out: np.ndarray | BlockArray | None = None,
) -> np.ndarray | BlockArray:
    """Multiply audio by the lane's gain, sample by sample.

    Args:
        audio: float ``(channels, samples)`` (pedalboard layout), linear amplitude, at
            ``sample_rate_hz``; sample 0 is the stem's start (time 0 of the lane). A
            block array (numpy or :class:`~bnmusic_bridge.scratch.DiskArray`), read a
            block of samples at a time.
        sample_rate_hz: the audio's sample rate in Hz.
        lane: the lane.
        store: where the result lives (None: a numpy array).
        out: a float32 array of the audio's shape to write the result into instead (a
            previous product, rewritten in place); ``store`` is then not used.

    Returns:
        float32 ``(channels, samples)`` (``out`` when given), written block by block.
    """
    shape = tuple(audio.shape)
    if len(shape) != 2:
        raise AudioInputError(f"audio must be 2-D (channels, samples), got shape {shape}")
    target: Any = out  # written by time slices: a numpy array or a DiskArray
    if target is None:
        target = (scratch.MemoryStore() if store is None else store).empty(shape, np.float32)
    elif tuple(target.shape) != shape or target.dtype != np.float32:
        raise ParameterError(
            f"out must be float32 of shape {shape}, got {target.dtype} of shape "
            f"{tuple(target.shape)}"
        )
    for a, b in scratch.blocks(shape[1], scratch.BLOCK_SAMPLES):
        gain = lane_gain_at(lane, b - a, sample_rate_hz, first_sample=a)
        part = np.asarray(audio[:, a:b]).astype(np.float32, copy=False)
        target[:, a:b] = (part * gain[None, :]).astype(np.float32, copy=False)
    return target
