"""The render's overview PNG: how much of the noise was masked, where, and why not more.

Five panels on one time axis (seconds):

1. the noise (mel dB, frequency in kHz);
2. the high-energy mask M (black: the bins the music should mask; no colour bar, it is
   binary);
3. the music with lambda applied (mel dB, kHz);
4. the lambda lane (dB) with each lane window's optimum (the gain the objective asked
   for; a triangle at the top where no gain reaches the target) and, shaded behind,
   the windows a limit kept from their target, one colour per limit (loudness ceiling,
   peak limit, max_gain_db, unmaskable, smoothing: ``details.shortfalls``), with a bar
   at the most that limit allowed in each such window;
5. the masking coverage (%) averaged over the lane's window (``lane_window_s``,
   weighted by each frame's high-energy bins, as the lane's own windows weigh it), with
   the coverage target.

The title names the input. A name with characters no installed font covers (CJK,
emoji on a machine without such fonts) is drawn with those characters as ``?`` and a
note, so matplotlib never draws boxes or warns about missing glyphs.
"""

from __future__ import annotations

import io
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..grid import F_MAX_HZ, F_MIN_HZ, N_MELS
from ..result import LIMITS, RenderResult
from ..scratch import BlockArray, blocks
from .arrays import every_nth_column, mask_counts, mask_share

LIMIT_COLOURS = {
    "loudness ceiling": "tab:red",
    "peak limit": "tab:purple",
    "max_gain_db": "0.45",
    "unmaskable": "tab:brown",
    "smoothing": "gold",
}
"""Shading colour of each :data:`~bnmusic_bridge.result.LIMITS` entry."""
assert set(LIMIT_COLOURS) == set(LIMITS)

PLOT_BLOCK_FRAMES = 2048
"""Frames per block while the picture reads the mels (a DiskArray's by time slices)."""
FIXED_LAYOUT = {
    "left": 0.058, "right": 0.943, "bottom": 0.048, "top": 0.945, "wspace": 0.018, "hspace": 0.16
}  # fmt: skip
"""The overview's margins and gaps (figure fractions; gaps as a share of a panel)."""
KHZ_TICKS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
"""Frequencies (kHz) labelled on the spectrogram panels."""


def _db(mel: np.ndarray) -> np.ndarray:
    db = 20 * np.log10(np.maximum(mel, 1e-9))
    return np.maximum(db, db.max() - 80.0)


def _mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def band_position(freq_hz: np.ndarray, n_mels: int = N_MELS) -> np.ndarray:
    """Where ``freq_hz`` lies on a mel image whose row ``m`` spans ``[m, m + 1)``: the
    HTK mel bands of :mod:`bnmusic_bridge.spectrogram` (band ``m`` centred at mel point
    ``m + 1`` of ``n_mels + 2`` equally spaced from F_MIN_HZ to F_MAX_HZ)."""
    lo, hi = _mel(np.array(F_MIN_HZ)), _mel(np.array(F_MAX_HZ))
    step = (hi - lo) / (n_mels + 1)
    return np.clip((_mel(freq_hz) - lo) / step - 0.5, 0.0, float(n_mels))


def _khz_axis(ax, n_mels: int) -> None:  # type: ignore[no-untyped-def]
    ticks = band_position(np.array(KHZ_TICKS) * 1000.0, n_mels)
    ax.set_yticks(ticks)
    ax.set_yticklabels([f"{k:g}" for k in KHZ_TICKS])
    ax.set_ylabel("kHz")


def merge_spans(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Overlapping or touching ``(start, end)`` spans joined, in time order."""
    out: list[tuple[float, float]] = []
    for lo, hi in sorted(spans):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def smoothed_coverage(result: RenderResult, counts: np.ndarray | None = None) -> np.ndarray:
    """Coverage (0..1) per frame averaged over a centred ``lane_window_s`` span,
    weighted by each frame's count of high-energy bins (NaN where the span has none).
    ``counts``: those counts (:func:`~bnmusic_bridge.export.arrays.mask_counts` of the
    mask) when the caller has them, so the mask is not read again."""
    cov = np.asarray(result.coverage_per_frame, dtype=np.float64)
    mask = result.analysis.mask
    if np.ndim(mask) == 2 and np.shape(mask)[1] == cov.size:
        weights = (mask_counts(mask) if counts is None else counts).astype(np.float64)
    else:
        weights = np.ones_like(cov)
    ok = np.isfinite(cov)
    weights = np.where(ok, weights, 0.0)
    size = max(1, int(round(result.request.lane_window_s * result.frame_rate_hz)))
    kernel = np.ones(size)
    num = np.convolve(np.where(ok, cov, 0.0) * weights, kernel, mode="same")
    den = np.convolve(weights, kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1e-12), np.nan)


@lru_cache(maxsize=1)
def _font_charmaps() -> tuple[tuple[str, str, frozenset[int]], ...]:
    """(family name, file, code points) of matplotlib's fonts; DejaVu Sans first.
    "Last Resort" fonts are left out: they map every code point to a placeholder box."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    out = []
    seen: set[str] = set()
    entries = sorted(
        font_manager.fontManager.ttflist, key=lambda f: (f.name != "DejaVu Sans", f.name)
    )
    for entry in entries:
        if entry.fname in seen or "last resort" in entry.name.lower():
            continue
        seen.add(entry.fname)
        try:
            codes = frozenset(FT2Font(entry.fname).get_charmap())
        except Exception:  # an unreadable font file: not a candidate
            continue
        out.append((entry.name, entry.fname, codes))
    return tuple(out)


def title_font(text: str) -> tuple[list[str], str, int]:
    """Fonts to draw ``text`` with, and the text made safe for them.

    Returns:
        ``(families, safe_text, missing)``: matplotlib font families that together
        cover every character (a fallback list, DejaVu Sans first), the text with every
        character none of them covers replaced by ``?``, and how many were replaced.
    """
    fonts = _font_charmaps()
    need = {ord(c) for c in text if not c.isspace()}
    families: list[str] = []
    covered: set[int] = set()
    for name, _, codes in fonts:
        gain = (need - covered) & codes
        if gain and name not in families:
            families.append(name)
            covered |= gain
        if covered >= need:
            break
    missing = need - covered
    safe = "".join(("?" if ord(c) in missing else c) for c in unicodedata.normalize("NFC", text))
    return families or ["DejaVu Sans"], safe, sum(1 for c in text if ord(c) in missing)


def render_plot_png(
    result: RenderResult,
    *,
    max_columns: int = 3000,
    progress: Callable[[float], None] | None = None,
) -> bytes:
    """The overview PNG (see the module doc). Long stems are decimated in time for the
    picture only. ``progress(fraction)`` is called between the steps (import, figure,
    encoding)."""
    return draw_png(picture_data(result, max_columns=max_columns), progress=progress)


def draw_png(data: PictureData, progress: Callable[[float], None] | None = None) -> bytes:
    """The overview PNG of :func:`picture_data`'s reduction of a render (what a helper
    process draws: see :mod:`bnmusic_bridge.export.picture_process`)."""

    def report(fraction: float) -> None:
        if progress is not None:
            progress(fraction)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report(0.1)
    fig = draw_overview(data)
    report(0.5)
    buf = io.BytesIO()
    # zlib level 1: a fifth larger file, twice as fast to encode (the PNG encode was a
    # quarter of the picture's cost at the default level 6).
    fig.savefig(buf, format="png", dpi=90, pil_kwargs={"compress_level": 1})
    plt.close(fig)
    report(1.0)
    return buf.getvalue()


def _level_columns(
    noise: np.ndarray | BlockArray, music: np.ndarray | BlockArray, gain: np.ndarray, step: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """The two level panels' data from one pass over the mels in blocks of frames:
    ``noise[:, ::step]``, ``music[:, ::step] * gain[::step]`` (the music with the lane,
    linear) and the colour scale's top, the highest dB of either over every frame.

    Only the picked columns are kept: a float64 copy of a long stem's mels would be
    4 kB a frame, several times over (a DiskArray's never enters memory whole).
    """
    n_mels, frames = int(noise.shape[0]), int(noise.shape[1])
    picked = len(range(0, frames, step))
    noise_cols = np.empty((n_mels, picked), dtype=noise.dtype)
    music_cols = np.empty((n_mels, picked), dtype=np.result_type(music.dtype, gain.dtype))
    vmax = -np.inf
    for a, b in blocks(frames, PLOT_BLOCK_FRAMES):
        n_part, m_part, g = noise[:, a:b], music[:, a:b], gain[a:b]
        top = np.maximum(n_part, m_part * g[None, :])
        vmax = max(vmax, float(_db(top).max()))
        first = -(-a // step) * step  # the first picked frame at or after a
        if first < b:
            cols = slice(first // step, (b - 1) // step + 1)
            noise_cols[:, cols] = n_part[:, first - a :: step]
            music_cols[:, cols] = m_part[:, first - a :: step] * g[None, first - a :: step]
    return noise_cols, music_cols, vmax


@dataclass(frozen=True)
class Shortfall:
    """One lane window a limit kept from its target, as the picture draws it."""

    limited_by: str
    start_s: float
    end_s: float
    capped_gain_db: float


@dataclass(frozen=True)
class PictureData:
    """Everything the overview draws, reduced from a render: at most ``max_columns``
    columns per panel, so it is small and pickles cheaply (a helper process draws it).
    Times in seconds, levels in dB, shares 0..1."""

    name: str
    """The input's file name (drawn with the fonts that cover it)."""
    caption: str
    """The rest of the title: generator, seed, model, coverage, NMR."""
    noise_db: np.ndarray
    """``(bands, columns)`` noise mel, dB (80 dB below its top floored)."""
    music_db: np.ndarray
    """``(bands, columns)`` music mel with the lambda lane applied, dB."""
    vmax_db: float
    """Top of the two level panels' shared colour scale: the highest dB of either."""
    mask: np.ndarray
    """``(bands, columns)`` high-energy mask (bool)."""
    mask_share: float
    duration_s: float
    lane_times_s: np.ndarray
    lane_gain_db: np.ndarray
    window_times_s: np.ndarray
    window_gain_db: np.ndarray
    """Each lane window's optimum; +inf where no gain reaches the target."""
    shortfalls: tuple[Shortfall, ...]
    lane_hop_s: float
    coverage_times_s: np.ndarray
    coverage_pct: np.ndarray
    """Coverage (%) averaged over ``lane_window_s`` (NaN where a span has no
    high-energy bin), at ``coverage_times_s``."""
    lane_window_s: float
    target_coverage_pct: float | None
    """The coverage target (%), None when the objective is not coverage."""


def picture_data(result: RenderResult, *, max_columns: int = 3000) -> PictureData:
    """The overview's data from ``result``; its mels and mask are read in blocks of
    frames (a long stem's scratch files never enter memory whole)."""
    noise = result.analysis.noise_mel
    music = result.analysis.music_mel
    mask = result.analysis.mask
    frames = int(noise.shape[1])
    step = max(1, int(np.ceil(frames / max_columns)))
    frame_t = np.arange(frames) / result.frame_rate_hz
    gain = 10 ** (np.interp(frame_t, result.lane_times_s, result.lane_gain_db) / 20)
    noise_cols, music_gained, vmax = _level_columns(noise, music, gain, step)
    counts = mask_counts(mask)
    smooth = smoothed_coverage(result, counts) * 100.0
    req = result.request
    shortfalls = result.details.shortfalls if result.details is not None else ()
    return PictureData(
        name=result.source.name if result.source is not None else "render",
        caption=(
            f"{req.generator}, seed {req.seed}, {req.threshold_model} model, "
            f"coverage {result.coverage * 100:.1f} %, NMR {result.nmr_db:.1f} dB"
        ),
        noise_db=_db(noise_cols),
        music_db=_db(music_gained),
        vmax_db=vmax,
        mask=every_nth_column(mask, step),
        mask_share=mask_share(mask, counts),
        duration_s=frames / result.frame_rate_hz,
        lane_times_s=np.asarray(result.lane_times_s, dtype=np.float64),
        lane_gain_db=np.asarray(result.lane_gain_db, dtype=np.float64),
        window_times_s=np.asarray(result.window_times_s, dtype=np.float64),
        window_gain_db=np.asarray(result.window_gain_db, dtype=np.float64),
        shortfalls=tuple(
            Shortfall(s.limited_by, float(s.start_s), float(s.end_s), float(s.capped_gain_db))
            for s in shortfalls
        ),
        lane_hop_s=float(req.lane_hop_s),
        coverage_times_s=(np.arange(smooth.size) / result.frame_rate_hz)[::step],
        coverage_pct=smooth[::step],
        lane_window_s=float(req.lane_window_s),
        target_coverage_pct=req.target_coverage * 100 if req.objective == "coverage" else None,
    )


def overview_figure(result: RenderResult, *, max_columns: int = 3000):  # type: ignore[no-untyped-def]
    """The overview as a matplotlib figure (Agg; the caller closes it). Axes labels
    (``ax.get_label()``): "noise", "mask", "music", "lane", "coverage"; the two colour
    bars: "colorbar"."""
    return draw_overview(picture_data(result, max_columns=max_columns))


def draw_overview(data: PictureData):  # type: ignore[no-untyped-def]
    """:func:`overview_figure` of a :class:`PictureData` (matplotlib only: no render
    module is needed to draw it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    n_mels = int(data.noise_db.shape[0])
    duration_s = data.duration_s
    extent = (0.0, duration_s, 0.0, float(n_mels))

    # A fixed layout, not matplotlib's constrained one: that one draws the whole figure
    # once more only to measure it (a third of the picture's time), and these margins
    # hold every label the panels have (tick labels of up to four characters).
    fig = plt.figure(figsize=(12, 13))
    grid = fig.add_gridspec(
        5, 2, width_ratios=[60, 1], height_ratios=[3, 2.2, 3, 2.4, 1.8], **FIXED_LAYOUT
    )
    axes = [fig.add_subplot(grid[0, 0])]
    axes += [fig.add_subplot(grid[i, 0], sharex=axes[0]) for i in range(1, 5)]
    families, safe_name, missing = title_font(data.name)
    note = f" ({missing} character(s) no installed font has)" if missing else ""
    fig.suptitle(f"{safe_name}{note}: {data.caption}", fontfamily=families)

    # 1-3: spectrograms on a kHz axis; one colour bar for the two level panels.
    for row, db, title in (
        (0, data.noise_db, "noise (mel dB)"),
        (2, data.music_db, "music with lambda applied (mel dB)"),
    ):
        ax = axes[row]
        im = ax.imshow(
            db, origin="lower", aspect="auto", extent=extent, cmap="magma",
            vmin=data.vmax_db - 80, vmax=data.vmax_db,
        )  # fmt: skip
        ax.set_title(title, fontsize=9, loc="left")
        _khz_axis(ax, n_mels)
        cax = fig.add_subplot(grid[row, 1], label="colorbar")
        fig.colorbar(im, cax=cax, label="dB")
    ax = axes[1]
    ax.imshow(
        data.mask, origin="lower", aspect="auto", extent=extent, cmap="gray_r",
        interpolation="nearest", vmin=0, vmax=1,
    )  # fmt: skip
    ax.set_title(
        f"high-energy mask M: black = the {data.mask_share * 100:.1f} % of bins the music "
        "should mask",
        fontsize=9,
        loc="left",
    )
    _khz_axis(ax, n_mels)

    # 4: the lane, each window's optimum, and why a window stopped short.
    ax = axes[3]
    shortfalls = data.shortfalls
    limits_seen: list[str] = []
    for limit in LIMITS:
        spans = [(s.start_s, s.end_s) for s in shortfalls if s.limited_by == limit]
        if not spans:
            continue
        limits_seen.append(limit)
        colour = LIMIT_COLOURS[limit]
        for lo_s, hi_s in merge_spans(spans):  # one shade per stretch: no darker overlaps
            ax.axvspan(lo_s, hi_s, color=colour, alpha=0.16, lw=0)
    half_hop = 0.5 * data.lane_hop_s
    for s in shortfalls:
        # The most the limit allowed, over the window's own hop (windows overlap).
        centre = 0.5 * (s.start_s + s.end_s)
        ax.hlines(s.capped_gain_db, max(0.0, centre - half_hop), min(duration_s, centre + half_hop),
                  color=LIMIT_COLOURS.get(s.limited_by, "0.4"), lw=2.2, alpha=0.9)  # fmt: skip
    ax.plot(data.lane_times_s, data.lane_gain_db, color="tab:blue", lw=1.4, label="lambda lane")
    opt = data.window_gain_db
    wt = data.window_times_s
    lane = data.lane_gain_db
    finite = np.isfinite(opt)
    caps = np.array([s.capped_gain_db for s in shortfalls], dtype=np.float64)
    values = np.concatenate([lane, opt[finite], caps[np.isfinite(caps)]])
    if values.size:
        # At least a 6 dB span, so a 0.01 dB wobble does not draw as a full-height step.
        lo, hi = float(values.min()), float(values.max())
        mid, half = 0.5 * (lo + hi), max(3.0, 0.5 * (hi - lo) + 1.0)
        ax.set_ylim(mid - half, mid + half)
    if finite.any():
        ax.plot(wt[finite], opt[finite], "o", ms=3.5, color="tab:red", label="window optimum")
    top = ax.get_ylim()[1]
    if np.any(opt == np.inf):
        ax.plot(wt[opt == np.inf], np.full(int(np.sum(opt == np.inf)), top), "^", ms=6,
                color="tab:red", clip_on=False, label="no gain reaches the target")  # fmt: skip
    ax.axhline(0.0, color="0.6", lw=0.8, ls="--")
    ax.set_ylabel("lambda (dB)")
    handles, labels = ax.get_legend_handles_labels()
    for limit in limits_seen:
        handles.append(Patch(color=LIMIT_COLOURS[limit], alpha=0.35))
        labels.append(f"stopped by {limit} (bar: its lowest cap there)")
    ax.legend(handles, labels, loc="upper left", fontsize=7, ncol=3, framealpha=0.8)
    ax.set_title(
        "lambda (dB on the loudness-matched music); shaded: windows a limit kept from their target",
        fontsize=9,
        loc="left",
    )
    ax.grid(alpha=0.3)

    # 5: coverage over the lane's window, and its target.
    ax = axes[4]
    ax.plot(data.coverage_times_s, data.coverage_pct, color="tab:orange", lw=1.4,
            label=f"coverage over {data.lane_window_s:g} s")  # fmt: skip
    if data.target_coverage_pct is not None:
        ax.axhline(data.target_coverage_pct, color="tab:green", lw=1.0, ls="--",
                   label=f"target {data.target_coverage_pct:.0f} %")  # fmt: skip
    ax.set_ylim(0, 105)
    ax.set_ylabel("masked (%)")
    ax.set_xlabel("time (s)")
    ax.set_xlim(0, duration_s)
    ax.legend(loc="lower right", fontsize=7)
    ax.grid(alpha=0.3)
    for a in axes[:-1]:
        a.tick_params(labelbottom=False)

    for a, label in zip(axes, ("noise", "mask", "music", "lane", "coverage"), strict=True):
        a.set_label(label)
    return fig
