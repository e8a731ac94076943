"""The report's summary tables: Table 1 (methods as rows), the paper's ablation, and the
clip-by-clip comparison of the full method with each other method; and their Markdown."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..request import THRESHOLD_MODELS
from .methods import method_spec
from .metrics import NEEDED_LOUDNESS_COVERAGE, SCENARIOS, ClipMetrics
from .run import EvalResult

NEEDED_PERCENT = f"{NEEDED_LOUDNESS_COVERAGE * 100:g}"
""":data:`~bnmusic_bridge.evaluation.metrics.NEEDED_LOUDNESS_COVERAGE` as the report's
headings write it ("90"); the columns keep it even when ``--eval-coverage`` differs."""


@dataclass(frozen=True)
class Column:
    """A table column: the metric it averages, its heading, a scale and decimals."""

    key: str
    heading: str
    scale: float = 1.0
    decimals: int = 1


TABLE_COLUMNS = (
    Column("coverage", "coverage (%)", 100.0),
    Column("nmr_db", "NMR (dB)"),
    Column("gain_db", "gain (dB)"),
    Column("music_lufs", "music (LUFS)"),
    Column("lufs_90_smr", f"LUFS@{NEEDED_PERCENT}% smr"),
    Column("lu_90_smr", f"LU@{NEEDED_PERCENT}% smr"),
    Column("lufs_90_spreading", f"LUFS@{NEEDED_PERCENT}% spreading"),
    Column("lu_90_spreading", f"LU@{NEEDED_PERCENT}% spreading"),
    Column("lambda_paper_db", "paper lambda (dB)"),
    Column("spectral_time_r", "spectral r (time)", 1.0, 2),
    Column("spectral_freq_r", "spectral r (freq)", 1.0, 2),
    Column("mask_energy_share", "music energy in M (%)", 100.0),
    Column("onset_xcorr", "onset xcorr", 1.0, 2),
    Column("onset_f", "onset F", 1.0, 2),
)
"""Table 1 / ablation columns (means over clips; "(k/n)" where only k of n are finite)."""
DISTRIBUTION_COLUMNS = (Column("fad", "FAD", 1.0, 2), Column("kl", "KL", 1.0, 2))
"""FAD/KL columns (one value per category, method and scenario, not a mean)."""


@dataclass(frozen=True)
class TableRow:
    """One row of a summary table.

    Attributes:
        label: row label (method label, or ablation step).
        method, scenario: the rows of :class:`~bnmusic_bridge.evaluation.metrics.ClipMetrics`
            it averages.
        clips: number of clips averaged.
        means: metric key -> mean over the clips' finite values (NaN if none).
        finite: metric key -> how many clips had a finite value.
        note: why a row is empty ("not available: ...").
    """

    label: str
    method: str
    scenario: str
    clips: int
    means: dict[str, float]
    finite: dict[str, int]
    note: str = ""


def summary_row(
    label: str,
    method: str,
    scenario: str,
    rows: Sequence[ClipMetrics],
    extra: Mapping[str, float] | None = None,
    note: str = "",
) -> TableRow:
    """A :class:`TableRow` averaging ``rows`` over their finite values; ``extra`` holds
    the FAD/KL values of the row (missing: NaN)."""
    means: dict[str, float] = {}
    finite: dict[str, int] = {}
    for col in TABLE_COLUMNS:
        values = np.array([float(getattr(r, col.key)) for r in rows], dtype=np.float64)
        ok = values[np.isfinite(values)]
        means[col.key] = float(ok.mean()) if ok.size else math.nan
        finite[col.key] = int(ok.size)
    for col in DISTRIBUTION_COLUMNS:
        value = (extra or {}).get(col.key, math.nan)
        means[col.key] = float(value)
        finite[col.key] = 1 if math.isfinite(value) else 0
    return TableRow(label, method, scenario, len(rows), means, finite, note)


def rows_of(result: EvalResult, method: str, scenario: str, category: str) -> list[ClipMetrics]:
    """The measured rows of ``method`` in ``scenario`` for the clips of ``category``
    (``"all"``: every clip)."""
    return [
        r
        for r in result.rows
        if r.method == method and r.scenario == scenario and category in ("all", r.category)
    ]


def report_categories(result: EvalResult) -> list[str]:
    """The categories the report has sections for: ``"all"``, then each category when
    there is more than one."""
    return ["all"] + (result.categories if len(result.categories) > 1 else [])


def table1(result: EvalResult, scenario: str, category: str = "all") -> list[TableRow]:
    """Table 1: one row per method that ran (in ``config.methods`` order), means over the
    clips of ``category`` (``"all"``: every clip) in ``scenario``."""
    out = []
    for m in result.methods_run:
        rows = rows_of(result, m, scenario, category)
        if rows:
            dist = result.distribution.get((category, m, scenario))
            out.append(summary_row(method_spec(m).label, m, scenario, rows, dist))
    return out


def _unavailable_reason(result: EvalResult, method: str) -> str:
    if method in {s.method for s in result.skipped}:
        return f"`{method}` skipped (see Methods)"
    if method not in result.config.methods:
        return "not in --methods"
    return "no clip rendered"


def ablation_table(result: EvalResult, category: str = "all") -> list[TableRow]:
    """The paper's ablation rows, from the methods and scenarios that ran:

    noise only; outpainting only (``outpaint-only``, normalised); outpainting +
    amplification (``outpaint-only``, direct); outpainting + inpainting (the full
    method's Stage 1 without amplification: ``bnmusic``, normalised; labelled with the
    generator when that is not ``riffusion``); full (``bnmusic``, direct); full without
    the alignment step (``bnmusic-unaligned``, direct). Rows whose
    method did not run carry a note instead of numbers.
    """
    base_gen = result.config.base_request().generator
    stage1 = (
        "outpainting + inpainting"
        if base_gen == "riffusion"
        else f"Stage 1 only ({base_gen}), no amplification"
    )
    plan = [
        ("noise only", "noise-only", "normalised"),
        ("outpainting only", "outpaint-only", "normalised"),
        ("outpainting + amplification", "outpaint-only", "direct"),
        (stage1, "bnmusic", "normalised"),
        (f"full: Stage 1 ({base_gen}) + amplification", "bnmusic", "direct"),
        ("full without the alignment step", "bnmusic-unaligned", "direct"),
    ]
    out = []
    for label, method, scenario in plan:
        rows = rows_of(result, method, scenario, category)
        if rows:
            dist = result.distribution.get((category, method, scenario))
            out.append(summary_row(label, method, scenario, rows, dist))
        else:
            why = _unavailable_reason(result, method)
            out.append(TableRow(label, method, scenario, 0, {}, {}, f"not available: {why}"))
    return out


@dataclass(frozen=True)
class PairedRow:
    """The full method against one other method, clip by clip (loudness normalised).

    Attributes:
        method: the other method.
        clips: clips both methods rendered.
        wins: model -> clips where the full method needs less loudness for the target
            coverage (a reachable level beats an unreachable one; two unreachable ones
            are a tie).
        median_difference_lu: model -> median over clips where both are reachable of
            (full - other) LU@target: negative = the full method is quieter.
    """

    method: str
    clips: int
    wins: dict[str, int]
    median_difference_lu: dict[str, float]


def paired_table(
    result: EvalResult, category: str = "all", reference: str = "bnmusic"
) -> list[PairedRow]:
    """Clip-by-clip comparison of ``reference`` with every other method that ran, on the
    loudness needed for the target coverage under each threshold model; empty when
    ``reference`` did not run. Means hide which clips a method wins; this shows it."""
    ref = {r.clip: r for r in rows_of(result, reference, "normalised", category)}
    if not ref:
        return []
    out = []
    for m in result.methods_run:
        if m == reference:
            continue
        other = {r.clip: r for r in rows_of(result, m, "normalised", category)}
        common = sorted(set(ref) & set(other))
        wins: dict[str, int] = {}
        median: dict[str, float] = {}
        for model in THRESHOLD_MODELS:
            key = f"lu_90_{model}"
            a = np.array([getattr(ref[c], key) for c in common], dtype=np.float64)
            b = np.array([getattr(other[c], key) for c in common], dtype=np.float64)
            wins[model] = int(np.sum((a < b) & ~np.isinf(a)))
            both = np.isfinite(a) & np.isfinite(b)
            median[model] = float(np.median(a[both] - b[both])) if both.any() else math.nan
        out.append(PairedRow(m, len(common), wins, median))
    return out


def table_records(result: EvalResult) -> list[tuple[str, str, str, TableRow]]:
    """``(table, category, scenario, row)`` for every Table 1 and ablation row, table
    ``"table1"`` or ``"ablation"``, category ``"all"`` first."""
    out: list[tuple[str, str, str, TableRow]] = []
    for cat in report_categories(result):
        for scenario in SCENARIOS:
            out.extend(("table1", cat, scenario, r) for r in table1(result, scenario, cat))
        out.extend(("ablation", cat, r.scenario, r) for r in ablation_table(result, cat))
    return out


# --------------------------------------------------------------------------------------
# Markdown


def format_cell(value: float, col: Column, finite: int, clips: int) -> str:
    """One table cell: the scaled mean, ``(k/n)`` when only k of n clips were finite,
    or a word saying why there is no number."""
    if not math.isfinite(value):
        if col.key.startswith(("lufs_90", "lu_90")) and clips and finite == 0:
            return "unreachable"
        if col.key == "lambda_paper_db" and clips and finite == 0:
            return "-inf (silence)"
        if col.key in ("music_lufs", "music_lu") and clips and finite == 0:
            return "silent"
        return "n/a" if col.key not in ("fad", "kl") else "n/c"
    text = f"{value * col.scale:.{col.decimals}f}"
    if finite < clips:
        text += f" ({finite}/{clips})"
    return text


def markdown_table(rows: Sequence[TableRow], first: str = "method") -> str:
    """A Markdown table of ``rows``: a header, a separator and one line per row."""
    cols = TABLE_COLUMNS + DISTRIBUTION_COLUMNS
    lines = [
        "| " + " | ".join([first, "clips"] + [c.heading for c in cols]) + " |",
        "| " + " | ".join(["---", "---:"] + ["---:"] * len(cols)) + " |",
    ]
    for r in rows:
        if r.note:
            cells = [r.label, "0", r.note] + [""] * (len(cols) - 1)
        else:
            cells = [r.label, str(r.clips)] + [
                format_cell(r.means[c.key], c, r.finite[c.key], r.clips) for c in cols
            ]
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    return "\n".join(lines)


def markdown_paired(rows: Sequence[PairedRow]) -> str:
    """A Markdown table of :func:`paired_table` rows."""
    heads = ["other method", "clips"]
    for model in THRESHOLD_MODELS:
        heads += [f"full quieter ({model})", f"median full - other ({model}, LU)"]
    lines = [
        "| " + " | ".join(heads) + " |",
        "| " + " | ".join(["---"] + ["---:"] * (len(heads) - 1)) + " |",
    ]
    for r in rows:
        cells = [method_spec(r.method).label, str(r.clips)]
        for model in THRESHOLD_MODELS:
            d = r.median_difference_lu[model]
            cells += [f"{r.wins[model]}/{r.clips}", f"{d:+.1f}" if math.isfinite(d) else "n/a"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
