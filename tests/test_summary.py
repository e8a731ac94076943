"""Metering summary: headline figures, the per-window table, the Markdown (read back as
text), the PNG (read back with Pillow) and loudness checked against pyloudnorm."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pyloudnorm
import pytest
from PIL import Image

from bnmusic_bridge.export import ExportOptions, write_outputs
from bnmusic_bridge.export.summary import metering_summary, summary_markdown, summary_plot_png

try:
    from .test_lanes import synthetic_result
except ImportError:  # tests/ run as plain modules (no package)
    from test_lanes import synthetic_result


def test_headline_figures():
    res = synthetic_result(6.0, channels=2)
    s = metering_summary(res)
    assert s.coverage == pytest.approx(0.71) and s.nmr_db == pytest.approx(-3.5)
    assert s.lambda_min_db == res.lane_gain_db.min() and s.lambda_max_db == res.lane_gain_db.max()
    assert (
        s.noise_lufs == -23.0
        and s.music_lufs == -20.5
        and s.music_minus_noise_lu == pytest.approx(2.5)
    )
    # loudness of the unity music, against pyloudnorm called directly
    direct = pyloudnorm.Meter(res.sample_rate_hz).integrated_loudness(
        res.music.T.astype(np.float64)
    )
    assert s.music_unity_lufs == pytest.approx(direct, abs=0.01)
    assert s.lane_points == res.lane_times_s.size > s.lane_points_compacted > 1
    assert s.duration_s == pytest.approx(6.0)
    json.dumps(s.to_dict(), allow_nan=False)  # strict JSON: no NaN or inf left


def test_window_table():
    res = synthetic_result(6.0)
    s = metering_summary(res)
    assert len(s.windows) == res.window_times_s.size
    half = res.request.lane_window_s / 2
    first, second = s.windows[0], s.windows[1]
    assert first.start_s == pytest.approx(max(0.0, res.window_times_s[0] - half))
    assert first.end_s == pytest.approx(res.window_times_s[0] + half)
    assert s.windows[-1].end_s <= 6.0
    assert second.optimum_db is None  # -inf in the result: the loss chose silence
    inside = (res.lane_times_s >= first.start_s) & (res.lane_times_s <= first.end_s)
    assert first.lambda_db == pytest.approx(res.lane_gain_db[inside].mean())
    # coverage weighs frames by their high-energy bin count; frames without any skip
    lo, hi = int(first.start_s * 100), int(np.ceil(first.end_s * 100))
    cov, w = res.coverage_per_frame[lo:hi], res.analysis.mask.sum(axis=0)[lo:hi]
    ok = np.isfinite(cov)
    assert first.coverage == pytest.approx(np.sum(cov[ok] * w[ok]) / np.sum(w[ok]))
    assert all(r.nmr_db is None for r in s.windows)


def test_window_nmr_from_per_frame_nmr():
    frames = 600
    nmr = np.full(frames, -6.0)
    nmr[:128] = 0.0  # the first window mixes 0 dB and -6 dB frames
    nmr[5] = -np.inf  # a silent noise frame: a ratio of 0, as in the total NMR
    res = synthetic_result(6.0, nmr_per_frame_db=nmr)
    s = metering_summary(res)
    w = s.windows[0]
    lo, hi = int(w.start_s * 100), int(np.ceil(w.end_s * 100))
    expected = 10 * np.log10(np.mean(10 ** (nmr[lo:hi] / 10)))
    assert w.nmr_db == pytest.approx(expected)
    assert s.windows[-1].nmr_db == pytest.approx(-6.0)


def test_markdown_tables():
    res = synthetic_result(6.0)
    s = metering_summary(res)
    text = summary_markdown(s, plot_name="x.lambda.summary.png").decode("utf-8")
    assert "![lambda lane and coverage](x.lambda.summary.png)" in text
    assert f"{s.lambda_min_db:+.2f} to {s.lambda_max_db:+.2f} dB" in text
    assert "-23.00 LUFS" in text and "71.0 %" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and ln.count("|") == 7]
    assert rows[0].startswith("| start (s) | end (s) | lambda (dB)") and set(rows[1]) <= set("|-: ")
    data = [[c.strip() for c in ln.strip("|").split("|")] for ln in rows[2:]]
    assert len(data) == len(s.windows)
    assert data[1][3] == "n/a" and float(data[1][0]) == pytest.approx(
        s.windows[1].start_s, abs=0.005
    )
    assert float(data[0][2]) == pytest.approx(s.windows[0].lambda_db, abs=0.005)


def test_plot_png_reads_back():
    res = synthetic_result(6.0)
    png = summary_plot_png(res)
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (990, 540)
    # a long lane (decimated) still plots
    long = synthetic_result(400.0, sample_rate_hz=100)
    assert Image.open(io.BytesIO(summary_plot_png(long))).size == (990, 540)


def test_write_outputs_summary_goes_into_the_report(tmp_path):
    res = dataclasses.replace(synthetic_result(3.0), nmr_per_frame_db=np.full(300, -2.0))
    paths = write_outputs(
        res,
        tmp_path,
        stem_name="clock",
        options=ExportOptions(lane_formats=("summary",), plot=False),
    )
    report = json.loads(paths.report.read_text())
    assert report["metering"]["coverage"] == pytest.approx(0.71)
    assert report["metering"]["windows"][0]["nmr_db"] == pytest.approx(-2.0)
    md = paths.lanes["summary"].read_text()
    assert (
        "(clock.lambda.summary.png)" in md
        and paths.lanes["summary-png"].read_bytes()[:4] == b"\x89PNG"
    )
