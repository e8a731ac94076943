"""Single-producer, single-consumer sample rings for the live engine.

One thread writes, one thread reads; positions are absolute sample indices (Python
ints, whose assignment is atomic under the GIL), the storage a preallocated float32
``(channels, capacity)`` array. The writer fills the samples first and publishes the new
``write_pos`` after, so a reader that sees ``write_pos`` sees the samples before it. No
locks: neither side ever waits for the other. The audio callback only calls
:meth:`SampleRing.write_from` (noise in) and :meth:`SampleRing.read_into` (music out),
which copy into or out of preallocated arrays and allocate no numpy arrays.
"""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError


class SampleRing:
    """A ring of ``capacity`` samples of ``channels`` channels at absolute positions.

    Attributes:
        buffer: float32 ``(channels, capacity)`` storage (sample ``p`` lives at column
            ``p % capacity``).
        write_pos: one past the last written absolute sample (the producer's).
        read_pos: the consumer's position, published for the producer (advisory: the
            producer of the music ring uses it not to overwrite what is still to play).
        valid_from: first absolute sample holding valid data (the producer moves it when
            it skips ahead over a gap).
    """

    def __init__(self, channels: int, capacity: int) -> None:
        if channels < 1 or capacity < 1:
            raise ParameterError(
                f"ring needs channels >= 1 and capacity >= 1, got {channels}, {capacity}"
            )
        self.buffer = np.zeros((channels, capacity), dtype=np.float32)
        self.buffer.fill(0.0)  # touch every page now, not on the audio thread's first write
        self.capacity = capacity
        self.write_pos = 0
        self.read_pos = 0
        self.valid_from = 0

    @property
    def channels(self) -> int:
        return int(self.buffer.shape[0])

    def free(self) -> int:
        """Samples the producer may write without overwriting unread ones."""
        return self.capacity - (self.write_pos - self.read_pos)

    def write_from(self, data: np.ndarray) -> None:
        """Producer: append ``data`` (``(channels, n)`` or ``(n,)`` for one channel) at
        ``write_pos`` and publish it. ``n`` must not exceed the capacity."""
        n = data.shape[-1]
        start = self.write_pos % self.capacity
        first = min(n, self.capacity - start)
        buf = self.buffer
        if data.ndim == 1:
            buf[0, start : start + first] = data[:first]
            if first < n:
                buf[0, : n - first] = data[first:]
        else:
            buf[:, start : start + first] = data[:, :first]
            if first < n:
                buf[:, : n - first] = data[:, first:]
        self.write_pos += n  # publish after the samples are in

    def write_at(self, pos: int, data: np.ndarray) -> None:
        """Producer: write ``(channels, n)`` at absolute ``pos`` (>= ``write_pos``; a
        gap marks everything before ``pos`` invalid) and publish it."""
        if pos < self.write_pos:
            raise ParameterError(f"write_at({pos}) is before write_pos {self.write_pos}")
        if pos > self.write_pos:
            self.valid_from = pos  # the gap holds stale samples
            self.write_pos = pos
        self.write_from(data)

    def read_into(self, out: np.ndarray, pos: int, n: int) -> int:
        """Consumer: copy up to ``n`` samples from absolute ``pos`` into ``out[:, :n]``;
        samples not (validly) written are zeros. Returns how many were valid."""
        wp = self.write_pos
        if pos < self.valid_from or pos >= wp or pos < wp - self.capacity:
            out[:, :n] = 0.0
            return 0
        avail = min(n, wp - pos)
        start = pos % self.capacity
        first = min(avail, self.capacity - start)
        out[:, :first] = self.buffer[:, start : start + first]
        if first < avail:
            out[:, first:avail] = self.buffer[:, : avail - first]
        if avail < n:
            out[:, avail:n] = 0.0
        return avail

    def copy_range(self, pos: int, n: int) -> np.ndarray:
        """A new ``(channels, n)`` copy of ``[pos, pos + n)`` (worker side; allocates)."""
        out = np.zeros((self.channels, n), dtype=np.float32)
        self.read_into(out, pos, n)
        return out
