"""bnmusic-bridge: blend environmental-noise stems into generated music (BNMusic).

The one entry point is :func:`render` (numpy audio + sample rate) or :func:`render_file`
(a path); :func:`write_outputs` writes the stems, lanes, report and plot.
"""

from __future__ import annotations

from .errors import BNMusicError
from .export import ExportOptions, write_outputs
from .pipeline import render, render_file
from .request import RenderRequest
from .result import RenderResult
from .version import __version__

__all__ = [
    "BNMusicError",
    "ExportOptions",
    "RenderRequest",
    "RenderResult",
    "__version__",
    "render",
    "render_file",
    "write_outputs",
]
