"""Lambda lanes: compaction (10,000-point and 1-hour lanes), CSV/JSON read back with the
csv and json modules, and every lane format written through write_outputs."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from bnmusic_bridge.errors import OutputExistsError, ParameterError
from bnmusic_bridge.export import ExportOptions, output_paths, write_outputs
from bnmusic_bridge.export.lane_files import lane_files
from bnmusic_bridge.export.lanes import (
    LANE_FORMAT_FILES,
    LANE_FORMATS,
    LaneOptions,
    compact_lane,
    interpolate_lane,
    lane_csv,
    lane_json,
    lane_options_from_mapping,
)
from bnmusic_bridge.request import RenderRequest
from bnmusic_bridge.result import AnalysisArrays, RenderResult

FRAME_RATE_HZ = 100.0


def smooth_lane(num_points: int, seed: int = 0, span_db: float = 12.0) -> np.ndarray:
    """A lane like the pipeline's: window steps smoothed over about a second, plus a
    slow drift. dB, ``(num_points,)``."""
    rng = np.random.default_rng(seed)
    hop = 128
    steps = np.repeat(rng.uniform(-span_db, span_db / 2, num_points // hop + 2), hop)[:num_points]
    kernel = np.hanning(101)
    kernel /= kernel.sum()
    padded = np.pad(steps, 50, mode="edge")
    lane = np.convolve(padded, kernel, mode="valid")
    drift = 2.0 * np.sin(np.arange(num_points) / FRAME_RATE_HZ * 2 * np.pi / 37.0)
    return lane + drift


def synthetic_result(
    duration_s: float = 6.0,
    sample_rate_hz: int = 8000,
    *,
    lane_db: np.ndarray | None = None,
    channels: int = 1,
    source: Path | None = Path("/stems/hvac.wav"),
    nmr_per_frame_db: np.ndarray | None = None,
    seed: int = 0,
) -> RenderResult:
    """A hand-built RenderResult: a lane on the 10 ms grid, windows every 1.28 s,
    per-frame coverage with some frames holding no high-energy bin, a small mask."""
    rng = np.random.default_rng(seed)
    num_samples = int(round(duration_s * sample_rate_hz))
    frames = int(np.ceil(num_samples / sample_rate_hz * FRAME_RATE_HZ))
    times_s = np.arange(frames) / FRAME_RATE_HZ
    lane = smooth_lane(frames, seed) if lane_db is None else np.asarray(lane_db, dtype=np.float64)
    assert lane.size == frames
    t = np.arange(num_samples) / sample_rate_hz
    music = (0.2 * np.sin(2 * np.pi * 220 * t) + 0.02 * rng.standard_normal(num_samples)).astype(
        np.float32
    )
    music = np.tile(music, (channels, 1))
    gains = np.power(10.0, np.interp(t, times_s, lane) / 20.0).astype(np.float32)
    req = RenderRequest()
    centres = np.arange(req.lane_window_s / 2, duration_s, req.lane_hop_s)
    window_gain = np.interp(centres, times_s, lane)
    if window_gain.size > 1:
        window_gain[1] = -np.inf  # the loss chose silence in one window
    mask = rng.random((16, frames)) < 0.2
    mask[:, 10:20] = False  # frames with no high-energy bin
    silent = np.zeros(mask.shape, dtype=np.float32)  # no mel: this result is not plotted
    coverage = rng.uniform(0.3, 1.0, frames)
    coverage[10:20] = np.nan
    return RenderResult(
        sample_rate_hz=sample_rate_hz,
        num_samples=num_samples,
        music=music,
        music_gained=music * gains[None, :],
        lane_times_s=times_s,
        lane_gain_db=lane,
        window_times_s=centres,
        window_gain_db=window_gain,
        coverage=0.71,
        coverage_per_frame=coverage,
        frame_rate_hz=FRAME_RATE_HZ,
        nmr_db=-3.5,
        nmr_per_frame_db=np.full(frames, np.nan) if nmr_per_frame_db is None else nmr_per_frame_db,
        noise_lufs=-23.0,
        music_lufs=-20.5,
        timings_s={"total": 1.0},
        request=req,
        generator_diagnostics=[],
        warnings=(),
        analysis=AnalysisArrays(noise_mel=silent, music_mel=silent, mask=mask),
        source=source,
    )


def max_error_db(times_s, gain_db, kept_t, kept_g, interpolation="db") -> float:
    return float(
        np.max(
            np.abs(interpolate_lane(kept_t, kept_g, times_s, interpolation=interpolation) - gain_db)
        )
    )


# ----------------------------------------------------------------------------- compaction


@pytest.mark.parametrize("tolerance_db", [0.01, 0.1, 0.5])
def test_compact_10000_point_lane_stays_within_tolerance(tolerance_db):
    times_s = np.arange(10_000) / FRAME_RATE_HZ
    gain_db = smooth_lane(10_000, seed=3)
    kt, kg = compact_lane(times_s, gain_db, tolerance_db)
    assert kt[0] == times_s[0] and kt[-1] == times_s[-1]
    # kept points are points of the lane, unchanged
    idx = np.searchsorted(times_s, kt)
    assert np.array_equal(times_s[idx], kt) and np.array_equal(gain_db[idx], kg)
    assert max_error_db(times_s, gain_db, kt, kg) <= tolerance_db
    # between two 10 ms points as well (the midpoints of every segment)
    mid = (times_s[:-1] + times_s[1:]) / 2
    assert max_error_db(mid, np.interp(mid, times_s, gain_db), kt, kg) <= tolerance_db
    assert kt.size < 10_000 * (0.25 if tolerance_db < 0.05 else 0.08)


def test_compaction_keeps_jumps_and_drops_flat_stretches():
    times_s = np.arange(1000) / FRAME_RATE_HZ
    gain_db = np.where(times_s < 4.0, -10.0, 3.0)  # one jump between 3.99 and 4.00 s
    kt, kg = compact_lane(times_s, gain_db, 0.1)
    assert list(kt) == [0.0, 3.99, 4.0, 9.99]
    assert list(kg) == [-10.0, -10.0, 3.0, 3.0]
    flat_t, flat_g = compact_lane(times_s, np.full(1000, -6.0))
    assert flat_t.tolist() == [0.0, 9.99] and flat_g.tolist() == [-6.0, -6.0]
    ramp_t, _ = compact_lane(times_s, np.linspace(-20, 5, 1000))
    assert ramp_t.size == 2


def test_one_hour_lane_compacts_fast_and_small():
    n = 360_000  # one hour at 100 points per second
    times_s = np.arange(n) / FRAME_RATE_HZ
    gain_db = smooth_lane(n, seed=7)
    # (its speed is measured in benchmarks/bench_lanes.py, not asserted here)
    kt, kg = compact_lane(times_s, gain_db, 0.1)
    assert kt.size < n * 0.05  # a window step every 1.28 s needs about 5 points
    assert max_error_db(times_s, gain_db, kt, kg) <= 0.1
    # and the lane files of an hour stay small (a 100 Hz "stem" keeps the test light)
    res = synthetic_result(3600.0, sample_rate_hz=100, lane_db=gain_db)
    csv_bytes, json_bytes = lane_csv(res), lane_json(res)
    assert len(csv_bytes) < 500_000 and len(json_bytes) < 1_500_000
    assert csv_bytes.count(b"\n") == kt.size + 1


def test_linear_amplitude_compaction_holds_in_db():
    times_s = np.arange(5000) / FRAME_RATE_HZ
    gain_db = smooth_lane(5000, seed=11, span_db=20.0)
    kt, kg = compact_lane(times_s, gain_db, 0.1, interpolation="linear")
    err = max_error_db(times_s, gain_db, kt, kg, interpolation="linear")
    assert err <= 0.1
    # read in dB instead, the same points would stray further: the two readings differ
    assert max_error_db(times_s, gain_db, kt, kg, interpolation="db") > err


@pytest.mark.parametrize(
    ("times_s", "gain_db", "kwargs", "match"),
    [
        ([0.0, 0.01, 0.02], [0.0, np.inf, 1.0], {}, "point 1"),
        ([0.0, 0.01, 0.01], [0.0, 1.0, 2.0], {}, "strictly increasing"),
        ([0.0, 0.01], [0.0], {}, "same length"),
        ([], [], {}, "no points"),
        ([0.0, 0.01, 0.02], [0.0, 1.0, 2.0], {"tolerance_db": 0.0}, "tolerance_db"),
        ([0.0, 0.01, 0.02], [0.0, 1.0, 2.0], {"interpolation": "cubic"}, "interpolation"),
    ],
)
def test_compact_lane_refuses_bad_input(times_s, gain_db, kwargs, match):
    with pytest.raises(ParameterError, match=match):
        compact_lane(np.asarray(times_s, dtype=float), np.asarray(gain_db, dtype=float), **kwargs)


# ----------------------------------------------------------------------------- CSV and JSON


def test_csv_read_back_has_units_and_rebuilds_the_lane():
    res = synthetic_result(8.0)
    rows = list(csv.DictReader(io.StringIO(lane_csv(res).decode("utf-8"))))
    assert list(rows[0]) == ["time_s", "gain_db", "gain_linear"]
    t = np.array([float(r["time_s"]) for r in rows])
    g = np.array([float(r["gain_db"]) for r in rows])
    lin = np.array([float(r["gain_linear"]) for r in rows])
    assert 2 < len(rows) < res.lane_times_s.size / 5  # compacted by default
    np.testing.assert_allclose(20 * np.log10(lin), g, atol=1e-4)
    # the 4-decimal rounding adds at most 0.00005 dB to the 0.1 dB tolerance
    assert max_error_db(res.lane_times_s, res.lane_gain_db, t, g) <= 0.1 + 1e-4
    full = list(
        csv.DictReader(io.StringIO(lane_csv(res, LaneOptions(full_lane=True)).decode("utf-8")))
    )
    assert len(full) == res.lane_times_s.size
    np.testing.assert_allclose([float(r["gain_db"]) for r in full], res.lane_gain_db, atol=1e-4)


def test_json_read_back_has_units_and_rebuilds_the_lane():
    res = synthetic_result(8.0)
    data = json.loads(lane_json(res, LaneOptions(tolerance_db=0.05)))
    assert set(data["units"]) == {"time_s", "gain_db", "gain_linear"}
    assert "dB" in data["units"]["gain_db"] and "seconds" in data["units"]["time_s"]
    assert (
        data["compaction"]["tolerance_db"] == 0.05
        and data["compaction"]["full_points"] == res.lane_times_s.size
    )
    points = data["points"]
    assert data["compaction"]["points"] == len(points) < res.lane_times_s.size / 3
    t = np.array([p["time_s"] for p in points])
    g = np.array([p["gain_db"] for p in points])
    assert max_error_db(res.lane_times_s, res.lane_gain_db, t, g) <= 0.05 + 1e-4
    np.testing.assert_allclose([p["gain_linear"] for p in points], 10 ** (g / 20), rtol=2e-5)
    full = json.loads(lane_json(res, LaneOptions(full_lane=True)))
    assert full["compaction"]["compacted"] is False and len(full["points"]) == res.lane_times_s.size


# ----------------------------------------------------------------------------- wiring


def test_every_format_is_written_and_refused_again(tmp_path):
    res = synthetic_result(4.0)
    opts = ExportOptions(lane_formats=LANE_FORMATS, plot=False, bit_depth=16)
    paths = write_outputs(res, tmp_path, stem_name="hvac", options=opts)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(
        [
            "hvac.music.wav", "hvac.blended.wav", "hvac.report.json", "hvac.lambda.json", "hvac.lambda.csv",
            "hvac.lambda.mid", "hvac.lambda.reaper-env.txt", "hvac.lambda.reaper-track.RTrackTemplate",
            "hvac.lambda.reaper.rpp", "hvac.lambda.summary.md", "hvac.lambda.summary.png",
        ]
    )  # fmt: skip
    report = json.loads(paths.report.read_text())
    for key in ("lambda_json", "lambda_csv", "lambda_midi", "lambda_reaper_env", "lambda_reaper_track",
                "lambda_reaper_project", "lambda_summary", "lambda_summary_png"):  # fmt: skip
        assert Path(report["outputs"][key]).exists(), key
    assert report["metering"]["coverage"] == pytest.approx(0.71)
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(OutputExistsError):
        write_outputs(res, tmp_path, stem_name="hvac", options=opts)
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_default_export_writes_only_json_and_csv_lanes(tmp_path):
    paths = output_paths("x", tmp_path, ExportOptions())
    assert sorted(paths.lanes) == ["csv", "json"]
    assert paths.lanes["json"].name == "x.lambda.json"


def test_lane_files_single_kind_and_unknown_names():
    res = synthetic_result(2.0)
    assert lane_files(res, "csv").startswith(b"time_s,gain_db,gain_linear\n")
    assert lane_files(res, "midi")[:4] == b"MThd"
    with pytest.raises(ParameterError, match="reaper"):
        lane_files(res, "reaper")  # a format of several files; ask for its kinds
    with pytest.raises(ParameterError, match="unknown"):
        ExportOptions(lane_formats=("json", "aaf")).check()
    assert set(LANE_FORMAT_FILES["reaper"]) == {"reaper-env", "reaper-track", "reaper-project"}


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"tolerance_db": 0.0}, "tolerance_db"),
        ({"midi_cc": 120}, "midi_cc"),
        ({"midi_channel": 0}, "midi_channel"),
        ({"midi_range_db": [6.0, -6.0]}, "midi_range_db"),
        ({"time_signature": [4, 3]}, "time_signature"),
        ({"session_bpm": 5}, "session_bpm"),
        ({"ticks_per_beat": 8}, "ticks_per_beat"),
        ({"stem_position_s": -1.0}, "stem_position_s"),
        ({"lane_colour": "red"}, "unknown lane option"),
    ],
)
def test_lane_options_refuse_out_of_range(values, match):
    with pytest.raises(ParameterError, match=match):
        lane_options_from_mapping(values)


def test_lane_options_from_mapping_turns_lists_into_tuples():
    opts = lane_options_from_mapping({"midi_range_db": [-30, 12], "time_signature": [6, 8]})
    assert opts.midi_range_db == (-30, 12) and opts.time_signature == (6, 8)
