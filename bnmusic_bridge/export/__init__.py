"""Writing a render's results to disk: stems, lambda lanes, the report and the plot.

Every file is written atomically (temporary name, then rename) and none is overwritten
unless ``force`` is given. All target names are checked before the first file is
written, so a refused export leaves nothing behind.

Modules: :mod:`.outputs` (options and names), :mod:`.write` (:func:`write_outputs`),
:mod:`.lanes` (lane points, compaction, JSON/CSV), :mod:`.midi`, :mod:`.reaper`,
:mod:`.summary` (the lane's DAW and metering formats), :mod:`.lane_files` (every lane
file kind encoded), :mod:`.report` (the JSON report), :mod:`.plot` (the PNG).
"""

from __future__ import annotations

from .lane_files import lane_files
from .lanes import LANE_FORMATS, LaneOptions, compact_lane
from .outputs import ExportOptions, OutputPaths, output_paths
from .write import write_outputs

__all__ = [
    "ExportOptions",
    "OutputPaths",
    "output_paths",
    "write_outputs",
    "LANE_FORMATS",
    "LaneOptions",
    "compact_lane",
    "lane_files",
]
