"""Helpers for tests and benchmarks of the OSC server: a collecting client over real
sockets and a tiny fake generator (no model, no weights).

Not part of the stable API.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bnmusic_bridge.grid import HOP_SAMPLES, SAMPLE_RATE_HZ

from . import protocol as P
from .framing import StreamDecoder

FAKE_GENERATOR = "osc-test-fake"


@dataclass(frozen=True)
class Received:
    """A message as a client saw it: arrival time (``time.monotonic()`` seconds), the
    time tag of its bundle (Unix seconds, None for none or "immediately"), and the
    message."""

    at_s: float
    timetag_s: float | None
    message: P.Message

    @property
    def address(self) -> str:
        return self.message.address

    @property
    def values(self) -> list[Any]:
        return [a.value for a in self.message.args]


class OscClient:
    """Sends to a server and collects everything that comes back, on a background
    thread, over UDP (``transport="udp"``) or TCP (``"tcp"``: OSC 1.1 SLIP framing,
    or ``"tcp-length"``: OSC 1.0 length prefixes).

    Args:
        server: the server's (host, port) for that transport.
        keep: keep messages (False: count them only, for load tests).
    """

    def __init__(self, server: tuple[str, int], transport: str = "udp", keep: bool = True) -> None:
        self.server = server
        self.transport = transport
        self.keep = keep
        self.received: list[Received] = []
        self.counts: dict[str, int] = {}
        self.errors: list[bytes] = []
        self._cond = threading.Condition()
        self._closed = False
        if transport == "udp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            self.sock.bind(("127.0.0.1", 0))
        else:
            self.sock = socket.create_connection(server, timeout=5.0)
            self._decoder = StreamDecoder()
            self._decoder.mode = "slip" if transport == "tcp" else "length"
        self.sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()[:2]

    def send_raw(self, packet: bytes) -> None:
        if self.transport == "udp":
            self.sock.sendto(packet, self.server)
        else:
            self.sock.sendall(self._decoder.frame(packet))

    def send(self, address: str, *args: Any) -> None:
        self.send_raw(P.encode_message(address, *args))

    def _loop(self) -> None:
        while not self._closed:
            try:
                if self.transport == "udp":
                    packets = [self.sock.recvfrom(65536)[0]]
                else:
                    data = self.sock.recv(65536)
                    if not data:
                        return
                    packets = [p for p in self._decoder.feed(data) if isinstance(p, bytes)]
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                return
            now = time.monotonic()
            for packet in packets:
                try:
                    items = P.read_bundle_timetags(packet)
                except Exception:  # noqa: BLE001 - a test wants to see bad replies, not crash
                    self.errors.append(packet)
                    continue
                with self._cond:
                    for tag, message in items:
                        self.counts[message.address] = self.counts.get(message.address, 0) + 1
                        if self.keep:
                            self.received.append(Received(now, tag, message))
                    self._cond.notify_all()

    def wait_for(self, predicate: Callable[[Received], bool], timeout_s: float = 10.0) -> Received:
        """The first received message matching ``predicate`` (waits up to ``timeout_s``).

        Raises:
            TimeoutError: none arrived; the message lists what did.
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for r in self.received:
                    if predicate(r):
                        return r
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(r.address, r.values[:4]) for r in self.received[-10:]]
                    raise TimeoutError(f"no matching message in {timeout_s} s; last seen: {seen}")
                self._cond.wait(left)

    def wait(self, address: str, first: Any = None, timeout_s: float = 10.0) -> Received:
        """The first message to ``address`` (whose first argument equals ``first``, if given)."""
        return self.wait_for(
            lambda r: r.address == address and (first is None or (r.values[:1] == [first])),
            timeout_s,
        )

    def wait_count(self, address: str, n: int, timeout_s: float = 10.0) -> int:
        """Wait until ``n`` messages to ``address`` have arrived; returns the count."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self.counts.get(address, 0) < n and time.monotonic() < deadline:
                self._cond.wait(max(0.0, deadline - time.monotonic()))
            return self.counts.get(address, 0)

    def of(self, address: str, first: Any = None) -> list[Received]:
        with self._cond:
            return [
                r
                for r in self.received
                if r.address == address and (first is None or r.values[:1] == [first])
            ]

    def request(self, address: str, *args: Any, reply: str, timeout_s: float = 5.0) -> Received:
        """Send and wait for the next message to ``reply`` that arrives after sending."""
        with self._cond:
            start = len(self.received)
        self.send(address, *args)
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for r in self.received[start:]:
                    if r.address == reply:
                        return r
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {reply} after {address} within {timeout_s} s")
                self._cond.wait(left)

    def close(self) -> None:
        self._closed = True
        self._thread.join(1.0)
        self.sock.close()

    def __enter__(self) -> OscClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FakeGenerator:
    """A generator for tests: each window's music is its own noise, delayed by one hop
    (10 ms), so Stage 2 has something real to measure. No model.

    Parameters (``generator_params``): ``delay_s`` (seconds of sleep per window, in
    10 ms steps that report progress, so cancellation is quick), ``fail`` (raise a
    GeneratorError when true), ``crash`` (kill the worker process with SIGSEGV, as a
    crashing plugin would; refused outside a worker process).
    """

    name = FAKE_GENERATOR

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.calls = 0

    def generate(
        self, windows: Sequence[Any], analysis: Any, settings: Any, progress: Any = None
    ) -> list[Any]:
        from bnmusic_bridge.errors import GeneratorError
        from bnmusic_bridge.generators import WindowMusic

        self.calls += 1
        if settings.params.get("fail"):
            raise GeneratorError("fake generator asked to fail")
        if settings.params.get("crash"):
            import multiprocessing
            import os
            import signal

            if multiprocessing.parent_process() is None:
                raise GeneratorError(
                    "crash asked for outside a worker process; refusing to kill the server"
                )
            os.kill(os.getpid(), signal.SIGSEGV)
        delay_s = float(settings.params.get("delay_s", 0.0))
        out = []
        for k, w in enumerate(windows):
            steps = int(delay_s / 0.01)
            for i in range(steps):
                time.sleep(0.01)
                if progress is not None:
                    progress("generate", (k + (i + 1) / steps) / len(windows))
            music = np.roll(np.asarray(w.audio, dtype=np.float32), HOP_SAMPLES)[None, :]
            out.append(WindowMusic(audio=music, diagnostics={"fake": True}))
            if progress is not None:
                progress("generate", (k + 1) / len(windows))
        return out


def register_fake_generator() -> str:
    """Register :class:`FakeGenerator` under :data:`FAKE_GENERATOR`; returns the name."""
    from bnmusic_bridge.generators import register_generator

    register_generator(FAKE_GENERATOR, FakeGenerator, "test generator: the noise itself, no model")
    return FAKE_GENERATOR


def write_noise(
    path: Any, seconds: float = 1.0, rate_hz: int = SAMPLE_RATE_HZ, seed: int = 0
) -> Any:
    """A short pulsed-noise WAV stem (mono, peak about -6 dBFS) for tests."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    n = int(seconds * rate_hz)
    t = np.arange(n) / rate_hz
    gate = (np.sin(2 * np.pi * 3.0 * t) > 0).astype(np.float32)
    audio = (0.5 * rng.standard_normal(n) * gate).astype(np.float32)
    audio /= max(1e-9, float(np.max(np.abs(audio)))) * 2
    sf.write(str(path), audio, rate_hz)
    return path


def fake_server_config(root: Any, **changes: Any) -> Any:
    """A :class:`~bnmusic_bridge.frontends.osc.server.ServerConfig` for tests: ephemeral
    ports, ``root`` as the one root, the fake generator (registered here and in every
    worker), no picture; ``changes`` replaces any other field (``request`` included)."""
    import dataclasses

    from bnmusic_bridge.export import ExportOptions
    from bnmusic_bridge.request import RenderRequest

    from .server import ServerConfig

    config = ServerConfig(
        port=0,
        tcp_port=0,
        roots=(root,),
        request=RenderRequest(generator=register_fake_generator()),
        export=ExportOptions(plot=False),
        worker_setup=(f"{__name__}:register_fake_generator",),
    )
    return dataclasses.replace(config, **changes)
