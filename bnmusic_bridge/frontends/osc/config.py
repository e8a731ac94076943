"""What ``bnmusic serve`` decides before the sockets open: :class:`ServerConfig`, the
one home of the server's defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bnmusic_bridge.export.lanes import DEFAULT_TOLERANCE_DB

DEFAULT_UDP_PORT = 9750
DEFAULT_TCP_PORT = 9751
"""Clear of Reaper's usual 8000/9000 and AbletonOSC's 11000/11001."""
DEFAULT_MAX_STEM_S = 30 * 60.0
"""Longest stem the server renders by default: 30 minutes (a 20-minute stem already
needs several GB; bounded memory for long stems is separate work)."""
LANE_TIMETAGS = ("playback", "immediate")
ISOLATIONS = ("process", "thread")
BACKENDS = ("local", "ray")
"""Where jobs render: "local" (this machine, as ``isolation`` says) or "ray" (a cluster)."""


def default_render_threads() -> int:
    """Jobs run side by side in the worker: 2, but never every core (one stays with the
    server so replies stay fast while renders run)."""
    return max(1, min(2, (os.cpu_count() or 1) - 1))


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``bnmusic serve`` decides before the sockets open.

    Attributes:
        host: bind address; loopback unless ``allow_remote``.
        port: UDP port (0: any free port).
        tcp_port: TCP port (0: any free port; None: no TCP).
        roots: folders clients may read from and write to.
        out_dir: default output folder (None: next to each input).
        request: the base RenderRequest (server preset plus flags); its model,
            device, dtype and local_files_only hold for every job.
        export: the base ExportOptions.
        presets_dir: user presets folder for per-job presets.
        allow_remote: permit a non-loopback ``host``.
        max_queued: jobs that may wait; one more gets ``busy``.
        render_threads: threads running jobs (generation is serialized regardless).
        meter_hz: meter values per second of audio (0: no meter stream).
        stream_rate_hz: most lane/meter datagrams sent per second, over all jobs.
        lane_timetags: "playback" (a lane point's bundle is time-tagged stream start +
            its time, so timetag-aware receivers replay it in real time) or "immediate".
        lane_tolerance_db: lane compaction tolerance in dB.
        progress_interval_s: least time between progress messages of a job in a stage.
        isolation: "process" (renders run in one worker process that owns the model;
            the default) or "thread" (in the server process, for debugging).
        worker_setup: ``"module:function"`` names called where renders run before the
            first job, e.g. to register a generator.
        worker_niceness: how much the worker process lowers its CPU priority (Unix
            ``nice``, 0 to 19; renders are batch work, replies and the DAW come first).
        read_roots: further folders clients and presets may read from but never write
            to (plugin folders, impulse responses, a music library).
        secret: the shared secret every sender must present with ``/bnmusic/auth``
            before anything else (None: no authentication; required beyond loopback).
        allow_monitors: allow ``/bnmusic/subscribe host port all`` (a copy of every
            reply and push of every client); off by default, since jobs belong to
            their clients.
        model_generators: model generators (``riffusion``, ...) clients may choose
            besides the base request's own; the model is always the server's, loaded
            from disk only (``local_files_only`` is forced).
        max_stem_s: longest stem a job may render, in seconds (from its header, before
            it is read).
        tcp_idle_timeout_s: a TCP connection that sends nothing for this long and owns
            no queued or running job is closed (seconds).
        folder_quota: new output folders each client host may have created, over the
            server's lifetime.
        backend: "local" (renders on this machine, as ``isolation`` says) or "ray"
            (renders on a Ray cluster; the audio and results travel by value and the
            outputs are written here).
        ray_address: the Ray cluster's address, ``HOST:PORT`` (None: ``$RAY_ADDRESS``,
            else a local Ray instance); ``backend="ray"`` only.
        threads: torch/BLAS threads each job uses (``--threads``); None: the free cores
            (one kept for the server and the DAW, busy ones left out) shared among the
            ``render_threads`` jobs (:func:`bnmusic_bridge.threads.default_threads`).
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_UDP_PORT
    tcp_port: int | None = DEFAULT_TCP_PORT
    roots: tuple[Path, ...] = (Path("."),)
    out_dir: Path | None = None
    request: Any = None
    export: Any = None
    presets_dir: Path | None = None
    allow_remote: bool = False
    max_queued: int = 64
    render_threads: int = field(default_factory=default_render_threads)
    meter_hz: float = 10.0
    stream_rate_hz: float = 1000.0
    lane_timetags: str = "immediate"
    lane_tolerance_db: float = DEFAULT_TOLERANCE_DB
    progress_interval_s: float = 0.05
    isolation: str = "process"
    worker_setup: tuple[str, ...] = ()
    worker_niceness: int = 10
    read_roots: tuple[Path, ...] = ()
    secret: str | None = field(default=None, repr=False)
    allow_monitors: bool = False
    model_generators: tuple[str, ...] = ()
    max_stem_s: float = DEFAULT_MAX_STEM_S
    tcp_idle_timeout_s: float = 60.0
    folder_quota: int = 64
    backend: str = "local"
    ray_address: str | None = None
    threads: int | None = None
