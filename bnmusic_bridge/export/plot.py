"""The render's overview PNG: noise spectrogram, mask, music spectrogram, lane and coverage."""

from __future__ import annotations

import io

import numpy as np

from ..result import RenderResult


def _db(mel: np.ndarray) -> np.ndarray:
    db = 20 * np.log10(np.maximum(mel, 1e-9))
    return np.maximum(db, db.max() - 80.0)


def render_plot_png(result: RenderResult, *, max_columns: int = 3000) -> bytes:
    """A 4-panel PNG: noise mel (dB), high-energy mask, gained music mel (dB), and the
    lambda lane (dB) with coverage (%) over time. Long stems are decimated in time for
    the picture only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    noise = result.analysis.noise_mel
    music = result.analysis.music_mel
    mask = result.analysis.mask
    frames = noise.shape[1]
    step = max(1, int(np.ceil(frames / max_columns)))
    duration_s = frames / result.frame_rate_hz
    gain = 10 ** (np.interp(np.arange(frames) / result.frame_rate_hz, result.lane_times_s, result.lane_gain_db) / 20)
    # The colour scale's top over every frame, block by block (a float64 copy of a long
    # stem's mels would be 4 kB a frame, several times over); the picture itself only
    # needs the decimated columns.
    vmax = -np.inf
    for a in range(0, frames, 2048):
        cols = slice(a, a + 2048)
        top = np.maximum(noise[:, cols], music[:, cols] * gain[None, cols])
        vmax = max(vmax, float(_db(top).max()))
    music_gained = music[:, ::step] * gain[None, ::step]
    extent = (0.0, duration_s, 0.0, 10.0)
    fig, axes = plt.subplots(
        4, 1, figsize=(12, 11), sharex=True, gridspec_kw={"height_ratios": [3, 3, 3, 2]}, layout="constrained"
    )
    name = result.source.name if result.source is not None else "render"
    fig.suptitle(
        f"{name}: {result.request.generator}, seed {result.request.seed}, {result.request.threshold_model} model, "
        f"coverage {result.coverage * 100:.1f} %, NMR {result.nmr_db:.1f} dB"
    )
    for ax, data, title in (
        (axes[0], _db(noise[:, ::step]), "noise (mel dB)"),
        (axes[2], _db(music_gained), "music with lambda applied (mel dB)"),
    ):
        im = ax.imshow(data, origin="lower", aspect="auto", extent=extent, cmap="magma", vmin=vmax - 80, vmax=vmax)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("mel band (0-10 kHz)")
        ax.set_yticks([])
    # One colour bar for every panel keeps the panels equally wide, so a time lines up.
    fig.colorbar(im, ax=list(axes), pad=0.01, fraction=0.02, label="mel level (dB)")
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
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()
