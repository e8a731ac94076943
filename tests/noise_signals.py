"""Synthetic noise stems for tests."""

from __future__ import annotations

import numpy as np


def clacks(seconds: float, rate: int = 44100, period_s: float = 0.5, seed: int = 0) -> np.ndarray:
    """Train-like wheel clacks: band-passed noise bursts every ``period_s`` over a rumble.
    Mono float32 ``(samples,)``, peak about -6 dBFS."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    rumble = 0.05 * np.convolve(rng.standard_normal(n), np.ones(200) / 200, mode="same")
    out = rumble + 0.01 * rng.standard_normal(n)
    burst_len = int(0.04 * rate)
    env = np.exp(-np.arange(burst_len) / (0.008 * rate))
    for k in range(int(seconds / period_s) + 1):
        start = int(k * period_s * rate)
        if start + burst_len > n:
            break
        tone = np.sin(2 * np.pi * 1800 * t[:burst_len]) + 0.5 * rng.standard_normal(burst_len)
        out[start : start + burst_len] += 0.4 * env * tone
    return (out / np.max(np.abs(out)) * 0.5).astype(np.float32)
