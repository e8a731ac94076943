"""The render's overview PNG: noise spectrogram, mask, music spectrogram, lane and coverage."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np

from ..result import RenderResult


def _db(mel: np.ndarray) -> np.ndarray:
    db = 20 * np.log10(np.maximum(mel, 1e-9))
    return np.maximum(db, db.max() - 80.0)


def render_plot_png(
    result: RenderResult,
    *,
    max_columns: int = 3000,
    progress: Callable[[float], None] | None = None,
) -> bytes:
    """A 4-panel PNG: noise mel (dB), high-energy mask, gained music mel (dB), and the
    lambda lane (dB) with coverage (%) over time. Long stems are decimated in time for
    the picture only. ``progress(fraction)`` is called between the steps (import,
    panels, drawing, encoding)."""

    def report(fraction: float) -> None:
        if progress is not None:
            progress(fraction)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report(0.25)
    noise = result.analysis.noise_mel
    music = result.analysis.music_mel
    mask = result.analysis.mask
    frames = noise.shape[1]
    step = max(1, int(np.ceil(frames / max_columns)))
    duration_s = frames / result.frame_rate_hz
    gain = 10 ** (np.interp(np.arange(frames) / result.frame_rate_hz, result.lane_times_s, result.lane_gain_db) / 20)
    music_gained = music * gain[None, :]
    vmax = float(_db(np.maximum(noise, music_gained)).max())
    extent = (0.0, duration_s, 0.0, 10.0)
    # Fixed margins rather than constrained layout: the layout pass drew the figure a
    # second time and was about a third of the picture's cost.
    fig, axes = plt.subplots(
        4, 1, figsize=(12, 11), sharex=True, gridspec_kw={"height_ratios": [3, 3, 3, 2]}
    )
    fig.subplots_adjust(left=0.06, right=0.87, bottom=0.05, top=0.94, hspace=0.18)
    name = result.source.name if result.source is not None else "render"
    fig.suptitle(
        f"{name}: {result.request.generator}, seed {result.request.seed}, {result.request.threshold_model} model, "
        f"coverage {result.coverage * 100:.1f} %, NMR {result.nmr_db:.1f} dB"
    )
    for ax, data, title in (
        (axes[0], _db(noise[:, ::step]), "noise (mel dB)"),
        (axes[2], _db(music_gained[:, ::step]), "music with lambda applied (mel dB)"),
    ):
        im = ax.imshow(data, origin="lower", aspect="auto", extent=extent, cmap="magma", vmin=vmax - 80, vmax=vmax)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("mel band (0-10 kHz)")
        ax.set_yticks([])
    # One colour bar for every panel keeps the panels equally wide, so a time lines up.
    fig.colorbar(im, cax=fig.add_axes((0.925, 0.3, 0.01, 0.64)), label="mel level (dB)")
    axes[1].imshow(mask[:, ::step], origin="lower", aspect="auto", extent=extent, cmap="gray_r", interpolation="nearest")
    axes[1].set_title(f"high-energy mask M ({mask.mean() * 100:.1f} % of bins)", fontsize=9)
    axes[1].set_yticks([])
    ax = axes[3]
    ax.plot(result.lane_times_s, result.lane_gain_db, color="tab:blue", label="lambda (dB)")
    ax.set_ylabel("lambda (dB)", color="tab:blue")
    if len(result.lane_gain_db):
        # At least a 6 dB span, so a 0.01 dB wobble does not draw as a full-height step.
        lo, hi = float(np.min(result.lane_gain_db)), float(np.max(result.lane_gain_db))
        mid, half = 0.5 * (lo + hi), max(3.0, 0.5 * (hi - lo) + 0.5)
        ax.set_ylim(mid - half, mid + half)
    ax.set_xlabel("time (s)")
    ax2 = ax.twinx()
    t = np.arange(len(result.coverage_per_frame)) / result.frame_rate_hz
    ax2.plot(t, result.coverage_per_frame * 100, color="tab:orange", lw=0.6, label="coverage (%)")
    ax2.set_ylim(0, 105)
    ax2.set_ylabel("coverage (%)", color="tab:orange")
    ax.set_xlim(0, duration_s)
    report(0.45)
    buf = io.BytesIO()
    # zlib level 1: a fifth larger file, twice as fast to encode (the PNG encode was a
    # quarter of the picture's cost at the default level 6).
    fig.savefig(buf, format="png", dpi=90, pil_kwargs={"compress_level": 1})
    plt.close(fig)
    report(1.0)
    return buf.getvalue()
