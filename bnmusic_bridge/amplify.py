"""Adaptive amplification: the paper's gain lambda and a smoothed lambda lane (Stage 2).

Arrays are on the analysis grid of the whole stem: float ``(n_mels=512, frames)`` linear
mel magnitude, mel orientation (row 0 = lowest band), one frame per 10 ms (frame ``j``
centred on sample ``j * 441`` at 44.1 kHz). The music is at *unity gain*: the pipeline has
loudness-matched it to the noise (same integrated LUFS), so a gain in dB is the music's
level relative to the noise's loudness. Gains are LINEAR amplitude factors unless the
name says ``_db`` (``20 log10`` of the linear gain).

The paper's objective (alpha = 0.14, M the high-energy mask)::

    loss(g) = SUM(alpha * g * S_music) + SUM(max((required - g * capacity) * M, 0))

With the ``smr`` field (``required = noise * 10**(21/20)``, ``capacity = music``) this is
exactly the paper's ``SUM(alpha S') + SUM(max((T_mask - S') M, 0))`` with ``S' = g S``.
It is convex and piecewise linear in ``g``; :func:`solve_lambda_exact` finds its minimiser
by sorting the breakpoints ``required / capacity``; :func:`solve_lambda_gd` is the
paper's gradient descent, kept as the reference.

Policy (ours): the literal loss picks ``g = 0`` (silence) whenever raising the music
costs more (alpha x its total magnitude) than it gains inside M, which happens for music
not aligned with the noise. :func:`lambda_lane` never mutes silently: such windows are
clamped to ``min_gain_db``, flagged, and described in ``LambdaLane.warnings``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import AudioInputError, ParameterError
from .masking import MaskingField, masking_gain
from .spectrogram import HOP_SAMPLES, SAMPLE_RATE_HZ

DEFAULT_ALPHA = 0.14
"""The paper's volume weight alpha in the loss."""

FRAME_PERIOD_S = HOP_SAMPLES / SAMPLE_RATE_HZ
"""Time between analysis frames: 441 / 44,100 = 0.01 s."""

LANE_SOLVERS = ("exact", "gd")

_GD_ZERO_GAIN = 1e-9
"""Gradient descent on log-gain cannot reach 0; a result under this counts as silence."""


def _check_inputs(
    music_mel: np.ndarray, field: MaskingField, mask: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    music = np.asarray(music_mel)
    m = np.asarray(mask)
    if music.shape != field.required.shape:
        raise ParameterError(
            f"music_mel shape {music.shape} differs from the masking field's {field.required.shape}"
        )
    if m.shape != music.shape or m.dtype != np.bool_:
        raise ParameterError(
            f"mask must be bool of shape {music.shape}, got {m.dtype} of shape {m.shape}"
        )
    if not (math.isfinite(alpha) and alpha >= 0.0):
        raise ParameterError(f"alpha must be finite and >= 0, got {alpha}")
    return music, m


@dataclass(frozen=True)
class _LossTerms:
    """The loss reduced to what depends on the gain."""

    volume_slope: float  # alpha * SUM(S_music)
    constant: float  # SUM of required over mask bins that no gain can mask (capacity 0)
    breakpoints: np.ndarray  # required / capacity of maskable mask bins, float64, > 0
    weights: np.ndarray  # capacity of those bins, float64


def _loss_terms(
    music_mel: np.ndarray, field: MaskingField, mask: np.ndarray, alpha: float
) -> _LossTerms:
    music, m = _check_inputs(music_mel, field, mask, alpha)
    req = field.required[m].astype(np.float64)
    cap = field.capacity[m].astype(np.float64)
    need = req > 0.0
    maskable = need & (cap > 0.0)
    return _LossTerms(
        volume_slope=alpha * float(np.sum(music, dtype=np.float64)),
        constant=float(req[need & ~maskable].sum()),
        breakpoints=masking_gain(req[maskable], cap[maskable]),
        weights=cap[maskable],
    )


def paper_loss(
    gain: float,
    music_mel: np.ndarray,
    field: MaskingField,
    mask: np.ndarray,
    alpha: float = DEFAULT_ALPHA,
) -> float:
    """The paper's loss at linear gain ``gain`` (see the module docstring).

    Args:
        gain: linear gain on the unity-gain music (>= 0).
        music_mel: float ``(n_mels, frames)`` linear mel magnitude of the music at unity.
        field: the masking field of the same shape.
        mask: bool ``(n_mels, frames)``, the high-energy mask M, mel orientation.
        alpha: volume weight (paper: 0.14).

    Returns:
        the loss in linear mel-magnitude units (float).
    """
    music, m = _check_inputs(music_mel, field, mask, alpha)
    if not (math.isfinite(gain) and gain >= 0.0):
        raise ParameterError(f"gain must be finite and >= 0 (linear), got {gain}")
    volume = alpha * gain * float(np.sum(music, dtype=np.float64))
    shortfall = field.required[m].astype(np.float64) - gain * field.capacity[m].astype(np.float64)
    return volume + float(np.maximum(shortfall, 0.0).sum())


def solve_lambda_exact(
    music_mel: np.ndarray,
    field: MaskingField,
    mask: np.ndarray,
    alpha: float = DEFAULT_ALPHA,
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
    music_mel: np.ndarray,
    field: MaskingField,
    mask: np.ndarray,
    alpha: float = DEFAULT_ALPHA,
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


def solve_gain_for_coverage(field: MaskingField, mask: np.ndarray, target_coverage: float) -> float:
    """Lowest linear gain whose coverage of the mask reaches ``target_coverage`` (0..1).

    A well-posed alternative to the paper's loss: the ``target``-quantile of the mask
    bins' required gains (see :func:`bnmusic_bridge.metering.coverage`).

    Returns:
        the linear gain; ``inf`` when the target needs bins the music cannot mask
        (capacity 0); 0.0 for an empty mask.
    """
    if not 0.0 <= target_coverage <= 1.0:
        raise ParameterError(f"target_coverage must be in 0..1, got {target_coverage}")
    m = np.asarray(mask, dtype=bool)
    if m.shape != field.required.shape:
        raise ParameterError(
            f"mask shape {m.shape} differs from the field's {field.required.shape}"
        )
    gains = field.required_gain()[m]
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
        frame_gain_db: float64 ``(frames,)``, the smoothed, clamped gain in dB
            (``20 log10`` of the linear gain), within ``[min_gain_db, max_gain_db]``.
        window_times_s: float64 ``(windows,)``, centre time of each solve window, s.
        window_gain_db: float64 ``(windows,)``, each window's raw optimum in dB before
            clamping and smoothing; ``-inf`` where the loss chose silence.
        window_clamped: bool ``(windows,)``, True where that optimum lay outside
            ``[min_gain_db, max_gain_db]``.
        min_gain_db: lowest gain the lane may take, dB.
        max_gain_db: highest gain the lane may take, dB.
        warnings: human-readable notes on clamped windows (which, and why).
    """

    frame_times_s: np.ndarray
    frame_gain_db: np.ndarray
    window_times_s: np.ndarray
    window_gain_db: np.ndarray
    window_clamped: np.ndarray
    min_gain_db: float
    max_gain_db: float
    warnings: tuple[str, ...]


def _window_starts(num_frames: int, window_frames: int, hop_frames: int) -> list[int]:
    if num_frames <= window_frames:
        return [0]
    starts = list(range(0, num_frames - window_frames + 1, hop_frames))
    if starts[-1] + window_frames < num_frames:
        starts.append(num_frames - window_frames)
    return starts


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


def _describe(indices: list[int], starts: list[int], window_frames: int, num_frames: int) -> str:
    parts = []
    for i in indices[:8]:
        t0 = starts[i] * FRAME_PERIOD_S
        t1 = min(starts[i] + window_frames, num_frames) * FRAME_PERIOD_S
        parts.append(f"{i} ({t0:.2f}-{t1:.2f} s)")
    more = f" and {len(indices) - 8} more" if len(indices) > 8 else ""
    return ", ".join(parts) + more


def lambda_lane(
    music_mel: np.ndarray,
    field: MaskingField,
    mask: np.ndarray,
    *,
    alpha: float = DEFAULT_ALPHA,
    window_frames: int = 256,
    hop_frames: int = 128,
    min_gain_db: float = -30.0,
    max_gain_db: float = 24.0,
    smoothing_s: float = 0.3,
    solver: str = "exact",
) -> LambdaLane:
    """Solve the paper's loss per window and turn the optima into a smooth gain lane.

    Steps: 1. windows of ``window_frames`` frames every ``hop_frames`` (the last one
    aligned to the stem's end; one window when the stem is shorter); 2. each window's
    optimum (:func:`solve_lambda_exact` or :func:`solve_lambda_gd`); 3. clamp to
    ``[min_gain_db, max_gain_db]``, flagging and explaining every clamped window (silence
    is never applied: ``lambda* = 0`` becomes ``min_gain_db``); 4. linear interpolation
    in dB between window centres (held flat before the first and after the last); 5.
    zero-phase one-pole smoothing in dB with time constant ``smoothing_s``, so the lane
    is continuous and free of steps.

    Args:
        music_mel: float ``(n_mels, frames)`` linear mel magnitude of the unity-gain music.
        field: masking field of the same shape.
        mask: bool ``(n_mels, frames)`` high-energy mask M.
        alpha: the loss's volume weight.
        window_frames: frames per solve window (10 ms each; 256 = 2.56 s).
        hop_frames: frames between window starts.
        min_gain_db: floor of the lane, dB.
        max_gain_db: ceiling of the lane, dB.
        smoothing_s: one-pole time constant in seconds (0 = no smoothing).
        solver: ``"exact"`` or ``"gd"``.
    """
    music, m = _check_inputs(music_mel, field, mask, alpha)
    if solver not in LANE_SOLVERS:
        raise ParameterError(f"solver must be one of {LANE_SOLVERS}, got {solver!r}")
    if window_frames < 1 or hop_frames < 1:
        raise ParameterError(
            f"window_frames and hop_frames must be >= 1, got {window_frames} and {hop_frames}"
        )
    if not (math.isfinite(min_gain_db) and math.isfinite(max_gain_db)) or min_gain_db > max_gain_db:
        raise ParameterError(
            f"need finite min_gain_db <= max_gain_db, got {min_gain_db} and {max_gain_db}"
        )
    if not (math.isfinite(smoothing_s) and smoothing_s >= 0.0):
        raise ParameterError(f"smoothing_s must be finite and >= 0, got {smoothing_s}")
    num_frames = music.shape[1]
    if num_frames == 0:
        raise ParameterError("music_mel has no frames")

    starts = _window_starts(num_frames, window_frames, hop_frames)
    raw_db = np.empty(len(starts))
    centres = np.empty(len(starts))
    empty_mask: list[int] = []
    for i, start in enumerate(starts):
        stop = min(start + window_frames, num_frames)
        cols = slice(start, stop)
        sub = MaskingField(
            field.required[:, cols], field.capacity[:, cols], field.model, field.margin_db
        )
        if not m[:, cols].any():
            empty_mask.append(i)
        if solver == "exact":
            gain = solve_lambda_exact(music[:, cols], sub, m[:, cols], alpha)
        else:
            gain = solve_lambda_gd(music[:, cols], sub, m[:, cols], alpha)
        raw_db[i] = 20.0 * math.log10(gain) if gain > 0.0 else -np.inf
        centres[i] = (start + stop - 1) / 2.0 * FRAME_PERIOD_S

    clamped = (raw_db < min_gain_db) | (raw_db > max_gain_db)
    warnings: list[str] = []
    silent = [i for i in range(len(starts)) if raw_db[i] == -np.inf and i not in empty_mask]
    low = [i for i in range(len(starts)) if np.isfinite(raw_db[i]) and raw_db[i] < min_gain_db]
    high = [i for i in range(len(starts)) if raw_db[i] > max_gain_db]
    if silent:
        warnings.append(
            f"window(s) {_describe(silent, starts, window_frames, num_frames)}: the paper's "
            f"loss is lowest with the music muted (lambda* = 0): the music has too little of "
            f"its energy inside the noise's high-energy mask for alpha={alpha}, so raising it "
            f"costs more than it masks; gain held at min_gain_db={min_gain_db:g} dB instead "
            "of muting."
        )
    if empty_mask:
        warnings.append(
            f"window(s) {_describe(empty_mask, starts, window_frames, num_frames)}: no "
            f"high-energy mask bins, nothing to mask; gain held at min_gain_db={min_gain_db:g} dB."
        )
    if low:
        warnings.append(
            f"window(s) {_describe(low, starts, window_frames, num_frames)}: optimum below "
            f"min_gain_db={min_gain_db:g} dB; clamped up to it."
        )
    if high:
        peak = float(np.max(raw_db[high]))
        warnings.append(
            f"window(s) {_describe(high, starts, window_frames, num_frames)}: optimum above "
            f"max_gain_db={max_gain_db:g} dB (up to {peak:+.1f} dB); clamped down to it, so "
            "those windows are masked less than the loss asks."
        )

    held_db = np.clip(raw_db, min_gain_db, max_gain_db)
    frame_times = np.arange(num_frames) * FRAME_PERIOD_S
    frame_db = np.interp(frame_times, centres, held_db)
    frame_db = np.clip(_smooth_db(frame_db, smoothing_s), min_gain_db, max_gain_db)
    return LambdaLane(
        frame_times_s=frame_times,
        frame_gain_db=frame_db,
        window_times_s=centres,
        window_gain_db=raw_db,
        window_clamped=clamped,
        min_gain_db=float(min_gain_db),
        max_gain_db=float(max_gain_db),
        warnings=tuple(warnings),
    )


_CHUNK_SAMPLES = 1 << 20


def lane_gain_at(
    lane: LambdaLane, num_samples: int, sample_rate_hz: int, start_s: float = 0.0
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
        start_s: time of output sample 0 on the lane's time axis, seconds.

    Returns:
        float32 ``(num_samples,)`` linear gain.
    """
    if num_samples < 0:
        raise ParameterError(f"num_samples must be >= 0, got {num_samples}")
    if sample_rate_hz <= 0:
        raise ParameterError(f"sample_rate_hz must be > 0, got {sample_rate_hz}")
    if not math.isfinite(start_s):
        raise ParameterError(f"start_s must be finite, got {start_s}")
    out = np.empty(num_samples, dtype=np.float32)
    for lo in range(0, num_samples, _CHUNK_SAMPLES):
        hi = min(lo + _CHUNK_SAMPLES, num_samples)
        t = start_s + np.arange(lo, hi, dtype=np.float64) / sample_rate_hz
        db = np.interp(t, lane.frame_times_s, lane.frame_gain_db)
        out[lo:hi] = 10.0 ** (db / 20.0)
    return out


def apply_lane(audio: np.ndarray, sample_rate_hz: int, lane: LambdaLane) -> np.ndarray:
    """Multiply audio by the lane's gain, sample by sample.

    Args:
        audio: float ``(channels, samples)`` (pedalboard layout), linear amplitude, at
            ``sample_rate_hz``; sample 0 is the stem's start (time 0 of the lane).
        sample_rate_hz: the audio's sample rate in Hz.
        lane: the lane.

    Returns:
        float32 ``(channels, samples)``.
    """
    arr = np.asarray(audio)
    if arr.ndim != 2:
        raise AudioInputError(f"audio must be 2-D (channels, samples), got shape {arr.shape}")
    gain = lane_gain_at(lane, arr.shape[1], sample_rate_hz)
    return (arr.astype(np.float32, copy=False) * gain[None, :]).astype(np.float32, copy=False)
