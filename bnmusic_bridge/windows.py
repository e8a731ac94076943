"""Cutting a stem into Riffusion-image windows and joining the music windows again.

Arithmetic (analysis grid, 44.1 kHz, hop 441 samples = 10 ms, STFT centred):

- frame ``j`` is centred on sample ``j * 441``;
- one window is 512 frames = ``511 * 441 = 225,351`` samples (5.11 s): its first frame
  sits on its first sample and its last frame on its last sample;
- consecutive windows overlap by ``overlap_frames`` frames, so window ``k`` starts at
  frame ``k * step_frames`` with ``step_frames = 512 - overlap_frames``, i.e. at sample
  ``k * step_frames * 441``; the shared audio is ``(overlap_frames - 1) * 441`` samples;
- the stem is zero-padded after its end up to the last window's last sample; every
  output is cut back to the stem's length.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .grid import HOP_SAMPLES, IMAGE_FRAMES, WINDOW_SAMPLES
from .scratch import ArrayStore, DiskArray, MemoryStore


@dataclass(frozen=True)
class WindowPlan:
    """Where each window of a stem lies.

    Attributes:
        num_samples: the stem's length at 44.1 kHz (unpadded).
        overlap_frames: frames shared by consecutive windows.
        step_frames: frames from one window's start to the next one's.
        start_frames: first frame of each window.
        padded_samples: stem length after zero padding (covers the last window).
    """

    num_samples: int
    overlap_frames: int
    step_frames: int
    start_frames: tuple[int, ...]
    padded_samples: int

    @property
    def count(self) -> int:
        return len(self.start_frames)

    @property
    def start_samples(self) -> tuple[int, ...]:
        return tuple(f * HOP_SAMPLES for f in self.start_frames)

    @property
    def overlap_samples(self) -> int:
        return (self.overlap_frames - 1) * HOP_SAMPLES

    @property
    def valid_frames(self) -> int:
        """Frames centred on a real (unpadded) sample."""
        return (self.num_samples - 1) // HOP_SAMPLES + 1


def plan_windows(num_samples: int, overlap_frames: int) -> WindowPlan:
    """Lay 512-frame windows over a stem of ``num_samples`` samples at 44.1 kHz, each
    overlapping the one before by ``overlap_frames`` frames."""
    if not 1 <= overlap_frames < IMAGE_FRAMES:
        raise ValueError(f"overlap_frames={overlap_frames} must be 1 to {IMAGE_FRAMES - 1}")
    step = IMAGE_FRAMES - overlap_frames
    # The last window's audio must reach the stem's last sample.
    count = 1 + max(0, math.ceil((num_samples - WINDOW_SAMPLES) / (step * HOP_SAMPLES)))
    starts = tuple(k * step for k in range(count))
    padded = starts[-1] * HOP_SAMPLES + WINDOW_SAMPLES
    return WindowPlan(num_samples, overlap_frames, step, starts, padded)


def crossfade_gains(
    head: np.ndarray, tail: np.ndarray, num_samples: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """Fade-out and fade-in gains that keep the power constant across a join.

    Equal-power (sin/cos) gains suit uncorrelated material; for correlated material
    they bump the level by up to +3 dB in the middle. The gains are therefore divided by
    ``sqrt(1 + 2 r a b)``, with ``r`` the correlation of the two overlapping segments:
    ``r = 0`` gives the plain equal-power law, ``r = 1`` the linear law (gains sum to 1,
    so identical overlaps join seamlessly).

    Args:
        head: ``(channels, num_samples)`` end of the earlier window.
        tail: ``(channels, num_samples)`` start of the later window.

    Returns:
        (fade_out, fade_in, r): float32 ``(num_samples,)`` gains and the correlation.
    """
    t = (np.arange(num_samples, dtype=np.float64) + 0.5) / num_samples
    a = np.cos(0.5 * np.pi * t)
    b = np.sin(0.5 * np.pi * t)
    denom = math.sqrt(
        float(np.sum(head.astype(np.float64) ** 2) * np.sum(tail.astype(np.float64) ** 2))
    )
    r = float(np.sum(head.astype(np.float64) * tail) / denom) if denom > 0 else 0.0
    r = min(max(r, 0.0), 1.0)  # anti-correlated overlaps: plain equal power
    norm = np.sqrt(1.0 + 2.0 * r * a * b)
    return (a / norm).astype(np.float32), (b / norm).astype(np.float32), r


def stitch(
    plan: WindowPlan,
    windows_audio: Iterable[np.ndarray],
    *,
    channels: int | None = None,
    store: ArrayStore | None = None,
) -> tuple[np.ndarray | DiskArray, list[float]]:
    """Join per-window music ``(channels, WINDOW_SAMPLES)`` into one stem.

    The windows are taken one at a time, in order, so ``windows_audio`` may be a
    generator that decodes each window when asked for it: only one window and the
    previous window's overlap (kept in memory, ``overlap_samples`` per channel) are held
    at once, and the joined music goes into ``store`` window by window.

    Args:
        plan: where the windows lie (``plan.count`` windows are expected).
        windows_audio: float ``(1 or channels, WINDOW_SAMPLES)`` per window, 44.1 kHz,
            linear amplitude; a list or any iterable (a generator).
        channels: channels of the joined music; mono windows are repeated to it. None:
            the most channels of any window (an iterable that is not a Sequence is
            then read into a list first, to find them; pass ``channels`` to stream).
        store: where the joined music is allocated (None: a numpy array).

    Returns:
        the joined ``(channels, plan.num_samples)`` float32 audio (padding removed: only
        the first ``plan.num_samples`` samples are ever written, so no padded array is
        allocated) and the correlation measured at each join.
    """
    if store is None:
        store = MemoryStore()
    if channels is None:
        if not isinstance(windows_audio, Sequence):
            windows_audio = list(windows_audio)
        channels = max(w.shape[0] for w in windows_audio)
    n = plan.num_samples
    out = store.empty((channels, n), np.float32)
    n_ov = plan.overlap_samples
    correlations: list[float] = []
    # The last n_ov samples of the window just written: the next window's overlap
    # (they may lie in the padding past the stem's end, which is never stored).
    prev = np.zeros((channels, 0), dtype=np.float32)
    for k, (start, audio) in enumerate(zip(plan.start_samples, windows_audio, strict=True)):
        w = audio if audio.shape[0] == channels else np.repeat(audio, channels, axis=0)
        seg = np.empty((channels, WINDOW_SAMPLES), dtype=np.float32)
        if k == 0 or n_ov == 0:
            seg[:, :] = w
        else:
            fade_out, fade_in, r = crossfade_gains(prev, w[:, :n_ov], n_ov)
            correlations.append(r)
            seg[:, :n_ov] = prev * fade_out + w[:, :n_ov] * fade_in
            seg[:, n_ov:] = w[:, n_ov:]
        stop = min(start + WINDOW_SAMPLES, n)
        if stop > start:
            out[:, start:stop] = seg[:, : stop - start]
        prev = seg[:, WINDOW_SAMPLES - n_ov :].copy() if n_ov else prev
    return out, correlations
