"""Draw the overview picture in a helper process, beside a one-off render.

A fresh ``bnmusic render`` of a short stem spent a fifth of its time on the picture:
importing matplotlib, filling its font and glyph caches on the first draw, then
drawing. The render keeps one core busy, so :meth:`PictureProcess.start` starts a
helper process with it, which imports matplotlib and draws a throw-away figure on the
other core, then waits. When the render is done, the parent sends the picture's small
data (:class:`~bnmusic_bridge.export.plot.PictureData`, a few MB at most) and writes the
stems and lanes while the helper draws; the PNG comes back through a pipe, and the
parent writes it with the other outputs, in the same all-or-nothing set.

Nothing depends on the helper: when it cannot start, dies, answers with an error or
takes longer than :data:`HELPER_TIMEOUT_S`, the parent draws the picture itself (an
error in the drawing itself is then raised there, as without a helper).

Messages on the pipes: an 8-byte big-endian length, then a pickle. The parent sends a
``PictureData``; the helper answers ``("png", bytes)`` or ``("error", text)``. The
helper ends when its input closes (the parent closed it, exited or was killed).

The helper runs :func:`run` (``python -c "from bnmusic_bridge.export.picture_process
import run; run()"``); only the parent starts it.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np

from ..result import LIMITS
from .plot import PictureData, Shortfall, draw_png

HELPER_TIMEOUT_S = 60.0
"""How long the parent waits for the helper's PNG (seconds) before drawing it itself.
A 3000-column picture takes the helper about half a second."""
_HEADER = struct.Struct(">Q")


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the system has one)."""
    with contextlib.suppress(AttributeError, OSError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _write_frame(stream: IO[bytes], payload: bytes) -> None:
    stream.write(_HEADER.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def _read_exactly(stream: IO[bytes], size: int) -> bytes | None:
    chunks: list[bytes] = []
    left = size
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None  # the other side closed the pipe
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_frame(stream: IO[bytes]) -> bytes | None:
    header = _read_exactly(stream, _HEADER.size)
    if header is None:
        return None
    return _read_exactly(stream, _HEADER.unpack(header)[0])


class PictureProcess:
    """A helper process that draws overview pictures (see the module doc). One picture
    at a time; :meth:`close` ends it (so does the parent's exit)."""

    def __init__(self, proc: subprocess.Popen[bytes], timeout_s: float = HELPER_TIMEOUT_S):
        self._proc = proc
        self._lock = threading.Lock()  # one exchange on the pipes at a time
        self.timeout_s = timeout_s

    @classmethod
    def start(cls) -> PictureProcess | None:
        """Start a helper; None where it cannot help (one CPU: it would only take turns
        with the render) or cannot start (the picture is then drawn in this process)."""
        if available_cpus() < 2:
            return None
        package_root = str(Path(__file__).resolve().parents[2])
        env = {
            **os.environ,
            # The same package as this process, wherever that was imported from.
            "PYTHONPATH": os.pathsep.join(
                p for p in (package_root, os.environ.get("PYTHONPATH")) if p
            ),
            "MPLBACKEND": "Agg",
            # Drawing is single-threaded; a BLAS pool per core would only compete with
            # the render.
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        try:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    f"from {__name__} import run; run()",
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                # Ctrl-C goes to the render, which closes the helper's input.
                start_new_session=True,
            )
        except OSError:
            return None
        return cls(proc)

    @property
    def alive(self) -> bool:
        """Whether the helper is still running."""
        return self._proc.poll() is None

    def submit(self, data: PictureData) -> Callable[[], bytes]:
        """Send ``data`` to the helper to draw, without waiting; returns a function that
        waits for the PNG and returns it, drawing it in this process when the helper
        fails (see the module doc)."""
        reply: list[bytes | None] = []

        def exchange() -> None:
            with self._lock:
                try:
                    assert self._proc.stdin is not None and self._proc.stdout is not None
                    _write_frame(self._proc.stdin, pickle.dumps(data, protocol=5))
                    reply.append(_read_frame(self._proc.stdout))
                except (OSError, ValueError):  # the helper is gone
                    reply.append(None)

        # A thread writes, as the helper may still be warming up (a full pipe would
        # block the render's own writing).
        thread = threading.Thread(target=exchange, name="bnmusic-picture", daemon=True)
        thread.start()

        def result() -> bytes:
            thread.join(self.timeout_s)
            answer = reply[0] if reply else None
            if answer is not None:
                with contextlib.suppress(Exception):
                    kind, value = pickle.loads(answer)
                    if kind == "png" and isinstance(value, bytes):
                        return value
            # Died, hung or failed: draw here (a drawing error is raised here, as
            # without a helper) and stop using the helper.
            self.kill()
            return draw_png(data)

        return result

    def close(self) -> None:
        """End the helper: close its pipes; it exits by itself once its input closes
        (no wait here: its interpreter's shutdown would only delay the render's). If a
        picture is still being exchanged (the render stopped while the helper drew), the
        helper is killed instead: closing a pipe another thread is blocked on would wait
        for that thread."""
        if not self._lock.acquire(blocking=False):
            with contextlib.suppress(OSError):
                self._proc.kill()
            return
        try:
            self._close_pipes()
        finally:
            self._lock.release()

    def kill(self) -> None:
        """Stop the helper now (it hung or failed), reap it, then close the pipes (an
        exchange still waiting on them ends when the helper's end closes)."""
        with contextlib.suppress(OSError):
            self._proc.kill()
        self._proc.wait()
        if self._lock.acquire(timeout=10.0):
            try:
                self._close_pipes()
            finally:
                self._lock.release()

    def _close_pipes(self) -> None:
        for stream in (self._proc.stdin, self._proc.stdout):
            with contextlib.suppress(OSError, ValueError):
                if stream is not None:
                    stream.close()


def warm_up_data() -> PictureData:
    """A small made-up picture that runs every drawing step (both colour scales, the
    mask, each limit's shading and bar, an unreachable optimum, the target): drawn once
    by the helper, so the fonts, glyphs and colour maps are ready for the real one."""
    rng = np.random.default_rng(0)
    bands, columns = 128, 64
    levels = rng.uniform(-40.0, 40.0, (bands, columns))
    times = np.linspace(0.0, 10.0, 9)
    return PictureData(
        name="warm-up.wav",
        caption="procedural, seed 0, spreading model, coverage 80.0 %, NMR -3.0 dB",
        noise_db=levels,
        music_db=levels[::-1],
        vmax_db=40.0,
        mask=levels > 20.0,
        mask_share=0.25,
        duration_s=10.0,
        lane_times_s=times,
        lane_gain_db=np.linspace(-6.0, 6.0, times.size),
        window_times_s=times,
        window_gain_db=np.where(np.arange(times.size) == 4, np.inf, np.linspace(-3, 9, times.size)),
        shortfalls=tuple(
            Shortfall(limit, float(k), float(k) + 2.0, 3.0) for k, limit in enumerate(LIMITS)
        ),
        lane_hop_s=1.28,
        coverage_times_s=np.linspace(0.0, 10.0, columns),
        coverage_pct=np.linspace(50.0, 100.0, columns),
        lane_window_s=2.56,
        target_coverage_pct=80.0,
    )


def main() -> int:
    """The helper: warm up, then draw each picture the parent sends until its input
    closes."""
    # The protocol owns the real stdout; anything a library prints goes to stderr.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    requests = sys.stdin.buffer
    with contextlib.suppress(ValueError, OSError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Twice: the first real picture then draws in 0.34 s instead of 0.40 s (measured on
    # a 10 s render); the render takes seconds more to send it.
    with contextlib.suppress(Exception):  # a real picture would meet the same error
        for _ in range(2):
            draw_png(warm_up_data())
    while True:
        payload = _read_frame(requests)
        if payload is None:
            return 0  # the parent closed the pipe
        try:
            answer: tuple[str, object] = ("png", draw_png(pickle.loads(payload)))
        except Exception as e:
            answer = ("error", f"{type(e).__name__}: {e}")
        try:
            _write_frame(replies, pickle.dumps(answer, protocol=5))
        except OSError:  # the parent is gone
            return 0


def run() -> None:
    """:func:`main`, then end the process at once: whoever reads the helper's stderr
    (the render's own, inherited) waits for it to close, and a normal interpreter
    shutdown with matplotlib loaded takes a noticeable fraction of a second."""
    code = main()
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    os._exit(code)
