"""Renders whose whole-stem arrays live in scratch files (long stems) against the same
renders in memory: the same music, lane and metering, and no stage reads an array whole."""

from __future__ import annotations

import numpy as np
import pytest
from noise_signals import clacks

from bnmusic_bridge import RenderRequest
from bnmusic_bridge.audio import check_audio
from bnmusic_bridge.pipeline import _render_stem
from bnmusic_bridge.result import RenderResult
from bnmusic_bridge.scratch import DiskArray, DiskStore, MemoryStore

MUSIC_TOLERANCE = 1e-5
"""Largest difference between the two renders' music, relative to its peak: the disk
path widens the stereo image block by block (a block-wise FIR and float64 sums instead of
one FFT convolution and one dot product), which moves samples by float rounding."""


def _noise(seconds: float, rate: int, channels: int) -> np.ndarray:
    mono = clacks(seconds, rate, period_s=0.5)
    rng = np.random.default_rng(7)
    rows = [mono]
    for _ in range(channels - 1):
        rows.append(np.roll(mono, int(rng.integers(100, 5000))) * 0.8)
    return np.stack(rows).astype(np.float32)


def _both(noise: np.ndarray, rate: int, req: RenderRequest) -> tuple[RenderResult, RenderResult]:
    stem = check_audio(noise, rate)
    in_memory = _render_stem(stem, req, None, store=MemoryStore())
    on_disk = _render_stem(stem, req, None, store=DiskStore())
    return in_memory, on_disk


def _assert_same(a: RenderResult, b: RenderResult) -> None:
    for name in ("music", "music_gained"):
        x, y = getattr(a, name), np.asarray(getattr(b, name))
        assert x.shape == y.shape, name
        peak = float(np.max(np.abs(x)))
        assert float(np.max(np.abs(x - y))) <= MUSIC_TOLERANCE * peak, name
    for name in ("noise_mel", "mask"):
        assert np.array_equal(getattr(a.analysis, name), np.asarray(getattr(b.analysis, name)))
    np.testing.assert_allclose(
        np.asarray(b.analysis.music_mel), a.analysis.music_mel, rtol=1e-3, atol=1e-7
    )
    np.testing.assert_allclose(b.lane_gain_db, a.lane_gain_db, atol=0.01)
    assert abs(a.coverage - b.coverage) < 2e-3
    assert abs(a.music_lufs - b.music_lufs) < 0.01
    assert a.noise_lufs == pytest.approx(b.noise_lufs, abs=1e-6)
    assert a.details.tempo_bpm == b.details.tempo_bpm


@pytest.mark.slow
def test_stereo_stem_on_disk_renders_as_in_memory() -> None:
    a, b = _both(_noise(30.0, 44_100, 2), 44_100, RenderRequest())
    assert isinstance(b.music, DiskArray) and not isinstance(b.analysis.noise_mel, np.ndarray)
    assert isinstance(a.music, np.ndarray)
    _assert_same(a, b)


@pytest.mark.slow
def test_mono_48k_stem_on_disk_renders_as_in_memory_smr_lane_peaks() -> None:
    req = RenderRequest(threshold_model="smr", peak_mode="lane")
    a, b = _both(_noise(25.0, 48_000, 1), 48_000, req)
    _assert_same(a, b)


@pytest.mark.slow
def test_no_stage_reads_a_long_stems_array_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    # 90 s of stereo: the stem is 32 MB and each mel 18.6 MB, both over the 16 MB limit
    # (no block read comes near it): every read must be a block
    monkeypatch.setattr(DiskArray, "max_read_bytes", 16 * 2**20)
    stem = check_audio(_noise(90.0, 44_100, 2), 44_100)
    assert stem.audio.nbytes > 16 * 2**20
    result = _render_stem(stem, RenderRequest(), None, store=DiskStore())
    assert isinstance(result.music_gained, DiskArray)
    assert result.music_gained.shape == (2, stem.num_samples)
    assert 0.0 < result.coverage <= 1.0
    mel = result.analysis.noise_mel  # over the limit too
    assert mel.shape[0] * mel.shape[1] * mel.dtype.itemsize > 16 * 2**20


@pytest.mark.slow
def test_cli_render_with_arrays_on_disk_writes_the_same_files(tmp_path, monkeypatch) -> None:
    """The CLI on a 48 kHz stereo file, its arrays in memory and on disk
    (``BNMUSIC_SCRATCH``): the same stems and lanes, byte for byte; the reports agree
    but for timings and float rounding of the DC-removed loudness (sums in blocks)."""
    import json

    import soundfile as sf

    from bnmusic_bridge.frontends.cli import main

    stem = tmp_path / "hvac.wav"
    sf.write(stem, _noise(12.0, 48_000, 2).T, 48_000, subtype="PCM_24")
    reports = {}
    for mode in ("memory", "disk"):
        monkeypatch.setenv("BNMUSIC_SCRATCH", mode)
        out = tmp_path / mode
        assert main(["render", str(stem), "--out", str(out), "-q"]) == 0
        reports[mode] = json.loads((out / "hvac.report.json").read_text())
    for name in ("hvac.music.wav", "hvac.blended.wav", "hvac.lambda.csv", "hvac.lambda.json"):
        assert (tmp_path / "memory" / name).read_bytes() == (tmp_path / "disk" / name).read_bytes()
    a, b = reports["memory"], reports["disk"]
    assert a["coverage"] == pytest.approx(b["coverage"], abs=1e-9)
    assert a["loudness_lufs"] == b["loudness_lufs"]  # rounded to 1/1000 LU in the report
    for key in ("speakers", "channels", "bus_trim", "warnings"):
        assert a[key] == b[key], key
