"""The ``bnmusic`` command line: one parser built from the subcommand modules, each with
a ``register(subparsers)`` function, and :func:`main`.

Each subcommand builds a request and calls the library (see the modules listed in
:data:`COMMANDS`); shared flags live in :mod:`bnmusic_bridge.frontends.args`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from bnmusic_bridge import __version__
from bnmusic_bridge.errors import BNMusicError
from bnmusic_bridge.export.fileset import kept_message
from bnmusic_bridge.frontends import batch_cmd, eval_cmd, live_cmd, presets_cmd, render_cmd
from bnmusic_bridge.frontends.args import EXIT_ERROR, EXIT_INTERRUPTED
from bnmusic_bridge.frontends.osc import cli as serve_cmd

COMMANDS: tuple[Callable[[Any], None], ...] = (
    render_cmd.register,  # render, generators
    serve_cmd.register,
    presets_cmd.register,
    batch_cmd.register,
    eval_cmd.register,
    live_cmd.register,
)
"""Every subcommand's ``register(subparsers)``, in ``bnmusic --help`` order."""


def make_parser() -> argparse.ArgumentParser:
    """The ``bnmusic`` parser with every subcommand (imports nothing heavy: no torch)."""
    parser = argparse.ArgumentParser(
        prog="bnmusic",
        description="Blend environmental-noise stems into generated music (BNMusic) beside your DAW.",
    )
    parser.add_argument("--version", action="version", version=f"bnmusic-bridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for register in COMMANDS:
        register(sub)
    return parser


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM (a job scheduler, `timeout`, a DAW closing) gets the same clean stop as
    # Ctrl-C: no partial outputs, the batch manifest brought up to date.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``bnmusic``; returns the exit status (0 ok, 1 error, 2 usage, 130 interrupted)."""
    import signal
    import threading

    parser = make_parser()
    args = parser.parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)  # `serve` installs its own handlers
    try:
        return int(args.func(args) or 0)
    except BNMusicError as e:
        print(f"bnmusic: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except MemoryError:
        print(
            "bnmusic: error: out of memory while rendering; try a shorter stem (split it "
            "in the DAW) or a machine with more memory",
            file=sys.stderr,
        )
        return EXIT_ERROR
    except KeyboardInterrupt as e:
        # Outputs change as one set: say which one the folder holds now.
        print(f"bnmusic: interrupted; {kept_message(getattr(e, 'outputs_kept', None))}", file=sys.stderr)
        return EXIT_INTERRUPTED


def run(argv: Sequence[str] | None = None) -> None:
    """The ``bnmusic`` program (console script and ``python -m bnmusic_bridge``):
    :func:`main`, then exit without tearing the interpreter down.

    Tearing down torch, scipy and matplotlib's modules does nothing a finished command
    needs and took 1.6 to 1.8 s on a loaded 2-core machine (0.02 to 0.05 s without), so
    once output is flushed and the ``atexit`` handlers (logging, multiprocessing) have
    run, the process ends with ``os._exit``. Only when no other non-daemon thread is
    left; otherwise the interpreter exits as usual (it would wait for them).
    """
    import atexit
    import os
    import threading

    code = main(argv)
    others = [
        t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon
    ]
    if others:
        raise SystemExit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: nothing more to say anyway
        pass
    atexit._run_exitfuncs()
    os._exit(code)


if __name__ == "__main__":
    run()
