"""Whole-stem audio as block arrays (issue 18): reading a stem into a disk store, its
checks, peak and means, resampling and the analysis mono, each equal to the numpy path."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bnmusic_bridge import scratch
from bnmusic_bridge.audio import (
    Stem,
    check_audio,
    peak_and_means,
    read_stem,
    resample,
    to_analysis_mono,
)
from bnmusic_bridge.errors import AudioInputError
from bnmusic_bridge.scratch import DiskArray, DiskStore, MemoryStore, copy_into


def noise(seconds: float, rate: int, channels: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = 0.1 * rng.standard_normal((channels, int(seconds * rate)))
    return (x + 0.01 * np.arange(channels)[:, None]).astype(np.float32)


def on_disk(x: np.ndarray) -> DiskArray:
    """``x`` copied into a scratch-file DiskArray."""
    return copy_into(DiskStore(), x)

@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 10,007 samples, so a few seconds of audio crosses many block edges."""
    monkeypatch.setattr(scratch, "BLOCK_SAMPLES", 10_007)


def write(path: Path, x: np.ndarray, rate: int, **kwargs: object) -> Path:
    from pedalboard.io import AudioFile

    with AudioFile(str(path), "w", rate, x.shape[0], **kwargs) as f:
        f.write(x)
    return path


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("s.wav", {"bit_depth": 24}),
        ("s.flac", {"bit_depth": 16}),
        ("s.aiff", {"bit_depth": 24}),
        ("s.ogg", {"quality": "160 kbps"}),
        ("s.mp3", {"quality": "V2"}),
    ],
)
@pytest.mark.usefixtures("small_blocks")
def test_read_stem_into_a_disk_store_equals_the_numpy_read(tmp_path, name, kwargs) -> None:
    if name.endswith(".mp3") and "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile cannot read MP3")
    x = noise(2.3, 44100 if name.endswith(".mp3") else 48000)
    x[0, 5000:5010] = 1.0  # a few clipped samples
    p = write(tmp_path / name, x, 44100 if name.endswith(".mp3") else 48000, **kwargs)
    whole = read_stem(p)
    blocked = read_stem(p, store=DiskStore(str(tmp_path)))
    assert isinstance(blocked.audio, DiskArray)
    assert np.array_equal(np.asarray(blocked.audio), whole.audio)
    assert blocked.sample_rate_hz == whole.sample_rate_hz
    assert blocked.clipped_share == whole.clipped_share > 0
    assert blocked.path == whole.path
    in_memory = read_stem(p, store=MemoryStore())
    assert isinstance(in_memory.audio, np.ndarray)
    assert np.array_equal(in_memory.audio, whole.audio)


@pytest.mark.usefixtures("small_blocks")
def test_read_stem_blocks_keeps_the_channel_mask(tmp_path) -> None:
    p = write(tmp_path / "six.wav", noise(1.0, 48000, channels=6), 48000, bit_depth=24)
    whole = read_stem(p)
    blocked = read_stem(p, store=DiskStore())
    assert blocked.channel_mask == whole.channel_mask
    assert np.array_equal(np.asarray(blocked.audio), whole.audio)


def errors_of(p: Path) -> tuple[str, str]:
    messages = []
    for store in (None, DiskStore()):
        with pytest.raises(AudioInputError) as e:
            read_stem(p, store=store)
        messages.append(str(e.value))
    return messages[0], messages[1]


@pytest.mark.usefixtures("small_blocks")
def test_read_stem_blocks_gives_the_same_errors(tmp_path) -> None:
    x = noise(2.0, 48000)
    x[1, 30_000] = np.nan
    x[0, 20_000] = 5000.0  # too loud, but the NaN wins
    whole, blocked = errors_of(write(tmp_path / "nan.wav", x, 48000, bit_depth=32))
    assert whole == blocked and "NaN" in whole and "sample 30000" in whole
    x = noise(2.0, 48000)
    x[0, 20_000] = 5000.0
    x[1, 70_000] = -9000.0  # the peak is past the first loud sample
    whole, blocked = errors_of(write(tmp_path / "loud.wav", x, 48000, bit_depth=32))
    assert whole == blocked and "+79 dBFS" in whole and "sample 20000" in whole
    short = write(tmp_path / "short.wav", noise(0.2, 48000), 48000, bit_depth=24)
    whole, blocked = errors_of(short)
    assert whole == blocked and "at least 0.5 s" in whole
    cut = tmp_path / "cut.wav"
    data = write(tmp_path / "full.wav", noise(2.0, 48000), 48000, bit_depth=24).read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    whole, blocked = errors_of(cut)
    assert whole == blocked and "truncated" in whole


def test_check_audio_takes_a_disk_array(monkeypatch) -> None:
    monkeypatch.setattr(scratch, "BLOCK_SAMPLES", 1000)
    x = noise(1.0, 44100)
    x[:, 100:140] = -1.0
    arr = on_disk(x)
    stem = check_audio(arr, 44100)
    assert stem.audio is arr
    assert stem.clipped_share == check_audio(x, 44100).clipped_share
    x[0, 12_345] = np.inf
    with pytest.raises(AudioInputError) as whole:
        check_audio(x, 44100)
    with pytest.raises(AudioInputError) as blocked:
        check_audio(on_disk(x), 44100)
    assert str(whole.value) == str(blocked.value)


def test_peak_and_means(monkeypatch) -> None:
    monkeypatch.setattr(scratch, "BLOCK_SAMPLES", 4099)
    x = noise(3.0, 48000, channels=3)
    x[2, 77_777] = -0.95
    peak, means = peak_and_means(x)
    assert peak == float(np.max(np.abs(x)))
    assert np.array_equal(means, x.mean(axis=1, keepdims=True))
    peak_d, means_d = peak_and_means(on_disk(x))
    assert peak_d == peak
    assert means_d.shape == (3, 1) and means_d.dtype == np.float32
    # float64 block sums rounded once to float32; numpy's float32 pairwise mean agrees to
    # a few float32 ulps of the channel's scale
    exact = x.astype(np.float64).mean(axis=1, keepdims=True)
    assert np.array_equal(means_d, exact.astype(np.float32))
    assert np.max(np.abs(means_d - means)) <= 1e-6 * float(np.max(np.abs(x)))


@pytest.mark.parametrize(("rate", "target"), [(48000, 44100), (44100, 48000), (22050, 44100)])
@pytest.mark.parametrize("extra", [-1000, 0, 5000])
def test_resample_in_blocks_equals_one_call(monkeypatch, rate, target, extra) -> None:
    monkeypatch.setattr(scratch, "BLOCK_SAMPLES", 7919)
    x = noise(1.1, rate)
    n = int(round(x.shape[1] * target / rate)) + extra
    ref = resample(x, rate, target, n)
    for src in (x, on_disk(x)):
        for store in (None, MemoryStore(), DiskStore()):
            if store is None and src is x:
                continue
            got = resample(src, rate, target, n, store=store)
            assert isinstance(got, DiskArray) == isinstance(store, DiskStore)
            assert got.shape == ref.shape
            assert np.array_equal(np.asarray(got), ref)


def test_resample_same_rate_in_blocks(monkeypatch) -> None:
    monkeypatch.setattr(scratch, "BLOCK_SAMPLES", 7919)
    x = noise(1.0, 44100).astype(np.float64)
    for n in (30_000, 44_100, 60_001):
        ref = resample(x, 44100, 44100, n)
        got = resample(on_disk(x), 44100, 44100, n, store=DiskStore())
        assert np.array_equal(np.asarray(got), ref)


@pytest.mark.parametrize("rate", [44100, 48000, 32000])
@pytest.mark.parametrize("channels", [1, 2, 6])
def test_to_analysis_mono_from_a_disk_array(monkeypatch, rate, channels) -> None:
    monkeypatch.setattr(scratch, "BLOCK_SAMPLES", 7919)
    x = noise(1.3, rate, channels=channels)
    ref = to_analysis_mono(Stem(x, rate))
    for stem in (Stem(x, rate), Stem(on_disk(x), rate)):
        for store in (MemoryStore(), DiskStore(), None):
            got = to_analysis_mono(stem, store=store)
            assert isinstance(got, DiskArray) == isinstance(store, DiskStore)
            assert got.shape == ref.shape
            assert np.array_equal(np.asarray(got), ref)


def test_read_stem_into_a_disk_store_keeps_memory_small(tmp_path) -> None:
    rate = 48000
    x = noise(120.0, rate)  # 46 MB as float32
    p = write(tmp_path / "long.wav", x, rate, bit_depth=16)
    del x
    tracemalloc.start()
    try:
        stem = read_stem(p, store=DiskStore(str(tmp_path)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stem.num_samples == 120 * rate
    size = stem.num_channels * stem.num_samples * 4
    assert peak < size / 4


def test_channel_means_are_peak_and_means_means() -> None:
    from bnmusic_bridge.audio import channel_means

    x = np.random.default_rng(5).standard_normal((3, 40_000)).astype(np.float32)
    assert np.array_equal(channel_means(x), peak_and_means(x)[1])
    d = DiskArray(x.shape, np.float32)
    d[:, :] = x
    assert np.array_equal(channel_means(d), peak_and_means(d)[1])
