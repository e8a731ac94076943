"""Audio in and out for the live engine: a JACK client, or the default sound device.

JACK (``jack`` module, the JACK-Client package; PipeWire's JACK works the same) is
preferred; where no JACK server runs, :func:`open_stream` falls back to the system's
default device through PortAudio (``sounddevice``). Both call
:meth:`~bnmusic_bridge.live.engine.LiveEngine.process` from the audio thread with the
port buffers; everything else (the engine's worker, recording, meters) runs elsewhere.
Both modules are imported only when a stream is opened (the ``live`` extra).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LiveIOError, OutputExistsError, ParameterError
from .engine import LiveEngine, LiveRecording

BACKENDS = ("auto", "jack", "device")


@dataclass
class StreamInfo:
    """What the opened stream is.

    Attributes:
        backend: ``"jack"`` or ``"device"``.
        sample_rate_hz: the stream's rate.
        block: frames per period (JACK's buffer size, or the device block).
        inputs, outputs: the engine's own port names (JACK) or channel counts (device).
        connected: connections made, ``(source, destination)`` port names (JACK).
        xruns: xruns the server or device reported (not necessarily caused by us).
    """

    backend: str
    sample_rate_hz: int
    block: int
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    connected: list[tuple[str, str]] = field(default_factory=list)
    xruns: int = 0
    xrun_times_s: list[float] = field(default_factory=list)


class JackStream:
    """The engine as a JACK client: ``in_1..in_N`` and ``out_1..out_M`` ports.

    Args:
        make_engine: builds the engine for the server's sample rate (Hz).
        client_name: the JACK client's name.
        server_name: the JACK server to join (None: the default server).
        connect_inputs: ports to connect to ``in_1..`` in order (e.g. ``system:capture_1``).
        connect_outputs: ports to connect ``out_1..`` to, in order.
    """

    def __init__(
        self,
        make_engine: Callable[[int], LiveEngine],
        *,
        client_name: str = "bnmusic",
        server_name: str | None = None,
        connect_inputs: Sequence[str] = (),
        connect_outputs: Sequence[str] = (),
    ) -> None:
        try:
            import jack
        except ImportError as e:  # pragma: no cover - depends on the install
            raise LiveIOError(
                "JACK needs the JACK-Client package (pip install 'bnmusic-bridge[live]') and "
                f"the JACK library: {e}"
            ) from e
        try:
            self.client = jack.Client(client_name, servername=server_name, no_start_server=True)
        except jack.JackOpenError as e:
            raise LiveIOError(
                f"no JACK server {server_name or '(default)'} to connect to: {e}"
            ) from e
        c = self.client
        try:
            engine = make_engine(c.samplerate)
        except BaseException:
            c.close()
            raise
        self.engine = engine
        s = engine.settings
        if c.blocksize > s.max_block:
            c.close()
            raise LiveIOError(
                f"the JACK period is {c.blocksize} frames; the engine takes at most {s.max_block}"
            )
        self.inports = [c.inports.register(f"in_{i + 1}") for i in range(s.input_channels)]
        self.outports = [c.outports.register(f"out_{i + 1}") for i in range(s.output_channels)]
        self._in = np.zeros((s.input_channels, s.max_block), dtype=np.float32)
        self._out = np.zeros((s.output_channels, s.max_block), dtype=np.float32)
        self.info = StreamInfo(
            backend="jack",
            sample_rate_hz=c.samplerate,
            block=c.blocksize,
            inputs=[p.name for p in self.inports],
            outputs=[p.name for p in self.outports],
        )
        self._connect_inputs = list(connect_inputs)
        self._connect_outputs = list(connect_outputs)
        self.failed: str | None = None
        engine.ramp_for(c.blocksize)
        c.set_process_callback(self._process)
        c.set_xrun_callback(self._xrun)
        c.set_shutdown_callback(self._shutdown)
        c.set_blocksize_callback(self._blocksize)

    def _process(self, frames: int) -> None:
        # The audio thread: copy the port buffers in, let the engine fill the block,
        # copy it out. The arrays are preallocated; get_array() wraps JACK's buffer.
        inp, out = self._in[:, :frames], self._out[:, :frames]
        for i, port in enumerate(self.inports):
            inp[i] = port.get_array()
        self.engine.process(inp[0] if inp.shape[0] == 1 else inp, out)
        for i, port in enumerate(self.outports):
            port.get_array()[:] = out[i]

    def _xrun(self, delay_usecs: float) -> None:
        self.info.xruns += 1
        self.info.xrun_times_s.append(self.engine.pos / self.engine.settings.sample_rate_hz)

    def _shutdown(self, status: Any, reason: str) -> None:
        self.failed = f"the JACK server shut down: {reason}"

    def _blocksize(self, blocksize: int) -> None:
        if blocksize > self.engine.settings.max_block:
            self.failed = f"the JACK period changed to {blocksize} frames (most {self.engine.settings.max_block})"

    def start(self) -> None:
        """Activate the client and make the connections asked for."""
        self.client.activate()
        for src, port in zip(self._connect_inputs, self.inports, strict=False):
            self.client.connect(src, port)
            self.info.connected.append((src, port.name))
        for port, dst in zip(self.outports, self._connect_outputs, strict=False):
            self.client.connect(port, dst)
            self.info.connected.append((port.name, dst))

    def close(self) -> None:
        """Deactivate and close the client (idempotent)."""
        with contextlib.suppress(Exception):  # closing after a server shutdown
            self.client.deactivate()
        self.client.close()


class DeviceStream:
    """The engine on the default sound device (PortAudio via ``sounddevice``)."""

    def __init__(
        self,
        make_engine: Callable[[int], LiveEngine],
        *,
        block: int = 256,
        sample_rate_hz: int = 44_100,
        device: Any = None,
    ) -> None:
        try:
            import sounddevice as sd
        except (ImportError, OSError) as e:  # pragma: no cover - depends on the install
            raise LiveIOError(
                f"the default-device backend needs sounddevice and PortAudio: {e}"
            ) from e
        engine = make_engine(sample_rate_hz)
        s = engine.settings
        if not 64 <= block <= s.max_block:
            raise ParameterError(f"--block must be 64..{s.max_block} frames, got {block}")
        self.engine = engine
        engine.ramp_for(block)
        self.info = StreamInfo(
            backend="device",
            sample_rate_hz=s.sample_rate_hz,
            block=block,
            inputs=[str(s.input_channels)],
            outputs=[str(s.output_channels)],
        )
        self.failed: str | None = None
        try:
            self.stream = sd.Stream(
                samplerate=s.sample_rate_hz,
                blocksize=block,
                channels=(s.input_channels, s.output_channels),
                dtype="float32",
                callback=self._callback,
                device=device,
            )
        except Exception as e:  # noqa: BLE001 - PortAudio errors have no common base
            raise LiveIOError(
                f"could not open the default sound device at {s.sample_rate_hz} Hz: {e}"
            ) from e

    def _callback(
        self, indata: np.ndarray, outdata: np.ndarray, frames: int, t: Any, status: Any
    ) -> None:
        device_callback(self.engine, self.info, indata, outdata, status)

    def start(self) -> None:
        self.stream.start()

    def close(self) -> None:
        self.stream.stop()
        self.stream.close()


def device_callback(
    engine: LiveEngine, info: StreamInfo, indata: np.ndarray, outdata: np.ndarray, status: Any
) -> None:
    """PortAudio's callback body: ``indata``/``outdata`` are ``(frames, channels)``
    (interleaved, as sounddevice gives them); the engine takes ``(channels, frames)``
    views of them (no copy). An input overflow or output underflow counts as an xrun."""
    if status.input_overflow or status.output_underflow:
        info.xruns += 1
        info.xrun_times_s.append(engine.pos / engine.settings.sample_rate_hz)
    noise = indata[:, 0] if indata.shape[1] == 1 else indata.T
    engine.process(noise, outdata.T)


def open_stream(
    make_engine: Callable[[int], LiveEngine],
    backend: str = "auto",
    *,
    client_name: str = "bnmusic",
    server_name: str | None = None,
    connect_inputs: Sequence[str] = (),
    connect_outputs: Sequence[str] = (),
    block: int = 256,
) -> JackStream | DeviceStream:
    """Open a stream on JACK, or (``auto`` with no JACK server) the default device
    (at 44.1 kHz), with the engine ``make_engine(sample_rate_hz)`` builds for its rate."""
    if backend not in BACKENDS:
        raise ParameterError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend in ("auto", "jack"):
        try:
            return JackStream(
                make_engine,
                client_name=client_name,
                server_name=server_name,
                connect_inputs=connect_inputs,
                connect_outputs=connect_outputs,
            )
        except LiveIOError as e:
            if backend == "jack":
                raise
            jack_error = e
        try:
            return DeviceStream(make_engine, block=block)
        except LiveIOError as e:
            raise LiveIOError(f"{jack_error}; and no default device either: {e}") from e
    return DeviceStream(make_engine, block=block)


def run_stream(
    stream: JackStream | DeviceStream, duration_s: float | None = None, poll_s: float = 0.1
) -> StreamInfo:
    """Start the worker and the stream; run until ``duration_s`` (None: until Ctrl-C);
    stop both cleanly (also on Ctrl-C, which is re-raised after). Raises
    :class:`LiveIOError` if the backend or the worker failed."""
    engine = stream.engine
    engine.start(threaded=True)
    t0 = time.monotonic()
    try:
        stream.start()
        while duration_s is None or time.monotonic() - t0 < duration_s:
            time.sleep(poll_s)
            if stream.failed:
                raise LiveIOError(stream.failed)
            if engine.error is not None:
                raise LiveIOError(f"the live worker failed: {engine.error!r}") from engine.error
    finally:
        stream.close()
        engine.stop()
    return stream.info


RECORD_FILES = ("noise.wav", "music.wav", "lane.csv", "lane.json", "session.json")
"""What ``--record DIR`` writes."""


def write_recording(
    folder: str | Path, rec: LiveRecording, info: StreamInfo | None = None, *, force: bool = False
) -> list[Path]:
    """Write a live session: noise and music (32-bit float WAV), the lane (CSV and
    JSON: time s, lambda dB, applied gain dB) and the session's counters and meter, each
    atomically; refuses existing files unless ``force``."""
    from ..audio import check_output_dir, write_audio, write_bytes_atomic

    d = check_output_dir(folder)
    d.mkdir(parents=True, exist_ok=True)
    if not force:
        taken = [n for n in RECORD_FILES if (d / n).exists()]
        if taken:
            raise OutputExistsError(
                f"{d}: {', '.join(taken)} exist already; pass --force to overwrite"
            )
    sr = rec.sample_rate_hz
    out = [
        write_audio(d / "noise.wav", rec.noise[None, :], sr, bit_depth=32, force=force),
        write_audio(d / "music.wav", rec.music, sr, bit_depth=32, force=force),
    ]
    rows = ["time_s,lambda_db,gain_db"] + [
        f"{t:.2f},{lam:.3f},{g:.3f}"
        for t, lam, g in zip(rec.lane_times_s, rec.lane_db, rec.gain_db, strict=True)
    ]
    out.append(write_bytes_atomic(d / "lane.csv", ("\n".join(rows) + "\n").encode(), force=force))
    lane = {
        "units": {
            "time": "s",
            "lambda": "dB re the loudness-matched music",
            "gain": "dB on the generator output",
        },
        "time_s": [round(float(t), 2) for t in rec.lane_times_s],
        "lambda_db": [round(float(v), 3) for v in rec.lane_db],
        "gain_db": [round(float(v), 3) for v in rec.gain_db],
    }
    out.append(write_bytes_atomic(d / "lane.json", json.dumps(lane).encode(), force=force))
    session = {
        "sample_rate_hz": sr,
        "duration_s": rec.noise.size / sr,
        "stats": rec.stats.as_dict(),
        "stream": None if info is None else info.__dict__,
        "meter": [
            {
                k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in m.__dict__.items()
            }
            for m in rec.meter
        ],
    }
    out.append(
        write_bytes_atomic(
            d / "session.json", json.dumps(session, indent=1, default=str).encode(), force=force
        )
    )
    return out
