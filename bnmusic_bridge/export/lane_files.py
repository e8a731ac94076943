"""Encoding every lane file kind of a render (JSON, CSV, MIDI, the Reaper files, the
metering summary) in one pass: the work two kinds share is done once."""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import ParameterError
from ..result import RenderResult
from .lanes import LANE_SUFFIXES, LaneOptions, lane_csv, lane_json
from .midi import result_midi
from .outputs import OutputPaths
from .reaper import result_reaper_files
from .summary import MeteringSummary, metering_summary, summary_markdown, summary_plot_png


def lane_outputs(
    result: RenderResult,
    kinds: Iterable[str],
    *,
    paths: OutputPaths | None = None,
    options: LaneOptions | None = None,
    summary: MeteringSummary | None = None,
) -> dict[str, bytes]:
    """Encode every file kind in ``kinds`` (see :data:`LANE_SUFFIXES`); work shared
    between kinds (the metering summary) is done once.

    ``paths`` gives the Reaper track the music stem's file name and the summary the
    PNG's name; without it the Reaper track names ``<stem>.music.wav`` next to it.
    ``summary``: a metering summary already computed for ``result`` (else computed
    here when a summary kind is asked for).
    """
    opts = options or LaneOptions()
    opts.check()
    kinds = list(kinds)
    unknown = [k for k in kinds if k not in LANE_SUFFIXES]
    if unknown:
        raise ParameterError(
            f"lane file kind(s) {unknown} unknown; use some of {list(LANE_SUFFIXES)}"
        )
    out: dict[str, bytes] = {}
    if summary is None and any(k.startswith("summary") for k in kinds):
        summary = metering_summary(result, tolerance_db=opts.tolerance_db)
    for kind in kinds:
        if kind == "json":
            out[kind] = lane_json(result, opts)
        elif kind == "csv":
            out[kind] = lane_csv(result, opts)
        elif kind == "midi":
            out[kind] = result_midi(result, opts)
        elif kind.startswith("reaper"):
            if kind not in out:
                music = paths.music if paths is not None else None
                out.update(result_reaper_files(result, opts, music_path=music))
        elif kind == "summary":
            png = paths.lanes.get("summary-png") if paths is not None else None
            assert summary is not None
            out[kind] = summary_markdown(summary, plot_name=png.name if png is not None else None)
        elif kind == "summary-png":
            assert summary is not None
            out[kind] = summary_plot_png(result, summary)
    return {k: out[k] for k in kinds}


def lane_files(
    result: RenderResult,
    fmt: str,
    *,
    paths: OutputPaths | None = None,
    options: LaneOptions | None = None,
) -> bytes:
    """One lane file encoded: ``fmt`` is a file kind of :data:`LANE_SUFFIXES` (for the
    single-file formats, the format's own name: "json", "csv", "midi")."""
    if fmt not in LANE_SUFFIXES:
        raise ParameterError(f"lane file kind {fmt!r} unknown; use one of {list(LANE_SUFFIXES)}")
    return lane_outputs(result, [fmt], paths=paths, options=options)[fmt]
