#!/usr/bin/env python3
"""A small client for `bnmusic serve` (docs/osc.md), using python-osc only.

Install:  pip install python-osc   (nothing else; bnmusic need not be installed here)
Start the server first, e.g.:  bnmusic serve --root ~/Music/stems

Run:
    python examples/osc_client.py ping --count 5
    python examples/osc_client.py version
    python examples/osc_client.py presets
    python examples/osc_client.py status [JOB]
    python examples/osc_client.py render ~/Music/stems/train.wav --wait
    python examples/osc_client.py render train.wav --out renders --set smr_db=18 --set param.style=jazz --wait --json
    python examples/osc_client.py cancel JOB

`render --wait` prints progress, counts the lane and meter messages and prints the
output paths when the job is done (exit status 0), or the error (exit status 1).
`--result-file PATH` also writes the result as `key<TAB>value` lines (the format the
Reaper script's embedded fallback client writes too). Paths are sent as given: relative paths are
taken from the server's first --root, so an absolute path is the safer choice.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from pythonosc import osc_packet, udp_client
from pythonosc.osc_message_builder import OscMessageBuilder

DONE_FIELDS = ("music", "blended", "lambda_csv", "lambda_json", "report")


class Client:
    """Sends from one UDP socket and reads the server's replies on that same socket.

    ``local_port``: send from this port (a job answers only to the address and port
    that queued it, so a later `status JOB` or `cancel JOB` must come from the same
    one). ``secret``: sent with /bnmusic/auth first, for a server that needs it."""

    def __init__(self, host: str, port: int, local_port: int = 0, secret: str = "") -> None:
        self.udp = udp_client.UDPClient(host, port)
        if local_port:
            self.udp._sock.bind(("", local_port))  # python-osc has no public way to bind
        if secret:
            self.request("/bnmusic/auth", secret, reply="/bnmusic/auth/reply")

    def send(self, address: str, *args: Any) -> None:
        builder = OscMessageBuilder(address=address)
        for arg in args:
            builder.add_arg(arg)
        self.udp.send(builder.build())

    def messages(self, timeout_s: float):  # type: ignore[no-untyped-def]
        """Yield (address, [arguments]) until nothing arrives for ``timeout_s`` seconds.

        Bundles are unpacked; their time tags are ignored (the lane's points carry
        their time in seconds as an argument)."""
        while True:
            try:
                data = self.udp.receive(timeout=timeout_s)
            except (TimeoutError, OSError):
                return
            if not data:
                return
            try:
                packet = osc_packet.OscPacket(data)
            except osc_packet.ParseError as e:
                print(f"warning: unreadable reply ({e})", file=sys.stderr)
                continue
            for timed in packet.messages:
                yield timed.message.address, list(timed.message.params)

    def request(self, address: str, *args: Any, reply: str, timeout_s: float = 5.0) -> list[Any]:
        self.send(address, *args)
        for addr, values in self.messages(timeout_s):
            if addr == reply:
                return values
            if addr == "/bnmusic/error":
                raise SystemExit(f"error from the server: {values[1]}: {values[2]}")
        raise SystemExit(f"no reply to {address} within {timeout_s} s: is `bnmusic serve` running?")


def parse_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def cmd_ping(c: Client, args: argparse.Namespace) -> int:
    times_ms = []
    for i in range(args.count):
        t0 = time.perf_counter()
        values = c.request("/bnmusic/ping", i, "hello", reply="/bnmusic/pong")
        times_ms.append((time.perf_counter() - t0) * 1000)
        assert values == [i, "hello"], values
    times_ms.sort()
    print(
        f"{args.count} pings: median {times_ms[len(times_ms) // 2]:.2f} ms, max {times_ms[-1]:.2f} ms"
    )
    return 0


def cmd_version(c: Client, args: argparse.Namespace) -> int:
    api, package = c.request("/bnmusic/version", reply="/bnmusic/version/reply")
    print(f"address space {api}, bnmusic-bridge {package}")
    return 0


def cmd_presets(c: Client, args: argparse.Namespace) -> int:
    values = c.request("/bnmusic/presets", reply="/bnmusic/presets/reply", timeout_s=30)
    for name, description in zip(values[1::2], values[2::2], strict=True):
        print(f"{name:24s} {description}")
    return 0


def cmd_status(c: Client, args: argparse.Namespace) -> int:
    if args.job:
        job, state, stage, fraction, position = c.request(
            "/bnmusic/status", args.job, reply="/bnmusic/status/job"
        )
        print(
            f"{job}: {state} {stage} {fraction * 100:.0f} %"
            + (f", queue position {position}" if position >= 0 else "")
        )
        return 0
    values = c.request("/bnmusic/status", reply="/bnmusic/status/all")
    queued, running, finished, max_queued = values[:4]
    print(f"{queued} queued (of {max_queued}), {running} running, {finished} finished")
    for job, state in zip(values[4::2], values[5::2], strict=True):
        print(f"  {job}: {state}")
    return 0


def cmd_cancel(c: Client, args: argparse.Namespace) -> int:
    job, previous = c.request("/bnmusic/cancel", args.job, reply="/bnmusic/cancel/reply")
    print(f"{job}: cancel sent (it was {previous})")
    return 0


def cmd_render(c: Client, args: argparse.Namespace) -> int:
    job = args.job or f"py-{os.getpid()}-{int(time.time())}"
    noise = os.path.abspath(args.noise) if args.absolute else args.noise
    if args.out or args.set:
        pairs: list[Any] = []
        for item in args.set:
            key, _, value = item.partition("=")
            pairs += [key.strip(), parse_value(value.strip())]
        if args.preset:
            pairs += ["preset", args.preset]
        if args.prompt:
            pairs += ["prompt", args.prompt]
        if args.seed is not None:
            pairs += ["seed", args.seed]
        c.send("/bnmusic/render_ex", job, noise, args.out or "", *pairs)
    else:
        extra: list[Any] = [args.preset or "", args.prompt or ""]
        if args.seed is not None:
            extra.append(args.seed)
        c.send("/bnmusic/render", job, noise, *extra)
    result: dict[str, Any] = {"job": job}
    lane: list[tuple[float, float]] = []
    meters = 0
    notes: list[str] = []
    deadline = time.monotonic() + args.timeout
    acked = False
    while time.monotonic() < deadline:
        for address, values in c.messages(timeout_s=1.0):
            if values[:1] != [job] and address != "/bnmusic/error":
                continue
            if address == "/bnmusic/ack":
                acked = True
                print(f"{job}: queued", file=sys.stderr)
                if not args.wait:
                    return finish(result, args)
            elif address == "/bnmusic/progress":
                # job, stage, stage fraction[, whole job's fraction, seconds left or -1]
                line = f"{job}: {values[1]:8s} {values[2] * 100:5.1f} %"
                if len(values) >= 5:
                    line += f"  (job {values[3] * 100:3.0f} %"
                    line += f", ~{values[4]:.0f} s left)" if values[4] >= 0 else ")"
                print(line, file=sys.stderr)
            elif address == "/bnmusic/lane":
                lane.append((values[1], values[2]))
            elif address == "/bnmusic/meter":
                meters += 1
            elif address == "/bnmusic/warning":  # API 1.2: shortfall, prompt, render
                notes.append(values[2])
                print(f"{job}: warning ({values[1]}): {values[2]}", file=sys.stderr)
            elif address == "/bnmusic/error" and values[0] in (
                job,
                "/bnmusic/render",
                "/bnmusic/render_ex",
                "#packet",
            ):
                result.update(error=values[1], message=values[2])
                print(f"{job}: error {values[1]}: {values[2]}", file=sys.stderr)
                return finish(result, args)
            elif address == "/bnmusic/done":
                result.update(dict(zip(DONE_FIELDS, values[1:6], strict=True)))
                coverage, nmr_db, lo_db, hi_db, lane_n, meter_n = values[6:12]
                result.update(
                    coverage=coverage,
                    nmr_db=nmr_db,
                    lambda_min_db=lo_db,
                    lambda_max_db=hi_db,
                    lane_points=len(lane),
                    meter_points=meters,
                    lane=lane,
                    warnings=notes,
                )
                result.update(dict(zip(values[12::2], values[13::2], strict=True)))
                if (lane_n, meter_n) != (len(lane), meters):
                    print(
                        f"warning: {lane_n} lane / {meter_n} meter messages sent, {len(lane)} / {meters} received (UDP drops)",
                        file=sys.stderr,
                    )
                return finish(result, args)
            if time.monotonic() > deadline:
                break
    result.update(
        error="timeout", message=f"no {'done' if acked else 'ack'} within {args.timeout} s"
    )
    return finish(result, args)


def finish(result: dict[str, Any], args: argparse.Namespace) -> int:
    if args.json:
        print(
            json.dumps(
                {k: v for k, v in result.items() if k != "lane"} | {"lane": result.get("lane", [])},
                indent=1,
            )
        )
    elif "error" not in result and "music" in result:
        print(
            f"coverage {result['coverage'] * 100:.1f} %, NMR {result['nmr_db']:.1f} dB, "
            f"lambda {result['lambda_min_db']:+.1f}..{result['lambda_max_db']:+.1f} dB"
        )
        for kind in DONE_FIELDS:
            print(f"  {kind:12s} {result[kind]}")
    if args.result_file:
        with open(args.result_file + ".tmp", "w", encoding="utf-8") as f:
            for key, value in result.items():
                if key == "warnings":  # one line per key: the warnings joined
                    f.write(f"{key}\t{' | '.join(value)}\n")
                elif key != "lane":
                    f.write(f"{key}\t{value}\n")
        os.replace(args.result_file + ".tmp", args.result_file)  # readers never see half a file
    return 1 if "error" in result else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="client for bnmusic serve (OSC)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9750)
    p.add_argument(
        "--local-port",
        type=int,
        default=int(os.environ.get("BNMUSIC_OSC_LOCAL_PORT", "0")),
        help="send from this UDP port, so status/cancel of a job work from a later run "
        "(jobs answer only to their sender); default: any free port",
    )
    p.add_argument(
        "--secret",
        default=os.environ.get("BNMUSIC_OSC_SECRET", ""),
        help="the server's shared secret (default: $BNMUSIC_OSC_SECRET), sent first",
    )
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("ping")
    s.add_argument("--count", type=int, default=3)
    s.set_defaults(func=cmd_ping)
    sub.add_parser("version").set_defaults(func=cmd_version)
    sub.add_parser("presets").set_defaults(func=cmd_presets)
    s = sub.add_parser("status")
    s.add_argument("job", nargs="?")
    s.set_defaults(func=cmd_status)
    s = sub.add_parser("cancel")
    s.add_argument("job")
    s.set_defaults(func=cmd_cancel)
    s = sub.add_parser("render")
    s.add_argument("noise", help="noise stem path (inside the server's --root)")
    s.add_argument("--job", help="job id (default: py-PID-TIME)")
    s.add_argument("--preset")
    s.add_argument("--prompt")
    s.add_argument("--seed", type=int)
    s.add_argument("--out", help="output folder inside the server's roots")
    s.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override, e.g. smr_db=18 or param.style=jazz",
    )
    s.add_argument("--absolute", action="store_true", help="send the path made absolute here")
    s.add_argument("--wait", action="store_true", help="wait for done or error")
    s.add_argument("--timeout", type=float, default=600.0, help="seconds to wait (default 600)")
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    s.add_argument("--result-file", help="also write the result as key<TAB>value lines")
    s.set_defaults(func=cmd_render)
    args = p.parse_args(argv)
    return int(args.func(Client(args.host, args.port, args.local_port, args.secret), args))


if __name__ == "__main__":
    raise SystemExit(main())
