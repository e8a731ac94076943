"""The report's PNG plots (matplotlib, imported only when a plot is drawn): bars of a
metric by method and category, and alignment against the level needed to mask."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .methods import method_spec
from .metrics import SCENARIO_LABELS, SCENARIOS
from .run import EvalResult
from .tables import NEEDED_PERCENT, report_categories, rows_of

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PLOT_DPI = 110
"""Resolution of every PNG, dots per inch."""


def method_colour(result: EvalResult, method: str) -> str:
    """One colour per method across every plot (matplotlib's cycle, in method order)."""
    return f"C{list(result.config.methods).index(method) % 10}"


def figure_png(fig: Figure) -> bytes:
    """``fig`` as PNG bytes (Agg canvas, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=PLOT_DPI)
    return buf.getvalue()


def grouped_bars_png(
    result: EvalResult,
    keys: Sequence[tuple[str, str, str]],
    ylabel: str,
    title: str,
    scale: float = 1.0,
) -> bytes:
    """Bars of a metric per method (one bar each) and category (groups); one panel per
    ``(metric key, scenario, panel title)``; a category without a finite value reads
    "none". PNG bytes."""
    from matplotlib.figure import Figure

    cats = report_categories(result)
    methods = result.methods_run
    fig = Figure(
        figsize=(max(6.0, 1.4 * len(cats) * max(1, len(methods)) / 2 + 2), 3.4 * len(keys))
    )
    for i, (key, scenario, panel) in enumerate(keys):
        ax = fig.add_subplot(len(keys), 1, i + 1)
        x = np.arange(len(cats))
        group = 0.8  # share of each category's slot the bars fill
        width = group / max(len(methods), 1)
        for j, m in enumerate(methods):
            values, notes = [], []
            for c in cats:
                vals = [float(getattr(r, key)) for r in rows_of(result, m, scenario, c)]
                ok = [v for v in vals if math.isfinite(v)]
                values.append(float(np.mean(ok)) * scale if ok else 0.0)
                notes.append("" if ok else "none")
            pos = x - group / 2 + width * (j + 0.5)
            bars = ax.bar(
                pos, values, width, label=method_spec(m).label, color=method_colour(result, m)
            )
            for b, note in zip(bars, notes, strict=True):
                if note:
                    ax.text(
                        b.get_x() + b.get_width() / 2,
                        0,
                        note,
                        ha="center",
                        va="bottom",
                        fontsize=7,
                        rotation=90,
                    )
        ax.set_xticks(x)
        ax.set_xticklabels(cats)
        ax.set_ylabel(ylabel)
        ax.set_title(panel, fontsize=10)
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.grid(axis="y", alpha=0.3)
        low, high = ax.get_ylim()
        ax.set_ylim(low, high + 0.25 * (high - low))  # room for the legend above the bars
        if i == 0:
            ax.legend(fontsize=8, ncols=min(3, max(1, len(methods))), loc="upper left")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return figure_png(fig)


def alignment_scatter_png(result: EvalResult) -> bytes:
    """LU over the noise for the target coverage (smr, loudness normalised) against the
    music's energy share in the mask and against onset F, one point per clip. PNG bytes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0, 4.0))
    for i, (key, xlabel) in enumerate(
        (
            ("mask_energy_share", "music energy in the high-energy mask (%)"),
            ("onset_f", "onset F-measure"),
        )
    ):
        ax = fig.add_subplot(1, 2, i + 1)
        for m in result.methods_run:
            pts = [
                (
                    float(getattr(r, key)) * (100.0 if key == "mask_energy_share" else 1.0),
                    r.lu_90_smr,
                )
                for r in rows_of(result, m, "normalised", "all")
                if math.isfinite(float(getattr(r, key))) and math.isfinite(r.lu_90_smr)
            ]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.scatter(xs, ys, label=method_spec(m).label, s=18, color=method_colour(result, m))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"LU over the noise for {NEEDED_PERCENT} % coverage (smr)")
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=8)
    fig.suptitle("Alignment against the level needed to mask (one point per clip)", fontsize=11)
    fig.tight_layout()
    return figure_png(fig)


def plot_files(result: EvalResult) -> dict[str, bytes]:
    """The report's PNGs by file name (see :data:`~bnmusic_bridge.evaluation.report.REPORT_FILES`)."""
    return {
        "lufs90_by_method.png": grouped_bars_png(
            result,
            [
                ("lu_90_smr", "normalised", "smr threshold (paper)"),
                ("lu_90_spreading", "normalised", "spreading threshold (ours)"),
            ],
            "LU over the noise",
            f"Music loudness needed to mask {result.config.target_coverage * 100:g} % of the "
            "high-energy bins (lower is better)",
        ),
        "coverage_by_method.png": grouped_bars_png(
            result,
            [("coverage", s, SCENARIO_LABELS[s]) for s in SCENARIOS],
            "coverage (%)",
            "Masking coverage of the high-energy bins",
            scale=100.0,
        ),
        "alignment_vs_level.png": alignment_scatter_png(result),
    }
