"""Stereo width of the music: how wide it is, and a widening that keeps the mono sum.

Two numbers describe a stereo image here, both over the whole signal:

- L/R correlation: ``sum(L * R) / sqrt(sum(L^2) * sum(R^2))`` (1: mono, 0: unrelated
  channels, negative: out of phase);
- side-to-mid level: ``10 * log10(sum(S^2) / sum(M^2))`` dB with ``M = (L + R) / 2`` and
  ``S = (L - R) / 2`` (-inf: mono; 0 dB: as much side as mid).

Real stereo music measured for this package (``benchmarks/results/stereo_width.json``,
``benchmarks/bench_stereo_width.py``): the three excerpts in ``shared/data/music`` are
mono downmixes, so their original stereo Ogg files (Debian packages extremetuxracer-data,
xmoto-data, lincity-ng-data) were measured at the same cut points: correlation 0.806,
0.771, 0.363 and side-to-mid -9.6, -8.9, -3.3 dB; over all 20 music files of those
packages, side-to-mid quartiles -12.4 / -9.8 / -5.0 dB and correlation quartiles 0.52 /
0.81 / 0.89. The interquartile range is :data:`TARGET_SIDE_TO_MID_DB`. Music the
procedural generator gave before widening measured correlation 0.85 to 0.97 and
side-to-mid -11 to -18 dB on three real noise recordings (mono stems), and a stereo stem
got 0.989 / -22.5 dB (issue 15).

:func:`widen` adds a *side* signal made from the mid by a decorrelating filter (a short
burst of exponentially decaying noise, different for each seed: a dense early
reflection pattern, not a Haas delay), high-passed so the bass stays mono. The mid is
left alone, so ``(L + R) / 2`` is exactly the music before widening: the mono fold-down
(a phone, a club's mono sub, a broadcast downmix) hears no comb filter and no level
change, and Stage 2, computed on the mono sum, is unchanged by the widening.
"""

from __future__ import annotations

import math

import numpy as np

TARGET_SIDE_TO_MID_DB = (-12.4, -5.0)
"""Side-to-mid level range (dB) of the measured real stereo music: its interquartile range."""
DEFAULT_SIDE_TO_MID_DB = -9.0
"""Where :func:`widen` puts music narrower than that (near the measured median, -9.8 dB,
and the two pop excerpts, -9.6 and -8.9 dB; correlation about 0.78)."""
SIDE_HIGHPASS_HZ = 200.0
"""Below this the added side signal is cut: bass stays mono (vinyl, clubs, mono subs)."""
DECORRELATOR_S = 0.03
"""Length of the decorrelating filter, s: under the 50 ms echo threshold, so it widens
without being heard as an echo."""


def width_metrics(audio: np.ndarray) -> tuple[float, float]:
    """``(correlation, side_to_mid_db)`` of ``(2, samples)`` audio (see the module doc).

    A mono (1-channel) signal gives ``(1.0, -inf)``; silence gives ``(1.0, -inf)`` too.
    """
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim == 1 or x.shape[0] == 1:
        return 1.0, -math.inf
    if x.shape[0] != 2:
        raise ValueError(f"width_metrics needs (2, samples) audio, got shape {x.shape}")
    left, right = x[0], x[1]
    ll, rr = float(np.dot(left, left)), float(np.dot(right, right))
    if ll <= 0 or rr <= 0:
        return 1.0, -math.inf
    corr = float(np.dot(left, right)) / math.sqrt(ll * rr)
    mid = 0.5 * (left + right)
    side = 0.5 * (left - right)
    mm, ss = float(np.dot(mid, mid)), float(np.dot(side, side))
    if mm <= 0:
        return corr, math.inf
    return corr, (10.0 * math.log10(ss / mm) if ss > 0 else -math.inf)


def _decorrelator(sample_rate_hz: int, seed: int) -> np.ndarray:
    """Unit-energy FIR: exponentially decaying noise with a zero mean (no DC, little bass)."""
    n = max(8, int(round(DECORRELATOR_S * sample_rate_hz)))
    rng = np.random.default_rng(0x5EED_57E0 + int(seed))
    t = np.arange(n) / sample_rate_hz
    h = rng.standard_normal(n) * np.exp(-t / (DECORRELATOR_S / 4.0))
    h[0] = 0.0  # no direct path: the side must not be a copy of the mid
    h -= h.mean()
    return h / np.sqrt(np.sum(h * h))


def _highpass(x: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    """Zero-phase 4th-order Butterworth high-pass at :data:`SIDE_HIGHPASS_HZ`."""
    from scipy.signal import butter, sosfiltfilt

    sos = butter(2, SIDE_HIGHPASS_HZ, btype="highpass", fs=sample_rate_hz, output="sos")
    return sosfiltfilt(sos, x)


def widen(
    music: np.ndarray,
    sample_rate_hz: int,
    *,
    side_to_mid_db: float = DEFAULT_SIDE_TO_MID_DB,
    seed: int = 0,
) -> np.ndarray:
    """Stereo music at least ``side_to_mid_db`` wide, with its mono sum unchanged.

    Args:
        music: float ``(1, samples)`` or ``(2, samples)``, linear amplitude.
        sample_rate_hz: its rate in Hz.
        side_to_mid_db: the side-to-mid level (dB) to reach; music already at least this
            wide is returned as stereo, unchanged.
        seed: picks the decorrelating filter (same seed, same output).

    Returns:
        float32 ``(2, samples)``: ``L = M + S0 + S``, ``R = M - S0 - S`` where ``M`` and
        ``S0`` are the input's mid and side and ``S`` is the added decorrelated side.
    """
    x = np.asarray(music, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.shape[0] not in (1, 2):
        raise ValueError(f"widen needs 1- or 2-channel music, got shape {x.shape}")
    mid = x.mean(axis=0)
    side0 = 0.5 * (x[0] - x[1]) if x.shape[0] == 2 else np.zeros_like(mid)
    mm = float(np.dot(mid, mid))
    s0 = float(np.dot(side0, side0))
    want = mm * 10.0 ** (side_to_mid_db / 10.0)
    if mm <= 0 or s0 >= want:
        out = x if x.shape[0] == 2 else np.repeat(x, 2, axis=0)
        return out.astype(np.float32)
    from scipy.signal import oaconvolve

    added = oaconvolve(mid, _decorrelator(sample_rate_hz, seed))[: mid.size]
    added = _highpass(added, sample_rate_hz)
    aa = float(np.dot(added, added))
    if aa <= 0:
        return np.stack([mid + side0, mid - side0]).astype(np.float32)
    # The added side is (nearly) uncorrelated with the existing side: powers add.
    added *= math.sqrt(max(want - s0, 0.0) / aa)
    side = side0 + added
    return np.stack([mid + side, mid - side]).astype(np.float32)
