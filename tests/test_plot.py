"""The overview picture: kHz axis, no colour bar on the mask, smoothed coverage, why the
gain stopped, and names in any script without font warnings."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import soundfile as sf
from noise_signals import clacks

import bnmusic_bridge.export.plot as plot
from bnmusic_bridge.pipeline import render_file
from bnmusic_bridge.request import RenderRequest

RATE = 44100
NAME = "電車 ホーム – 🚃 bounce (1).wav"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plot")
    rng = np.random.default_rng(2)
    noise = clacks(3.0, RATE) + 0.02 * rng.standard_normal(3 * RATE)
    path = folder / NAME
    sf.write(path, noise, RATE)
    # No ceiling and a high target: the peak limit stops the lane (shortfalls to draw).
    req = RenderRequest(peak_mode="lane", max_loudness_lu=None, target_coverage=0.99)
    return render_file(path, req)


def test_picture_has_khz_axes_two_colour_bars_and_labelled_panels(rendered):
    import matplotlib.pyplot as plt

    fig = plot.overview_figure(rendered)
    try:
        by_label = {a.get_label(): a for a in fig.axes}
        assert {"noise", "mask", "music", "lane", "coverage"} <= set(by_label)
        assert sum(a.get_label() == "colorbar" for a in fig.axes) == 2  # none for the mask
        for name in ("noise", "mask", "music"):
            ax = by_label[name]
            assert ax.get_ylabel() == "kHz"
            assert [t.get_text() for t in ax.get_yticklabels()] == [
                "0.1",
                "0.2",
                "0.5",
                "1",
                "2",
                "5",
                "10",
            ]
        # The mask panel's right neighbour in the grid is empty: its width equals the
        # spectrogram panels' (the time axes line up).
        widths = {
            round(by_label[n].get_position().width, 4) for n in ("noise", "mask", "music", "lane")
        }
        assert len(widths) == 1
        # Why the gain stopped: the peak limit shaded and named in the legend.
        assert rendered.details.shortfalls, "the fixture should have shortfalls"
        legend = [t.get_text() for t in by_label["lane"].get_legend().get_texts()]
        assert any(text.startswith("stopped by peak limit") for text in legend)
        assert "window optimum" in legend
    finally:
        plt.close(fig)


def test_ticks_sit_on_the_bands_of_those_frequencies():
    from bnmusic_bridge.spectrogram import mel_center_hz

    centres = mel_center_hz()
    for khz in (0.1, 1.0, 5.0):
        row = int(np.argmin(np.abs(centres - khz * 1000)))
        assert plot.band_position(np.array(khz * 1000)) == pytest.approx(row + 0.5, abs=0.6)


def test_coverage_is_averaged_over_the_lane_window(rendered):
    import dataclasses

    frames = rendered.coverage_per_frame.size
    alternating = np.where(np.arange(frames) % 2 == 0, 0.0, 1.0)
    flat_mask = np.ones((4, frames), dtype=bool)
    fake = dataclasses.replace(
        rendered,
        coverage_per_frame=alternating,
        analysis=dataclasses.replace(rendered.analysis, mask=flat_mask),
    )
    smooth = plot.smoothed_coverage(fake)
    middle = smooth[frames // 2 - 10 : frames // 2 + 10]
    assert np.all(np.abs(middle - 0.5) < 0.01)  # the per-frame zigzag is gone
    # Frames with more high-energy bins weigh more.
    weighted = flat_mask.copy()
    weighted[:, ::2] = False
    weighted[0, ::2] = True  # even (coverage 0) frames: 1 bin; odd (coverage 1): 4 bins
    fake = dataclasses.replace(fake, analysis=dataclasses.replace(rendered.analysis, mask=weighted))
    assert np.all(
        np.abs(plot.smoothed_coverage(fake)[frames // 2 - 10 : frames // 2 + 10] - 0.8) < 0.01
    )


def test_cjk_and_emoji_names_render_without_warnings(rendered, capfd):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        png = plot.render_plot_png(rendered)
    assert not [w for w in caught if "Glyph" in str(w.message) or "font" in str(w.message).lower()]
    assert "Glyph" not in capfd.readouterr().err
    from PIL import Image

    assert Image.open(io.BytesIO(png)).size[0] > 500


def test_title_font_uses_a_covering_font_else_question_marks(monkeypatch):
    latin = frozenset(range(32, 0x250)) | {0x2013}
    cjk = frozenset(range(0x3000, 0x30FF)) | frozenset(range(0x4E00, 0x9FFF))
    monkeypatch.setattr(
        plot,
        "_font_charmaps",
        lambda: (("DejaVu Sans", "a", latin), ("Noto Sans CJK JP", "b", cjk)),
    )
    families, safe, missing = plot.title_font(NAME)
    assert families == ["DejaVu Sans", "Noto Sans CJK JP"]
    assert safe == "電車 ホーム – ? bounce (1).wav" and missing == 1  # no emoji font
    monkeypatch.setattr(plot, "_font_charmaps", lambda: (("DejaVu Sans", "a", latin),))
    families, safe, missing = plot.title_font(NAME)
    assert families == ["DejaVu Sans"] and safe == "?? ??? – ? bounce (1).wav" and missing == 6
