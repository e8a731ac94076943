"""Audio input checks and atomic, no-clobber output writing."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from bnmusic_bridge.audio import (
    check_audio,
    match_channels,
    read_stem,
    resample,
    to_analysis_mono,
    write_audio,
    write_bytes_atomic,
)
from bnmusic_bridge.errors import AudioInputError, OutputExistsError, ParameterError


def noise(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((channels, int(seconds * rate)))).astype(np.float32)


def test_missing_file_names_the_path(tmp_path):
    p = tmp_path / "nope.wav"
    with pytest.raises(AudioInputError, match="nope.wav: no such file"):
        read_stem(p)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.wav"
    p.write_bytes(b"")
    with pytest.raises(AudioInputError, match="empty.wav: the file is empty"):
        read_stem(p)


def test_non_audio_file(tmp_path):
    p = tmp_path / "notes.wav"
    p.write_text("these are not samples\n" * 100)
    with pytest.raises(AudioInputError, match="notes.wav: not a readable audio file"):
        read_stem(p)


def test_truncated_wav(tmp_path):
    p = tmp_path / "cut.wav"
    sf.write(p, noise(2.0, 44100)[0], 44100, subtype="PCM_16")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])  # the header still promises 2 s
    with pytest.raises(AudioInputError, match="cut.wav"):
        read_stem(p)


def test_nan_and_inf_samples_refused(tmp_path):
    x = noise(1.0, 44100)[0]
    x[1000] = np.nan
    p = tmp_path / "nan.wav"
    sf.write(p, x, 44100, subtype="FLOAT")
    with pytest.raises(AudioInputError, match=r"nan.wav: audio holds NaN or infinite samples \(first at sample 1000"):
        read_stem(p)
    y = noise(1.0, 44100)
    y[0, 5] = np.inf
    with pytest.raises(AudioInputError, match="<audio array>: audio holds NaN"):
        check_audio(y, 44100)


def test_too_short_and_rate_limits():
    with pytest.raises(AudioInputError, match="0.300 s long; at least 0.5 s"):
        check_audio(noise(0.3, 44100), 44100)
    with pytest.raises(AudioInputError, match="sample rate 4000 Hz is not supported"):
        check_audio(noise(1.0, 4000), 4000)
    with pytest.raises(AudioInputError, match="9 channels"):
        check_audio(noise(1.0, 8000, channels=9), 8000)
    with pytest.raises(AudioInputError, match=r"looks like \(samples, channels\)"):
        check_audio(noise(1.0, 8000, channels=2).T, 8000)


@pytest.mark.parametrize("rate", [8000, 22050, 48000, 96000, 192000])
def test_reads_rates_and_reports_clipping(tmp_path, rate):
    x = noise(0.75, rate, channels=2)
    x[0, :10] = 1.0
    p = tmp_path / f"r{rate}.wav"
    sf.write(p, x.T, rate, subtype="FLOAT")
    stem = read_stem(p)
    assert stem.sample_rate_hz == rate
    assert stem.audio.shape == x.shape
    assert stem.clipped_share == pytest.approx(10 / x.size)
    mono = to_analysis_mono(stem)
    assert mono.shape == (int(round(x.shape[1] * 44100 / rate)),)


@pytest.mark.parametrize("suffix", [".flac", ".aiff", ".ogg", ".mp3"])
def test_reads_compressed_and_other_containers(tmp_path, suffix):
    from pedalboard.io import AudioFile

    x = noise(1.0, 44100, channels=2)
    p = tmp_path / f"x{suffix}"
    with AudioFile(str(p), "w", 44100, 2) as f:
        f.write(x)
    stem = read_stem(p)
    assert stem.num_channels == 2
    # MP3 and OGG encoders add priming/padding; the length is within 50 ms.
    assert abs(stem.num_samples - x.shape[1]) < 2205


def test_resample_keeps_timing_and_length():
    x = np.zeros((1, 48000), np.float32)
    x[0, 24000] = 1.0
    y = resample(x, 48000, 44100, 44100)
    assert y.shape == (1, 44100)
    assert int(np.argmax(np.abs(y[0]))) == 22050


def test_match_channels_layouts():
    stereo = np.stack([np.ones(10, np.float32), -np.ones(10, np.float32)])
    assert match_channels(stereo, 1).shape == (1, 10)
    six = match_channels(stereo, 6)
    assert six.shape == (6, 10)
    assert np.all(six[0::2] == 1) and np.all(six[1::2] == -1)
    assert match_channels(stereo[:1], 4).shape == (4, 10)


@pytest.mark.parametrize(("bit_depth", "subtype"), [(16, "PCM_16"), (24, "PCM_24"), (32, "FLOAT")])
def test_write_bit_depths_read_back_independently(tmp_path, bit_depth, subtype):
    x = noise(0.6, 48000, channels=3)
    p = write_audio(tmp_path / "out.wav", x, 48000, bit_depth=bit_depth)
    info = sf.info(p)
    assert (info.samplerate, info.frames, info.channels, info.subtype) == (48000, x.shape[1], 3, subtype)
    y, _ = sf.read(p, dtype="float32", always_2d=True)
    assert np.max(np.abs(y.T - x)) < 2.0 ** -(bit_depth - 2) if bit_depth < 32 else np.array_equal(y.T, x)


def test_write_flac_and_refusals(tmp_path):
    x = noise(0.6, 44100)
    p = write_audio(tmp_path / "out.flac", x, 44100, bit_depth=16)
    assert sf.info(p).format == "FLAC"
    with pytest.raises(ParameterError, match="FLAC stores 16 or 24"):
        write_audio(tmp_path / "o2.flac", x, 44100, bit_depth=32)
    with pytest.raises(ParameterError, match="output type 'mp4'"):
        write_audio(tmp_path / "o.mp4", x, 44100)


def test_no_clobber_and_force(tmp_path):
    p = tmp_path / "keep.wav"
    p.write_bytes(b"user's precious take")
    with pytest.raises(OutputExistsError, match="keep.wav: exists already; pass --force"):
        write_audio(p, noise(0.6, 44100), 44100)
    assert p.read_bytes() == b"user's precious take"
    write_audio(p, noise(0.6, 44100), 44100, force=True)
    assert sf.info(p).frames == int(0.6 * 44100)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["keep.wav"]  # no temp files left


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import bnmusic_bridge.audio as audio_mod

    def boom(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise RuntimeError("disk full")

    from bnmusic_bridge.errors import OutputError

    with pytest.raises(OutputError, match=r"x.wav: writing failed \(disk full\)"):
        audio_mod._atomic(tmp_path / "x.wav", boom, force=False)
    assert list(tmp_path.iterdir()) == []


def test_write_bytes_atomic(tmp_path):
    p = write_bytes_atomic(tmp_path / "a.json", b"{}")
    assert p.read_bytes() == b"{}"
    with pytest.raises(OutputExistsError):
        write_bytes_atomic(p, b"[]")
    assert p.read_bytes() == b"{}"


def test_outputs_get_umask_permissions(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        p = write_bytes_atomic(tmp_path / "perm.txt", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644


def test_length_cap_and_header_probe(tmp_path):
    from bnmusic_bridge.audio import probe_stem

    p = tmp_path / "one_second.wav"
    sf.write(p, noise(1.0, 48000, channels=2).T, 48000, subtype="PCM_24")
    info = probe_stem(p)
    assert (info.sample_rate_hz, info.num_channels, info.num_frames) == (48000, 2, 48000)
    with pytest.raises(AudioInputError, match="one_second.wav: the stem is 0.0 min long; at most"):
        read_stem(p, max_duration_s=0.5)
    assert read_stem(p, max_duration_s=1.0).num_samples == 48000


def test_levels_over_60_dbfs_are_refused_but_float_overs_are_not():
    x = noise(1.0, 44100)
    x[0, 10] = 8.0  # +18 dBFS: a hot float bounce, rendered
    assert check_audio(x, 44100).num_samples == 44100
    x[0, 20] = 2000.0
    with pytest.raises(AudioInputError, match=r"<audio array>: audio peaks at \+66 dBFS .*sample 20"):
        check_audio(x, 44100)


def test_temp_names_carry_the_writer_and_keep_the_suffix():
    import os

    from bnmusic_bridge.audio import temp_name

    name = temp_name("x.music.flac")
    assert name.startswith(f".x.music.{os.getpid()}-") and name.endswith(".tmp.flac")
