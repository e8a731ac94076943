"""Scratch-file arrays and block views (bnmusic_bridge.scratch)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from bnmusic_bridge.scratch import (
    DISK_ABOVE_S,
    SCRATCH_ENV,
    ChannelMean,
    Cropped,
    DiskArray,
    DiskStore,
    Mapped,
    MemoryStore,
    ZeroPadded,
    blocks,
    copy_into,
    crop,
    is_whole,
    store_for,
)


@pytest.fixture()
def audio() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((3, 10_007)).astype(np.float32)


def test_disk_array_round_trip_by_slices(audio: np.ndarray) -> None:
    d = DiskArray(audio.shape, np.float32)
    for a, b in blocks(audio.shape[1], 999):
        d[:, a:b] = audio[:, a:b]
    assert np.array_equal(np.asarray(d), audio)
    assert np.array_equal(d[:, 17:4000], audio[:, 17:4000])
    assert np.array_equal(d[1, 5:9], audio[1, 5:9])
    assert np.array_equal(d[0:2, 5:9], audio[0:2, 5:9])
    assert np.array_equal(d[:, 123], audio[:, 123])
    assert np.array_equal(d[:, -1], audio[:, -1])
    assert d[:, 9_000:20_000].shape == (3, 1_007)  # clipped like numpy
    assert d.shape == audio.shape and d.dtype == np.float32 and d.ndim == 2
    assert d.nbytes == audio.nbytes


def test_disk_array_starts_as_zeros_and_takes_1d_and_bool() -> None:
    m = DiskArray((50,), np.float32)
    assert not np.any(np.asarray(m))
    m[10:20] = np.arange(10)
    assert np.array_equal(m[8:12], [0, 0, 0, 1])
    assert m[19] == 9
    b = DiskArray((4, 10), bool)
    b[:, 2:4] = True
    want = np.zeros((4, 10), bool)
    want[:, 2:4] = True
    assert np.array_equal(np.asarray(b), want)


def test_disk_array_refuses_bad_writes_and_steps(audio: np.ndarray) -> None:
    d = DiskArray(audio.shape, np.float32)
    with pytest.raises(ValueError, match="cannot write"):
        d.write(10_000, audio[:, :100])
    with pytest.raises(IndexError, match="no step"):
        d[:, ::2]
    with pytest.raises(IndexError, match="whole rows"):
        d[0, 0:10] = 1.0


def test_disk_array_read_limit_catches_whole_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    d = DiskArray((2, 100_000), np.float32)
    monkeypatch.setattr(DiskArray, "max_read_bytes", 100_000)
    assert d[:, 0:10_000].shape == (2, 10_000)
    with pytest.raises(MemoryError, match="max_read_bytes"):
        np.asarray(d)


def test_disk_array_pickles_by_value(audio: np.ndarray) -> None:
    d = copy_into(DiskStore(), audio)
    back = pickle.loads(pickle.dumps(d))
    assert isinstance(back, np.ndarray) and np.array_equal(back, audio)


def test_views_answer_slices_like_numpy(audio: np.ndarray) -> None:
    d = copy_into(DiskStore(), audio)
    mean = ChannelMean(d)
    assert np.array_equal(mean[:, 100:300], audio[:, 100:300].mean(axis=0, keepdims=True))
    flat = ChannelMean(d, keepdims=False)
    assert np.array_equal(flat[100:300], audio[:, 100:300].mean(axis=0))
    padded = ZeroPadded(flat, 12_000)
    assert padded.shape == (12_000,)
    tail = padded[9_990:10_020]
    assert np.array_equal(tail[:17], audio[:, 9_990:].mean(axis=0))
    assert not np.any(tail[17:])
    doubled = Mapped(d, lambda p: 2 * p[:2], 2)
    assert np.array_equal(np.asarray(doubled), 2 * audio[:2])
    cut = crop(d, 5_000)
    assert isinstance(cut, Cropped) and cut.shape == (3, 5_000)
    assert np.array_equal(np.asarray(cut), audio[:, :5_000])
    assert crop(audio, 5_000).base is audio  # numpy stays a view


def test_store_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SCRATCH_ENV, raising=False)
    assert isinstance(store_for(10.0), MemoryStore)
    assert isinstance(store_for(DISK_ABOVE_S + 1), DiskStore)
    monkeypatch.setenv(SCRATCH_ENV, "disk")
    assert isinstance(store_for(10.0), DiskStore)
    monkeypatch.setenv(SCRATCH_ENV, "memory")
    assert isinstance(store_for(10_000.0), MemoryStore)
    monkeypatch.setenv(SCRATCH_ENV, "floppy")
    with pytest.raises(ValueError, match="BNMUSIC_SCRATCH"):
        store_for(1.0)
    assert is_whole(np.zeros(3)) and not is_whole(DiskStore().empty((3,), np.float32))
