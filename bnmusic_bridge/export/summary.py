"""Metering summary of a render: coverage, NMR, lambda range, loudness, a per-window
table, and a PNG of the lane and the coverage over time.

Written by ``--lane summary`` as ``{stem}.lambda.summary.md`` (Markdown: headline
figures and the per-window table) and ``{stem}.lambda.summary.png``; the same figures
go into the report under ``"metering"``.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..loudness import integrated_lufs
from ..result import RenderResult
from .arrays import mask_counts
from .lanes import DEFAULT_TOLERANCE_DB, compact_lane, lane_points


@dataclass(frozen=True)
class WindowRow:
    """One lambda window.

    Attributes:
        start_s: window start in seconds (clipped to the stem).
        end_s: window end in seconds (clipped to the stem).
        centre_s: window centre in seconds.
        lambda_db: mean of the applied lane over the window in dB.
        optimum_db: the objective's raw optimum for the window in dB (None: -inf, the
            loss chose silence).
        coverage: share (0..1) of the window's high-energy bins masked (None: no
            high-energy bin in the window).
        nmr_db: noise-to-mask ratio over the window in dB (None: not available).
    """

    start_s: float
    end_s: float
    centre_s: float
    lambda_db: float
    optimum_db: float | None
    coverage: float | None
    nmr_db: float | None


@dataclass(frozen=True)
class MeteringSummary:
    """Headline figures of a render (units in the names) and its per-window table.

    ``music_unity_lufs`` is the music stem before the lane (loudness-matched to the
    noise), ``music_lufs`` after it (the blend-ready stem); both and ``noise_lufs`` are
    integrated BS.1770 loudness through :func:`bnmusic_bridge.loudness.integrated_lufs`.
    ``bus_trim_db`` is the gain for a bus carrying the noise and the blended music that
    keeps their sum under the peak ceiling (:class:`~bnmusic_bridge.result.BusTrim`);
    ``lane_turns_per_s`` and ``lane_min_turn_gap_s`` say how often the lane changes
    direction (:class:`~bnmusic_bridge.result.LaneMotion`). All three are None for a
    result without Stage 2 details.
    """

    duration_s: float
    coverage: float
    nmr_db: float | None
    lambda_min_db: float
    lambda_max_db: float
    lambda_mean_db: float
    noise_lufs: float
    music_unity_lufs: float
    music_lufs: float
    music_minus_noise_lu: float
    lane_points: int
    lane_points_compacted: int
    tolerance_db: float
    windows: tuple[WindowRow, ...]
    bus_trim_db: float | None = None
    lane_turns_per_s: float | None = None
    lane_min_turn_gap_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (NaN and infinities become None)."""

        def clean(x: Any) -> Any:
            if isinstance(x, float):
                return round(x, 6) if math.isfinite(x) else None
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [clean(v) for v in x]
            return x

        return clean(asdict(self))


def _none_if_nan(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _window_nmr_db(per_frame_db: np.ndarray, lo: int, hi: int) -> float | None:
    # Average the ratio, not its dB, as the total NMR does (10 log10 of the mean); a
    # silent noise frame (-inf dB) counts as a ratio of 0 there too.
    seg = per_frame_db[lo:hi]
    seg = seg[~np.isnan(seg)]
    if seg.size == 0:
        return None
    with np.errstate(divide="ignore"):
        return float(10.0 * np.log10(np.mean(np.power(10.0, seg / 10.0))))


def metering_summary(
    result: RenderResult, *, tolerance_db: float = DEFAULT_TOLERANCE_DB
) -> MeteringSummary:
    """Summarise ``result``. Window bounds come from ``window_times_s`` (centres) and
    the request's ``lane_window_s``; window coverage weighs each frame's coverage by
    its count of high-energy bins when ``result.analysis.mask`` has one column per frame."""
    times_s, gain_db = lane_points(result)
    duration_s = result.num_samples / result.sample_rate_hz
    rate = float(result.frame_rate_hz)
    frame_times = np.arange(len(result.coverage_per_frame)) / rate
    lane_on_frames = np.interp(frame_times, times_s, gain_db) if frame_times.size else np.empty(0)
    coverage = np.asarray(result.coverage_per_frame, dtype=np.float64)
    mask = result.analysis.mask
    weights = (
        mask_counts(mask).astype(np.float64)  # read in blocks: a long stem's is on disk
        if np.ndim(mask) == 2 and np.shape(mask)[1] == coverage.size
        else None
    )
    # Per-frame NMR (dB, -inf for a silent noise frame, NaN where not measured); a lane
    # of another length than the coverage leaves the per-window NMR column empty.
    nmr_frames = (
        np.asarray(result.nmr_per_frame_db, dtype=np.float64)
        if np.size(result.nmr_per_frame_db) == coverage.size
        else None
    )

    half_s = result.request.lane_window_s / 2.0
    rows: list[WindowRow] = []
    for centre, optimum in zip(
        np.asarray(result.window_times_s, dtype=np.float64).tolist(),
        np.asarray(result.window_gain_db, dtype=np.float64).tolist(),
        strict=True,
    ):
        start, end = max(0.0, centre - half_s), min(duration_s, centre + half_s)
        lo, hi = (
            int(math.floor(start * rate)),
            max(int(math.ceil(end * rate)), int(math.floor(start * rate)) + 1),
        )
        in_lane = (times_s >= start) & (times_s <= end)
        lam = (
            float(np.mean(gain_db[in_lane]))
            if in_lane.any()
            else float(np.interp(centre, times_s, gain_db))
        )
        cov_seg = coverage[lo:hi]
        ok = np.isfinite(cov_seg)
        cov: float | None = None
        if ok.any():
            if weights is not None and weights[lo:hi][ok].sum() > 0:
                cov = float(np.average(cov_seg[ok], weights=weights[lo:hi][ok]))
            else:
                cov = float(np.mean(cov_seg[ok]))
        nmr = _window_nmr_db(nmr_frames, lo, hi) if nmr_frames is not None else None
        rows.append(WindowRow(start, end, centre, lam, _none_if_nan(optimum), cov, nmr))

    compact_t, _ = compact_lane(times_s, gain_db, tolerance_db)
    music_unity_lufs = integrated_lufs(result.music, result.sample_rate_hz)
    motion = result.details.blend.motion if result.details is not None else None
    return MeteringSummary(
        duration_s=duration_s,
        coverage=float(result.coverage),
        nmr_db=_none_if_nan(result.nmr_db),
        lambda_min_db=float(gain_db.min()),
        lambda_max_db=float(gain_db.max()),
        # Mean over time (frames), not over points, so long flat stretches count fully.
        lambda_mean_db=float(lane_on_frames.mean())
        if lane_on_frames.size
        else float(gain_db.mean()),
        noise_lufs=float(result.noise_lufs),
        music_unity_lufs=float(music_unity_lufs),
        music_lufs=float(result.music_lufs),
        music_minus_noise_lu=float(result.music_lufs - result.noise_lufs),
        lane_points=int(times_s.size),
        lane_points_compacted=int(compact_t.size),
        tolerance_db=float(tolerance_db),
        windows=tuple(rows),
        bus_trim_db=result.bus_trim_db,
        lane_turns_per_s=None if motion is None else motion.turns_per_s,
        lane_min_turn_gap_s=None if motion is None else motion.min_turn_gap_s,
    )


def _fmt(x: float | None, spec: str, unit: str = "") -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:{spec}}{unit}"


def summary_markdown(
    summary: MeteringSummary, *, plot_name: str | None = None, title: str = ""
) -> bytes:
    """The summary as UTF-8 Markdown: a headline table and the per-window table."""
    s = summary
    head = title or "Lambda lane and masking coverage"
    lines = [
        f"# {head}",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| duration | {s.duration_s:.2f} s |",
        f"| coverage (high-energy bins masked) | {s.coverage * 100:.1f} % |",
        f"| noise-to-mask ratio (NMR) | {_fmt(s.nmr_db, '.2f', ' dB')} |",
        f"| lambda range | {s.lambda_min_db:+.2f} to {s.lambda_max_db:+.2f} dB |",
        f"| lambda mean over time | {s.lambda_mean_db:+.2f} dB |",
        f"| noise loudness | {s.noise_lufs:.2f} LUFS |",
        f"| music loudness before the lane (unity stem) | {s.music_unity_lufs:.2f} LUFS |",
        f"| music loudness with the lane | {s.music_lufs:.2f} LUFS |",
        f"| music minus noise | {s.music_minus_noise_lu:+.2f} LU |",
        f"| lane points (10 ms) / compacted within {s.tolerance_db:g} dB | {s.lane_points} / {s.lane_points_compacted} |",
    ]
    if s.lane_turns_per_s is not None:
        gap = _fmt(s.lane_min_turn_gap_s, ".2f", " s")
        lines.append(
            f"| lane turns (rise to fall and back) | {s.lane_turns_per_s:.2f} per s, at least {gap} apart |"
        )
    if s.bus_trim_db is not None:
        lines.append(
            f"| bus trim for noise + music (the report's bus_trim) | {s.bus_trim_db:+.2f} dB, on both alike |"
        )
    lines += [
        "",
        "Lambda is the music's gain in dB relative to the unity (loudness-matched) music stem. "
        "Loudness is integrated ITU-R BS.1770 (pyloudnorm).",
        "",
    ]
    if plot_name:
        # An angle-bracket destination (CommonMark) holds spaces and parentheses, which
        # DAW bounce names often have ("tram - bounce (1)").
        dest = plot_name
        if any(c in dest for c in " ()<>"):
            dest = "<" + dest.replace("<", "\\<").replace(">", "\\>") + ">"
        lines += [f"![lambda lane and coverage]({dest})", ""]
    lines += [
        "## Per window",
        "",
        "| start (s) | end (s) | lambda (dB) | optimum (dB) | coverage (%) | NMR (dB) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for w in s.windows:
        cov = None if w.coverage is None else w.coverage * 100.0
        lines.append(
            f"| {w.start_s:.2f} | {w.end_s:.2f} | {w.lambda_db:+.2f} | {_fmt(w.optimum_db, '+.2f')} | "
            f"{_fmt(cov, '.1f')} | {_fmt(w.nmr_db, '.2f')} |"
        )
    if s.windows and all(w.nmr_db is None for w in s.windows):
        lines += ["", "Per-window NMR: n/a (this render did not keep per-frame NMR)."]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _decimate(
    x: np.ndarray, y: np.ndarray, max_points: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, mean, (min, max)) per bin when there are more than ``max_points`` points, so a
    1-hour lane plots quickly and its short moves still show in the min/max band."""
    if x.size <= max_points:
        return x, y, np.stack([y, y])
    step = int(math.ceil(x.size / max_points))
    n = (x.size // step) * step
    xb = x[:n].reshape(-1, step)[:, 0]
    yb = y[:n].reshape(-1, step)
    # All-NaN bins (frames with no high-energy bin) warn; they plot as gaps, which is
    # what they are.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return xb, np.nanmean(yb, axis=1), np.stack([np.nanmin(yb, axis=1), np.nanmax(yb, axis=1)])


def summary_plot_png(
    result: RenderResult, summary: MeteringSummary | None = None, *, max_points: int = 4000
) -> bytes:
    """A 2-panel PNG: the lambda lane in dB (with each window's raw optimum) and the
    masking coverage in % per 10 ms frame (with each window's coverage), over time in
    seconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summary or metering_summary(result)
    times_s, gain_db = lane_points(result)
    rate = float(result.frame_rate_hz)
    cov = np.asarray(result.coverage_per_frame, dtype=np.float64) * 100.0
    ft = np.arange(cov.size) / rate

    fig, (ax1, ax2) = plt.subplots(
        2, 1, figsize=(11, 6), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    name = result.source.name if result.source is not None else "render"
    # Same rule as the overview picture: a font that has the name's characters, or "?"
    # for those no installed font has (never a box and a warning on stderr).
    from .plot import title_font

    families, name, _ = title_font(name)
    fig.suptitle(
        f"{name}: coverage {s.coverage * 100:.1f} %, NMR {_fmt(s.nmr_db, '.1f', ' dB')}, "
        f"lambda {s.lambda_min_db:+.1f}..{s.lambda_max_db:+.1f} dB, "
        f"music {s.music_lufs:.1f} LUFS over noise {s.noise_lufs:.1f} LUFS",
        fontsize=10,
        fontfamily=families,
    )
    lx, ly, lband = _decimate(times_s, gain_db, max_points)
    ax1.fill_between(lx, lband[0], lband[1], color="tab:blue", alpha=0.25, lw=0)
    ax1.plot(lx, ly, color="tab:blue", lw=1.2, label="lambda lane (dB)")
    opt = np.asarray(result.window_gain_db, dtype=np.float64)
    finite = np.isfinite(opt)
    if finite.any():
        ax1.plot(
            np.asarray(result.window_times_s)[finite],
            opt[finite],
            "o",
            ms=3,
            color="tab:red",
            alpha=0.7,
            label="window optimum (dB)",
        )
    ax1.axhline(0.0, color="0.6", lw=0.8, ls="--")
    ax1.set_ylabel("lambda (dB re unity music)")
    ax1.legend(loc="upper right", fontsize=8)
    ax1.grid(alpha=0.3)

    cx, cy, cband = _decimate(ft, cov, max_points)
    ax2.fill_between(cx, cband[0], cband[1], color="tab:orange", alpha=0.2, lw=0)
    ax2.plot(cx, cy, color="tab:orange", lw=0.8, label="coverage per frame (%)")
    rows = [(w.coverage * 100.0, w.start_s, w.end_s) for w in s.windows if w.coverage is not None]
    if rows:
        ax2.hlines(
            [r[0] for r in rows],
            [r[1] for r in rows],
            [r[2] for r in rows],
            color="tab:brown",
            lw=1.5,
            label="coverage per window (%)",
        )
    ax2.set_ylim(0, 105)
    ax2.set_ylabel("coverage (%)")
    ax2.set_xlabel("time (s)")
    ax2.set_xlim(0, s.duration_s)
    ax2.legend(loc="lower right", fontsize=8)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()
