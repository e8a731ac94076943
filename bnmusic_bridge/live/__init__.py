"""Live BNMusic: blend a live noise feed in real time (``bnmusic live``).

:class:`LiveEngine` takes noise blocks and returns music blocks of the same size (see
:mod:`bnmusic_bridge.live.engine`); :func:`run_offline` feeds a recording through it
block by block. Audio I/O (JACK, the default device) lives in
:mod:`bnmusic_bridge.live.io`.
"""

from .engine import (
    MAX_BLOCK,
    MIN_BLOCK,
    LiveEngine,
    LiveRecording,
    LiveSettings,
    LiveStats,
    MeterPoint,
    lane_latency_s,
    run_offline,
)
from .ring import SampleRing

__all__ = [
    "MAX_BLOCK",
    "MIN_BLOCK",
    "LiveEngine",
    "LiveRecording",
    "LiveSettings",
    "LiveStats",
    "MeterPoint",
    "SampleRing",
    "lane_latency_s",
    "run_offline",
]
