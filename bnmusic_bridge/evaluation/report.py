"""Writing an evaluation's report: Markdown, CSV, JSON and the PNG plots, atomically."""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import io
import json
import math
import os
import platform
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..alignment import DEFAULT_TOLERANCE_MS
from ..audio import write_bytes_atomic
from ..errors import OutputExistsError
from ..request import THRESHOLD_MODELS, field_default
from .methods import method_spec
from .metrics import SCENARIO_LABELS, SCENARIOS, ClipMetrics
from .plots import plot_files
from .run import EvalResult
from .tables import (
    DISTRIBUTION_COLUMNS,
    NEEDED_PERCENT,
    TABLE_COLUMNS,
    TableRow,
    ablation_table,
    markdown_paired,
    markdown_table,
    paired_table,
    report_categories,
    table1,
    table_records,
)

REPORT_FILES = (
    "report.md",
    "results.csv",
    "table1.csv",
    "ablation.csv",
    "paired.csv",
    "results.json",
    "lufs90_by_method.png",
    "coverage_by_method.png",
    "alignment_vs_level.png",
)
"""Files :func:`write_report` writes (the PNGs only with plots on)."""

METRIC_NOTES = """## How to read the tables

- Each cell is the mean over the clips; `(k/n)`: only k of the n clips had a finite value
  (e.g. the music cannot reach {pct} % coverage because it is silent where the noise is loud).
- coverage: share of the noise's high-energy bins (loudest {mask_pct} % of the mel image) whose
  noise lies under the music's masking threshold (request's threshold model). NMR:
  PEAQ-style noise-to-mask ratio in dB (lower: better masked).
- gain, music (LUFS): the gain applied to the loudness-matched music (0 dB when loudness
  normalised; the lambda lane's mean when direct) and the music's loudness as played.
- LUFS@{pct}% / LU@{pct}%: the loudness the music would need (absolute, and over the noise) to
  mask {pct} % of the high-energy bins, under the paper's fixed {smr_db} dB SMR model (smr) and
  under psychoacoustic model 1 (spreading). Lower is better: aligned music blends at a
  more comfortable volume. "unreachable": no clip reaches {pct} %.
- paper lambda: the exact minimiser of the paper's loss over the whole clip, dB re the
  loudness-matched music; the pipeline itself applies a smoothed lane.
- spectral r (time / freq): Pearson correlation of the noise's and the music's mel
  energy in dB, per frame and per band; music energy in M: share of the music's energy
  inside the high-energy mask. onset xcorr: peak normalised cross-correlation of the
  onset envelopes within +-{tol_ms} ms; onset F: onset F-measure with a {tol_ms} ms tolerance.
- FAD / KL: "n/c" = not computed (see the FAD / KL section).
""".format(
    pct=NEEDED_PERCENT,
    mask_pct=f"{field_default('mask_area') * 100:g}",
    smr_db=f"{field_default('smr_db'):g}",
    tol_ms=f"{DEFAULT_TOLERANCE_MS:g}",
)
"""The report's closing section. Its figures are the defaults (needed-loudness coverage,
mask area, smr, rhythm tolerance), as the column headings are."""


def report_paths(out_dir: str | os.PathLike[str], plots: bool = True) -> list[Path]:
    """The paths :func:`write_report` would write into ``out_dir``."""
    return [Path(out_dir) / n for n in REPORT_FILES if plots or not n.endswith(".png")]


def check_report_free(out_dir: str | os.PathLike[str], plots: bool = True) -> None:
    """Refuse to overwrite a report: checked before rendering and again before writing.

    Raises:
        OutputExistsError: a file of :func:`report_paths` exists already.
    """
    existing = [str(p) for p in report_paths(out_dir, plots) if p.exists()]
    if existing:
        raise OutputExistsError(
            f"output file(s) exist already: {', '.join(existing)}; pass --force to overwrite"
        )


def machine_info() -> dict[str, Any]:
    """The package version, platform, Python, CPU count, numpy and the UTC time now."""
    from ..version import __version__

    return {
        "bnmusic_bridge": __version__,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


# --------------------------------------------------------------------------------------
# Markdown


def _clips_text(n: int) -> str:
    return f"{n} clip" if n == 1 else f"{n} clips"


def settings_lines(result: EvalResult) -> list[str]:
    """The report's Settings section: normalisation, the full method's request, prompts,
    seeds and targets (Markdown list items)."""
    req = result.config.base_request()
    return [
        f"- noise: {len(result.clips)} clips, each normalised to {result.config.target_lufs:g} LUFS "
        "(ITU-R BS.1770-4, pyloudnorm) before rendering",
        f"- full method (`bnmusic`): generator `{req.generator}`, threshold model `{req.threshold_model}`"
        f" (smr {req.smr_db:g} dB), objective `{req.objective}` (alpha {req.alpha:g}), mask area "
        f"{req.mask_area:g}, lane {req.lane_window_s:g} s / {req.lane_hop_s:g} s, gain "
        f"{req.min_gain_db:g}..{req.max_gain_db:g} dB",
        f"- prompts: {len(result.config.prompts)} from --prompts, cycled over the clips"
        if result.config.prompts
        else f'- prompt: "{req.prompt}" for every clip',
        f"- seeds: {req.seed} + clip index; loudness for coverage: {result.config.target_coverage * 100:g} % "
        f"of the high-energy bins; rhythm tolerance +-{result.config.tolerance_ms:g} ms",
    ]


def methods_lines(result: EvalResult) -> list[str]:
    """The report's Methods section: each method with its generator and clip count, then
    SKIPPED and FAILED lines."""
    lines = []
    for name in result.config.methods:
        spec = method_spec(name)
        gen = spec.generator or result.config.base_request().generator
        n = len({r.clip for r in result.rows if r.method == name})
        lines.append(f"- `{name}` ({spec.label}, generator `{gen}`): {_clips_text(n)}")
    for s in result.skipped:
        lines.append(f"- SKIPPED `{s.method}`: {s.reason}")
    for clip, method, msg in result.failures:
        lines.append(f"- FAILED `{method}` on `{clip}`: {msg}")
    return lines


def category_lines(result: EvalResult, category: str, title: str) -> list[str]:
    """One section of tables: Table 1 per scenario, the ablation, and the clip-by-clip
    comparison, for the clips of ``category``."""
    lines = [f"## {title}", ""]
    for scenario in SCENARIOS:
        lines += [
            f"### Table 1, {SCENARIO_LABELS[scenario]}",
            "",
            markdown_table(table1(result, scenario, category)),
            "",
        ]
    lines += [
        "### Ablation",
        "",
        markdown_table(ablation_table(result, category), first="step"),
        "",
    ]
    paired = paired_table(result, category)
    if paired:
        lines += [
            f"### Clip by clip: loudness for {result.config.target_coverage * 100:g} % coverage, "
            "full method against each other method (loudness normalised)",
            "",
            markdown_paired(paired),
            "",
        ]
    return lines


PLOT_LINES = [
    "## Plots",
    "",
    f"![loudness for {NEEDED_PERCENT} % coverage by method](lufs90_by_method.png)",
    "",
    "![coverage by method](coverage_by_method.png)",
    "",
    "![alignment against level](alignment_vs_level.png)",
    "",
]
"""The report's Plots section (the PNGs of :func:`write_report`)."""


def clips_lines(result: EvalResult) -> list[str]:
    """The report's Clips table: each clip's length, loudness, normalisation and prompt."""
    lines = [
        "## Clips",
        "",
        "| clip | category | seconds | LUFS before | gain (dB) | peak after (dBFS) | prompt |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for c in result.clips:
        lines.append(
            f"| {c.clip} | {c.category} | {c.duration_s:.2f} | {c.original_lufs:.1f} | "
            f"{c.normalisation_gain_db:+.1f} | {c.peak_dbfs:.1f} | {c.prompt.replace('|', '/')} |"
        )
    return lines


def markdown_report(result: EvalResult, command: str = "", plots: bool = True) -> str:
    """The whole report as Markdown (see :func:`write_report`)."""
    lines = ["# bnmusic eval report", ""]
    if command:
        lines += ["Command:", "", f"    {command}", ""]
    m = machine_info()
    lines += [
        f"bnmusic-bridge {m['bnmusic_bridge']}, {m['date']}, {m['platform']}, {m['cpu_count']} CPUs.",
        "",
        "## Settings",
        "",
        *settings_lines(result),
        "",
        "## Methods",
        "",
        *methods_lines(result),
        "",
        "## FAD / KL",
        "",
        result.distribution_note,
        "",
    ]
    sections = [("all", f"All clips ({_clips_text(len(result.clips))})")]
    if len(result.categories) > 1:
        sections += [
            (c, f"Category `{c}` ({_clips_text(sum(1 for i in result.clips if i.category == c))})")
            for c in result.categories
        ]
    for cat, title in sections:
        lines += category_lines(result, cat, title)
    if plots:
        lines += PLOT_LINES
    lines += clips_lines(result)
    lines += ["", METRIC_NOTES]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# CSV and JSON


def _csv_value(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.6g}"
    return str(value)


def csv_bytes(header: Sequence[str], records: Iterable[Sequence[Any]]) -> bytes:
    """A UTF-8 CSV with ``header``; floats with 6 significant digits, ``nan``/``inf``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for rec in records:
        w.writerow([_csv_value(v) for v in rec])
    return buf.getvalue().encode("utf-8")


def results_csv(result: EvalResult) -> bytes:
    """``results.csv``: one row per clip x method x scenario, every metric."""
    fields = [f.name for f in dataclasses.fields(ClipMetrics)]
    return csv_bytes(fields, ([getattr(r, f) for f in fields] for r in result.rows))


def paired_csv(result: EvalResult) -> bytes:
    """``paired.csv``: the clip-by-clip comparison per category and method."""
    header = ["category", "method", "clips"] + [
        f"{kind}_{model}" for model in THRESHOLD_MODELS for kind in ("wins", "median_difference_lu")
    ]
    return csv_bytes(
        header,
        (
            [cat, r.method, r.clips]
            + [
                v
                for model in THRESHOLD_MODELS
                for v in (r.wins[model], r.median_difference_lu[model])
            ]
            for cat in report_categories(result)
            for r in paired_table(result, cat)
        ),
    )


def summary_csv(records: Sequence[tuple[str, str, str, TableRow]], table: str) -> bytes:
    """``table1.csv`` or ``ablation.csv`` (``table``): the summary rows of
    :func:`~bnmusic_bridge.evaluation.tables.table_records` with their finite counts."""
    cols = [c.key for c in TABLE_COLUMNS + DISTRIBUTION_COLUMNS]
    header = (
        ["category", "scenario", "row", "method", "clips"]
        + cols
        + [f"{c}_finite" for c in cols]
        + ["note"]
    )
    return csv_bytes(
        header,
        (
            [cat, scen, r.label, r.method, r.clips]
            + [r.means.get(c, math.nan) for c in cols]
            + [r.finite.get(c, 0) for c in cols]
            + [r.note]
            for t, cat, scen, r in records
            if t == table
        ),
    )


def _json_float(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def results_json(result: EvalResult, command: str) -> bytes:
    """``results.json``: the command, machine, configuration, skips, failures, FAD/KL,
    clips and every row (non-finite numbers as ``null`` / ``"inf"`` / ``"-inf"``)."""
    config = result.config
    doc = {
        "command": command,
        "machine": machine_info(),
        "config": {
            "methods": list(config.methods),
            "prompts": list(config.prompts),
            "music_dir": str(config.music_dir) if config.music_dir else None,
            "reference_dir": str(config.reference_dir) if config.reference_dir else None,
            "target_lufs": config.target_lufs,
            "target_coverage": config.target_coverage,
            "tolerance_ms": config.tolerance_ms,
            "request": config.base_request().to_dict(),
        },
        "skipped": [dataclasses.asdict(s) for s in result.skipped],
        "failures": [{"clip": c, "method": m, "error": e} for c, m, e in result.failures],
        "distribution_note": result.distribution_note,
        "distribution": [
            {"category": c, "method": m, "scenario": s, **{k: _json_float(v) for k, v in d.items()}}
            for (c, m, s), d in result.distribution.items()
        ],
        "clips": [
            {k: _json_float(v) for k, v in dataclasses.asdict(c).items()} for c in result.clips
        ],
        "rows": [
            {k: _json_float(v) for k, v in dataclasses.asdict(r).items()} for r in result.rows
        ],
    }
    return (json.dumps(doc, indent=1) + "\n").encode("utf-8")


# --------------------------------------------------------------------------------------
# Writing


def write_report(
    result: EvalResult,
    out_dir: str | os.PathLike[str],
    *,
    force: bool = False,
    plots: bool = True,
    command: str = "",
) -> list[Path]:
    """Write the report into ``out_dir``: ``report.md``, ``results.csv`` (one row per
    clip x method x scenario), ``table1.csv`` and ``ablation.csv`` (the summary rows,
    category ``all`` and per category), ``paired.csv``, ``results.json`` (everything)
    and, with ``plots``, three PNGs. Every file is written atomically; existing files
    are refused (:class:`~bnmusic_bridge.errors.OutputExistsError`) unless ``force``.

    Returns:
        the paths written.
    """
    out = Path(out_dir)
    # 1. Refuse to overwrite, then make the folder
    if not force:
        check_report_free(out, plots)
    out.mkdir(parents=True, exist_ok=True)
    # 2. Every file's bytes
    records = table_records(result)
    files: dict[str, bytes] = {
        "report.md": markdown_report(result, command, plots).encode("utf-8"),
        "results.csv": results_csv(result),
        "paired.csv": paired_csv(result),
        "table1.csv": summary_csv(records, "table1"),
        "ablation.csv": summary_csv(records, "ablation"),
        "results.json": results_json(result, command),
    }
    if plots and result.rows:
        files.update(plot_files(result))
    # 3. Write them atomically, in REPORT_FILES order
    return [
        write_bytes_atomic(p, files[p.name], force=force)
        for p in report_paths(out, plots)
        if p.name in files
    ]
