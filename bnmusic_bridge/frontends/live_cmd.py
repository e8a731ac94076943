"""``bnmusic live``: blend a live noise feed in real time (JACK, or the default device).

The engine is :class:`bnmusic_bridge.live.LiveEngine`; this module parses flags, opens
the stream, sends the meter over OSC, writes ``--record DIR`` and prints the session's
counters. Ctrl-C (or SIGTERM) stops the stream cleanly and still writes the recording.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from bnmusic_bridge.errors import OutputExistsError, ParameterError
from bnmusic_bridge.frontends.args import EXIT_INTERRUPTED, EXIT_OK, add_render_args, build_request

OSC_JOB_ID = "live"
"""The job id the live meter messages carry (a render's carry its job's id)."""


def register(subparsers: Any) -> None:
    """Add the ``live`` command to the ``bnmusic`` parser."""
    p = subparsers.add_parser(
        "live",
        help="blend a live noise feed in real time (JACK, or the default sound device)",
        description="Listen to the noise (JACK ports or the default input), play music that "
        "follows it with the lambda lane computed as it goes. See docs/live.md.",
    )
    add_render_args(p)
    g = p.add_argument_group("live audio")
    g.add_argument(
        "--backend",
        choices=["auto", "jack", "device"],
        default="auto",
        help="JACK, the default sound device, or auto: JACK if a server runs (default auto)",
    )
    g.add_argument("--jack-server", help="JACK server name (default: the default server)")
    g.add_argument("--client-name", default="bnmusic", help="JACK client name (default bnmusic)")
    g.add_argument(
        "--inputs",
        default="",
        help="comma-separated JACK ports to connect to our inputs, e.g. system:capture_1",
    )
    g.add_argument(
        "--outputs",
        default="",
        help="comma-separated JACK ports to connect our outputs to, e.g. system:playback_1,system:playback_2",
    )
    g.add_argument(
        "--input-channels", type=int, default=1, help="noise channels (mixed to mono; default 1)"
    )
    g.add_argument("--output-channels", type=int, default=2, help="output channels (default 2)")
    g.add_argument(
        "--monitor", action="store_true", help="add the noise to the outputs (music plus monitor)"
    )
    g.add_argument(
        "--block", type=int, default=256, help="device backend: frames per block (default 256)"
    )
    g.add_argument(
        "--ahead-s",
        type=float,
        default=3.0,
        help="music generated ahead of the play head, s (default 3)",
    )
    g.add_argument(
        "--warm-up-s",
        type=float,
        default=4.0,
        help="noise heard before the music starts, s (default 4)",
    )
    g.add_argument(
        "--duration", type=float, help="stop after this many seconds (default: run until Ctrl-C)"
    )
    g.add_argument(
        "--record",
        type=Path,
        metavar="DIR",
        help="write noise.wav, music.wav, lane.csv, lane.json and session.json to DIR at the end",
    )
    g.add_argument("--force", action="store_true", help="overwrite files in the --record folder")
    g.add_argument(
        "--osc",
        metavar="HOST:PORT",
        help="send the meter (coverage, lambda, loudness) as OSC messages to HOST:PORT",
    )
    g.add_argument(
        "--json", action="store_true", help="print the session's counters as JSON at the end"
    )
    p.set_defaults(func=cmd_live)


def parse_host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``:PORT`` means localhost)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ParameterError(f"--osc {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9001")
    return host or "127.0.0.1", int(port)


class OscMeter:
    """Sends every Stage 2 solve as the messages a render's stream uses:
    ``/bnmusic/meter live t coverage`` and ``/bnmusic/lane live t lambda_db``, plus
    ``/bnmusic/loudness live t noise_lufs music_lufs`` (live only). UDP, fire and forget."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sent = 0

    def __call__(self, point: Any) -> None:
        from bnmusic_bridge.frontends.osc.protocol import PREFIX, encode_message

        t = float(point.time_s)
        for packet in (
            encode_message(PREFIX + "meter", OSC_JOB_ID, t, float(point.coverage)),
            encode_message(PREFIX + "lane", OSC_JOB_ID, t, float(point.lambda_db)),
            encode_message(
                PREFIX + "loudness", OSC_JOB_ID, t, float(point.noise_lufs), float(point.music_lufs)
            ),
        ):
            try:
                self.sock.sendto(packet, self.address)
                self.sent += 1
            except OSError:
                pass  # a meter must never stop the music

    def close(self) -> None:
        self.sock.close()


def cmd_live(args: argparse.Namespace) -> int:
    """Run ``bnmusic live`` until ``--duration`` or Ctrl-C."""
    from bnmusic_bridge.audio import check_output_dir
    from bnmusic_bridge.live import LiveEngine, LiveSettings, lane_latency_s
    from bnmusic_bridge.live.io import RECORD_FILES, open_stream, run_stream, write_recording

    request = build_request(args)
    base = LiveSettings(
        input_channels=args.input_channels,
        output_channels=args.output_channels,
        monitor=args.monitor,
        ahead_s=args.ahead_s,
        warm_up_s=args.warm_up_s,
        history_s=max(12.0, args.warm_up_s),
        record=args.record is not None,
    )
    if args.record is not None:
        check_output_dir(args.record)
        taken = [n for n in RECORD_FILES if (args.record / n).exists()]
        if taken and not args.force:
            # refused now, not after the session: the recording would be lost
            raise OutputExistsError(
                f"{args.record}: {', '.join(taken)} exist already; pass --force to overwrite"
            )
    meter = OscMeter(parse_host_port(args.osc)) if args.osc else None
    LiveEngine(request, base)  # refuse a bad request or settings before any audio opens
    _one_torch_thread()

    def make_engine(rate: int) -> LiveEngine:
        return LiveEngine(request, replace(base, sample_rate_hz=rate), on_meter=meter)

    split = (
        [p.strip() for p in args.inputs.split(",") if p.strip()],
        [p.strip() for p in args.outputs.split(",") if p.strip()],
    )
    stream = open_stream(
        make_engine,
        args.backend,
        client_name=args.client_name,
        server_name=args.jack_server,
        connect_inputs=split[0],
        connect_outputs=split[1],
        block=args.block,
    )
    info, engine = stream.info, stream.engine
    settings = engine.settings
    print(
        f"bnmusic live: {info.backend} at {info.sample_rate_hz} Hz, {info.block}-frame blocks; "
        f"music after {settings.warm_up_s:g} s; lane latency {lane_latency_s(request, settings):.2f} s; "
        "Ctrl-C stops",
        file=sys.stderr,
    )
    status = EXIT_OK
    try:
        run_stream(stream, args.duration)
    except KeyboardInterrupt:
        status = EXIT_INTERRUPTED
        print("bnmusic live: stopped", file=sys.stderr)
    finally:
        if meter is not None:
            meter.close()
    stats = engine.stats
    summary: dict[str, Any] = {"stream": info.__dict__, "stats": stats.as_dict()}
    if args.record is not None:
        written = write_recording(args.record, engine.recording(), info, force=args.force)
        summary["recorded"] = [str(p) for p in written]
    if args.json:
        print(json.dumps(summary, indent=1, default=str))
    else:
        print(
            f"bnmusic live: {stats.frames / settings.sample_rate_hz:.1f} s, {stats.underruns} underruns, "
            f"{stats.late_blocks} late blocks, {info.xruns} xruns reported by the backend, "
            f"callback CPU max {stats.max_callback_s * 1e3:.2f} ms",
            file=sys.stderr,
        )
    if status == EXIT_INTERRUPTED:
        return EXIT_OK  # Ctrl-C is how a live session ends: not an error
    return status


def _one_torch_thread() -> None:
    # The worker's mel spectrograms run in torch; one intra-op thread leaves the other
    # cores to the audio thread and the sound server.
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
