"""The analysis side with block arrays (issue 18): loudness, the mel, the high-energy mask
and analyse_stem read DiskArrays and views by slices and give what numpy input gives,
bit for bit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import signal

from bnmusic_bridge import analysis, scratch
from bnmusic_bridge import spectrogram as spec
from bnmusic_bridge.analysis import analyse_stem, onset_envelope, tonal_peaks
from bnmusic_bridge.errors import AudioInputError, ParameterError
from bnmusic_bridge.loudness import integrated_lufs
from bnmusic_bridge.mask import high_energy_mask
from bnmusic_bridge.scratch import (
    ChannelMean,
    DiskArray,
    DiskStore,
    MemoryStore,
    ZeroPadded,
    copy_into,
)

SR = 44_100


def on_disk(x: np.ndarray) -> DiskArray:
    """``x`` copied into a scratch-file DiskArray."""
    return copy_into(DiskStore(), x)

def clicks_over_noise(seconds: float, seed: int = 0) -> np.ndarray:
    """Band-passed noise with a burst every 0.4 s and a 1 kHz hum: mono float32."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    x = 0.02 * rng.standard_normal(n)
    for i in range(2000, n - 2000, int(0.4 * SR)):
        x[i : i + 600] += 0.4 * np.exp(-np.arange(600) / 200.0) * rng.standard_normal(600)
    sos = signal.butter(4, [100.0, 6_000.0], "bandpass", fs=SR, output="sos")
    x = signal.sosfilt(sos, x) + 0.05 * np.sin(2 * np.pi * 1000.0 * np.arange(n) / SR)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def noise() -> np.ndarray:
    return clicks_over_noise(12.0)


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small blocks everywhere, so a short stem crosses many block edges."""
    monkeypatch.setattr(scratch, "BLOCK_SAMPLES", 10_007)
    monkeypatch.setattr(scratch, "BLOCK_FRAMES", 37)
    monkeypatch.setattr(spec, "MEL_CHUNK_FRAMES", 300)
    monkeypatch.setattr(analysis, "PAIRWISE_LEAF_FRAMES", 100)


@pytest.mark.usefixtures("small_blocks")
def test_integrated_lufs_of_block_arrays(monkeypatch, noise) -> None:
    import bnmusic_bridge.loudness as loudness

    monkeypatch.setattr(loudness, "LOUDNESS_CHUNK_SAMPLES", 30_011)
    stereo = np.stack([noise, 0.5 * noise[::-1] + 0.01])
    means = stereo.mean(axis=1, keepdims=True)
    ref = integrated_lufs(stereo, SR, offset=means)
    assert integrated_lufs(on_disk(stereo), SR, offset=means) == ref
    assert integrated_lufs(on_disk(noise), SR) == integrated_lufs(noise, SR)
    six = np.concatenate([stereo, stereo[::-1], 0.3 * stereo])
    assert integrated_lufs(on_disk(six), SR) == integrated_lufs(six, SR)
    view = ChannelMean(on_disk(stereo), keepdims=False)
    assert integrated_lufs(view, SR) == integrated_lufs(stereo.mean(axis=0), SR)
    assert integrated_lufs(on_disk(noise[:5000]), SR) == integrated_lufs(noise[:5000], SR)


@pytest.mark.parametrize("chunk", [300, 2048])
def test_audio_to_mel_of_block_arrays(monkeypatch, noise, chunk) -> None:
    monkeypatch.setattr(spec, "MEL_CHUNK_FRAMES", chunk)
    ref = spec.audio_to_mel(noise)
    seen: list[float] = []
    got = spec.audio_to_mel(on_disk(noise), progress=seen.append, store=DiskStore())
    assert isinstance(got, DiskArray)
    assert np.array_equal(np.asarray(got), ref)
    assert seen[-1] == 1.0
    in_memory = spec.audio_to_mel(noise, store=MemoryStore())
    assert isinstance(in_memory, np.ndarray) and np.array_equal(in_memory, ref)
    # the pipeline's padded mono: a view of the mono followed by zeros
    padded = np.concatenate([noise, np.zeros(50_000, np.float32)])
    view = ZeroPadded(on_disk(noise), padded.size)
    assert np.array_equal(np.asarray(spec.audio_to_mel(view)), spec.audio_to_mel(padded))


def test_audio_to_mel_block_errors(noise) -> None:
    bad = noise.copy()
    bad[70_000] = np.nan
    with pytest.raises(AudioInputError) as whole:
        spec.audio_to_mel(bad)
    with pytest.raises(AudioInputError) as blocked:
        spec.audio_to_mel(on_disk(bad), store=DiskStore())
    assert str(whole.value) == str(blocked.value)
    with pytest.raises(AudioInputError, match="needs at least"):
        spec.audio_to_mel(on_disk(noise[:1000]))
    with pytest.raises(AudioInputError, match="mono 1-D"):
        spec.audio_to_mel(on_disk(np.stack([noise, noise])))


def speckled_mel(frames: int, seed: int = 3) -> np.ndarray:
    """A mel with loud isolated pixels and pairs (specks, some across any block edge),
    small clusters, long ridges, a level change and a silent stretch."""
    rng = np.random.default_rng(seed)
    mel = (rng.random((spec.N_MELS, frames), dtype=np.float32) ** 3).astype(np.float32)
    mel[:, frames // 2 :] *= 30.0
    for _ in range(4000):
        r, c = rng.integers(0, spec.N_MELS - 3), rng.integers(0, frames - 3)
        h, w = rng.integers(1, 4), rng.integers(1, 4)
        mel[r : r + h, c : c + w] = 500.0 * rng.random()
    mel[100:103, :] = 400.0  # ridges across every block
    mel[:, 900:1000] = 0.0
    return mel


@pytest.mark.usefixtures("small_blocks")
@pytest.mark.parametrize("windows", [None, "windows"])
@pytest.mark.parametrize("valid", [None, 1700])
def test_high_energy_mask_of_block_arrays(windows, valid) -> None:
    frames = 2000
    mel = speckled_mel(frames)
    kwargs = {"valid_frames": valid}
    if windows:
        kwargs.update(window_starts=list(range(0, frames - 200, 256)), window_frames=512)
    ref = high_energy_mask(mel, 0.15, **kwargs)
    assert ref.any() and not ref.all()
    for source in (mel, on_disk(mel)):
        for store in (None, MemoryStore(), DiskStore()):
            if store is None and source is mel:
                continue
            got = high_energy_mask(source, 0.15, store=store, **kwargs)
            assert isinstance(got, DiskArray) == isinstance(store, DiskStore)
            assert got.dtype == np.bool_
            assert np.array_equal(np.asarray(got), ref)


@pytest.mark.usefixtures("small_blocks")
def test_high_energy_mask_of_silence_in_blocks() -> None:
    mel = np.zeros((spec.N_MELS, 500), np.float32)
    got = high_energy_mask(on_disk(mel), 0.15, store=DiskStore())
    assert np.array_equal(np.asarray(got), high_energy_mask(mel, 0.15))
    mel[3, 450] = 1.0  # loud only in the padding
    got = high_energy_mask(on_disk(mel), 0.15, valid_frames=400, store=DiskStore())
    assert not np.asarray(got).any()


def assert_same_analysis(got: analysis.StemAnalysis, ref: analysis.StemAnalysis) -> None:
    for f in dataclasses.fields(ref):
        a, b = getattr(got, f.name), getattr(ref, f.name)
        if isinstance(b, np.ndarray):
            assert a.dtype == b.dtype and np.array_equal(a, b), f.name
        else:
            assert a == b, f.name


@pytest.mark.usefixtures("small_blocks")
def test_analyse_stem_of_block_arrays(noise) -> None:
    mel = spec.audio_to_mel(noise)
    mask = high_energy_mask(mel, 0.15)
    ref = analyse_stem(noise, mel, mask)
    assert ref.tempo_bpm is not None and ref.tonal_peaks_hz.size > 0
    got = analyse_stem(on_disk(noise), on_disk(mel), on_disk(mask))
    assert_same_analysis(got, ref)
    # the mono as a view of a stereo stem on disk
    stereo = np.stack([noise, noise])
    view = ChannelMean(on_disk(stereo), keepdims=False)
    assert np.array_equal(np.asarray(view), noise)
    assert_same_analysis(analyse_stem(view, on_disk(mel), mask), ref)


def test_band_means_follow_numpys_pairwise_sum(monkeypatch) -> None:
    rng = np.random.default_rng(7)
    for leaf in (100, 200, 2048):
        monkeypatch.setattr(analysis, "PAIRWISE_LEAF_FRAMES", leaf)
        for frames in (5, 129, 2048, 2049, 10_007):
            mel = (rng.lognormal(0.0, 4.0, (8, frames))).astype(np.float32)
            ref = np.array([row.astype(np.float64).mean() for row in mel])
            got = analysis._pairwise_row_sums(on_disk(mel), 0, frames) / frames
            assert np.array_equal(got, ref), (leaf, frames)


def test_onset_envelope_and_tonal_peaks_of_block_arrays(noise) -> None:
    for n in (4096, 4096 + 441 * 3 + 17, noise.size):
        x = noise[:n]
        frames = n // 441 + 1
        assert np.array_equal(onset_envelope(on_disk(x), frames), onset_envelope(x, frames))
    short = noise[:9000]
    for x in (noise, short):
        got, ref = tonal_peaks(on_disk(x)), tonal_peaks(x)
        assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1])


def test_analyse_stem_block_errors(noise) -> None:
    mel = spec.audio_to_mel(noise)
    mask = high_energy_mask(mel, 0.15)
    bad = noise.copy()
    bad[-5] = np.inf
    with pytest.raises(AudioInputError, match="NaN or inf"):
        analyse_stem(on_disk(bad), mel, mask)
    with pytest.raises(AudioInputError, match="mono 1-D"):
        analyse_stem(on_disk(np.stack([noise, noise])), mel, mask)
    with pytest.raises(ParameterError, match="mel has shape"):
        analyse_stem(on_disk(noise), on_disk(mel[:, :-1]), mask)
    with pytest.raises(ParameterError, match="mask has shape"):
        analyse_stem(on_disk(noise), on_disk(mel), on_disk(mask[:-1]))


def test_the_analysis_chain_reads_disk_arrays_only_in_blocks(tmp_path, monkeypatch) -> None:
    """read_stem -> to_analysis_mono -> (zero-padded) audio_to_mel -> high_energy_mask ->
    analyse_stem on disk: no stage reads a whole-stem array whole, and the analysis is
    the numpy chain's."""
    from pedalboard.io import AudioFile

    from bnmusic_bridge.audio import peak_and_means, read_stem, to_analysis_mono

    monkeypatch.setattr(scratch, "BLOCK_SAMPLES", 50_021)
    monkeypatch.setattr(scratch, "BLOCK_FRAMES", 97)
    monkeypatch.setattr(spec, "MEL_CHUNK_FRAMES", 300)
    x = clicks_over_noise(40.0)
    stereo = np.stack([x, 0.8 * x])
    p = tmp_path / "stem.wav"
    with AudioFile(str(p), "w", 48000, 2, bit_depth=24) as f:
        f.write(stereo)
    longest: dict[int, tuple[int, int]] = {}  # id: (length, longest read)
    read = DiskArray.read

    def spy(self: DiskArray, start: int, stop: int) -> np.ndarray:
        length, most = longest.get(id(self), (self.shape[-1], 0))
        longest[id(self)] = (length, max(most, stop - start))
        return read(self, start, stop)

    def chain(store: scratch.ArrayStore | None) -> analysis.StemAnalysis:
        stem = read_stem(p, store=store)
        peak_and_means(stem.audio)
        integrated_lufs(stem.audio, stem.sample_rate_hz)
        mono = to_analysis_mono(stem, store=store)
        n = mono.shape[0]
        padded = ZeroPadded(mono, n + 30_000) if store else np.pad(mono, (0, 30_000))
        mel_padded = spec.audio_to_mel(padded, store=store)
        frames = spec.num_frames(n)
        starts = list(range(0, frames, 256))
        mask_padded = high_energy_mask(
            mel_padded, 0.15, window_starts=starts, valid_frames=frames, store=store
        )
        if store is None:
            return analyse_stem(mono, mel_padded[:, :frames], mask_padded[:, :frames])
        return analyse_stem(
            mono, _FirstFrames(mel_padded, frames), _FirstFrames(mask_padded, frames)
        )

    ref = chain(None)
    monkeypatch.setattr(DiskArray, "read", spy)
    got = chain(DiskStore(str(tmp_path)))
    assert_same_analysis(got, ref)
    assert len(longest) >= 4  # the stem, the mono, the mel and the mask were all read
    for length, most in longest.values():
        # bounded by the stages' blocks (at most 1,024 onset frames of audio, 2,048
        # frames of mel), never the whole array
        assert most < length and most <= 1024 * 441 + 2048, (length, most)


class _FirstFrames:
    """The first ``frames`` columns of a 2-D block array (a view)."""

    def __init__(self, x: DiskArray, frames: int) -> None:
        self.x, self.shape, self.dtype = x, (x.shape[0], frames), x.dtype

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        rows, cols = key
        a, b, _ = cols.indices(self.shape[1])
        return self.x[rows, a:b]
