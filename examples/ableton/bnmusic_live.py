#!/usr/bin/env python3
"""Ableton Live -> bnmusic: send the selected Session clip's audio file to `bnmusic serve`.

Install:
    pip install python-osc
    AbletonOSC (https://github.com/ideoforms/AbletonOSC) as a Live control surface
    (Live 11 or later; Preferences > Link, Tempo & MIDI > Control Surface: AbletonOSC).
    Start the server with a root that holds your Live project's samples, e.g.
        bnmusic serve --root "~/Music/Ableton/My Project"

Run (Live open, the noise clip selected in Session view):
    python examples/ableton/bnmusic_live.py [--preset NAME] [--out renders] [--no-track]

What it does, as far as AbletonOSC goes: asks Live for the selected clip
(/live/view/get/selected_clip), its audio file (/live/clip/get/file_path) and the song
tempo, sends the file to bnmusic (/bnmusic/render_ex), waits for /bnmusic/done, creates
an audio track named "bnmusic music" next to the noise's track, and prints the music
stem, the lane file and the clip-envelope steps in beats. AbletonOSC cannot import audio
or write envelopes, so the last step is yours: drag the music stem into the new track's
slot, or use the Max for Live device in examples/ableton/README.md, which does both.

The clip's file must be the noise you hear: consolidate (Cmd/Ctrl-J), freeze and flatten,
or bounce the track first when the clip has effects or warping.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from typing import Any

from pythonosc import osc_packet
from pythonosc.osc_message_builder import OscMessageBuilder


def encode(address: str, *args: Any) -> bytes:
    builder = OscMessageBuilder(address=address)
    for arg in args:
        builder.add_arg(arg)
    return builder.build().dgram


class Udp:
    """One UDP socket, bound to ``listen_port`` (0: any), reading OSC replies."""

    def __init__(self, listen_port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", listen_port))

    def send(self, target: tuple[str, int], address: str, *args: Any) -> None:
        self.sock.sendto(encode(address, *args), target)

    def wait(self, address: str, timeout_s: float, match: Any = None) -> list[Any]:
        """Arguments of the next message to ``address`` (bundles unpacked) for which
        ``match(args)`` is true; raises TimeoutError."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {address} within {timeout_s} s")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError as e:
                raise TimeoutError(f"no {address} within {timeout_s} s") from e
            for timed in osc_packet.OscPacket(data).messages:
                args = list(timed.message.params)
                if timed.message.address == "/bnmusic/error" and address.startswith("/bnmusic/"):
                    raise RuntimeError(f"bnmusic: {args[1]}: {args[2]}")
                if timed.message.address == address and (match is None or match(args)):
                    return args


def lane_steps(csv_path: str, tempo_bpm: float) -> list[tuple[float, float]]:
    """(time in beats from the clip start, gain in dB) for each lane point."""
    steps = []
    with open(csv_path, encoding="utf-8") as f:
        next(f)
        for line in f:
            t_s, gain_db, _ = line.strip().split(",")
            steps.append((float(t_s) * tempo_bpm / 60.0, float(gain_db)))
    return steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--live-port", type=int, default=11000, help="AbletonOSC's port (default 11000)")
    p.add_argument(
        "--live-reply-port",
        type=int,
        default=11001,
        help="where AbletonOSC replies (default 11001)",
    )
    p.add_argument("--host", default="127.0.0.1", help="bnmusic serve host")
    p.add_argument("--port", type=int, default=9750, help="bnmusic serve UDP port (default 9750)")
    p.add_argument("--preset", default="")
    p.add_argument("--out", default="", help="output folder inside the server's roots")
    p.add_argument(
        "--no-track", action="store_true", help="do not create the 'bnmusic music' track"
    )
    p.add_argument("--timeout", type=float, default=900.0)
    args = p.parse_args(argv)
    live_target = ("127.0.0.1", args.live_port)
    live = Udp(args.live_reply_port)
    try:
        live.send(live_target, "/live/view/get/selected_clip")
        track, scene = live.wait("/live/view/get/selected_clip", 5.0)[:2]
        live.send(live_target, "/live/clip/get/file_path", track, scene)
        path = live.wait("/live/clip/get/file_path", 5.0, lambda a: a[:2] == [track, scene])[2]
        live.send(live_target, "/live/song/get/tempo")
        tempo_bpm = float(live.wait("/live/song/get/tempo", 5.0)[-1])
    except TimeoutError:
        print(
            "no answer from AbletonOSC on port 11000: is Live open with AbletonOSC as a control surface?",
            file=sys.stderr,
        )
        return 1
    if not path:
        print(
            f"the selected clip (track {track}, scene {scene}) has no audio file: is it a MIDI clip?",
            file=sys.stderr,
        )
        return 1
    print(f"noise: track {track}, scene {scene}: {path} (tempo {tempo_bpm:g} BPM)")

    bn = Udp()
    job = f"live-{track}-{scene}-{int(time.time())}-{os.urandom(3).hex()}"  # never reused
    overrides = ["preset", args.preset] if args.preset else []
    bn.send((args.host, args.port), "/bnmusic/render_ex", job, path, args.out, *overrides)
    try:
        bn.wait("/bnmusic/ack", 5.0, lambda a: a[0] == job)
        done = bn.wait("/bnmusic/done", args.timeout, lambda a: a[0] == job)
    except TimeoutError as e:
        print(f"bnmusic serve at {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    except RuntimeError as e:
        print(e, file=sys.stderr)
        return 1
    music, blended, lane_csv = done[1], done[2], done[3]
    print(f"coverage {done[6] * 100:.1f} %, lambda {done[8]:+.1f}..{done[9]:+.1f} dB")
    print(f"music stem:   {music}\nblended stem: {blended}\nlambda lane:  {lane_csv}")
    if not args.no_track:
        live.send(live_target, "/live/song/create_audio_track", track + 1)
        live.send(live_target, "/live/track/set/name", track + 1, "bnmusic music")
        print(
            f"created audio track {track + 1} 'bnmusic music': drag the music stem into scene {scene}'s slot"
        )
    steps = lane_steps(lane_csv, tempo_bpm)
    print(
        f"lambda lane as clip-envelope steps (beats from the clip start, dB), {len(steps)} points:"
    )
    for beat, gain_db in steps[:8]:
        print(f"  {beat:8.3f}  {gain_db:+6.2f} dB")
    if len(steps) > 8:
        print("  ...")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
