"""Stereo music (request.channels), its width, and multichannel stems by channel layout."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import soundfile as sf
from noise_signals import clacks

from bnmusic_bridge import audio as audio_io
from bnmusic_bridge.channel_layout import (
    DEFAULT_MASKS,
    default_speakers,
    mask_of,
    music_channels,
    place_music,
    set_wav_channel_mask,
    stem_speakers,
    wav_channel_mask,
)
from bnmusic_bridge.pipeline import render
from bnmusic_bridge.request import RenderRequest
from bnmusic_bridge.stereo import TARGET_SIDE_TO_MID_DB, widen, width_metrics

RATE = 44100
# Correlation range that goes with TARGET_SIDE_TO_MID_DB for uncorrelated mid and side:
# corr = (1 - r) / (1 + r) with r the side-to-mid power ratio.
_R = [10 ** (db / 10) for db in TARGET_SIDE_TO_MID_DB]
CORR_RANGE = ((1 - _R[1]) / (1 + _R[1]) - 0.05, (1 - _R[0]) / (1 + _R[0]) + 0.05)


def _noise(seconds: float = 3.0, channels: int = 1, seed: int = 1) -> np.ndarray:
    """Clacks over a soft hiss, the same on every channel plus a little per-channel hiss."""
    rng = np.random.default_rng(seed)
    base = clacks(seconds, RATE) + 0.02 * rng.standard_normal(int(seconds * RATE))
    out = np.repeat(base[None, :], channels, axis=0)
    return (out + 0.005 * rng.standard_normal(out.shape)).astype(np.float32)


def _in_range(x: np.ndarray) -> None:
    corr, side_db = width_metrics(x)
    lo, hi = TARGET_SIDE_TO_MID_DB
    assert lo - 0.5 <= side_db <= hi + 0.5, side_db
    assert CORR_RANGE[0] <= corr <= CORR_RANGE[1], corr


def test_width_metrics_of_known_signals():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(RATE)
    assert width_metrics(np.stack([a, a])) == pytest.approx((1.0, -np.inf))
    corr, side = width_metrics(np.stack([a, rng.standard_normal(RATE)]))
    assert abs(corr) < 0.02 and abs(side) < 0.2
    corr, side = width_metrics(np.stack([a, -a]))
    assert corr == pytest.approx(-1.0) and side == np.inf


def test_widen_lands_in_range_and_keeps_the_mono_sum():
    rng = np.random.default_rng(3)
    t = np.arange(2 * RATE) / RATE
    mono = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)).astype(
        np.float32
    )
    wide = widen(mono[None, :], RATE)
    assert wide.shape == (2, mono.size)
    _in_range(wide)
    np.testing.assert_allclose(wide.mean(axis=0), mono, atol=1e-6)
    # Bass stays mono: the side has (almost) nothing under the high-pass.
    side = 0.5 * (wide[0] - wide[1])
    spec = np.abs(np.fft.rfft(side))
    freqs = np.fft.rfftfreq(side.size, 1 / RATE)
    assert spec[freqs < 60].sum() < 0.01 * spec.sum()
    # Already wide music is left alone.
    unrelated = rng.standard_normal((2, RATE)).astype(np.float32)
    np.testing.assert_array_equal(widen(unrelated, RATE), unrelated)


def test_mono_stem_gets_stereo_music_in_the_measured_range():
    r = render(_noise(3.0, 1), RATE)
    assert r.music.shape == (2, 3 * RATE) and r.music_gained.shape == (2, 3 * RATE)
    assert r.details is not None and r.details.speakers == ("FL", "FR")
    _in_range(r.music)
    _in_range(r.music_gained)


def test_stereo_stem_gets_music_in_the_measured_range():
    r = render(_noise(3.0, 2), RATE)
    assert r.music.shape[0] == 2
    _in_range(r.music)


def test_channels_mono_gives_mono_music_with_the_same_mono_sum_shape():
    noise = _noise(3.0, 2)
    mono = render(noise, RATE, RenderRequest(channels="mono"))
    assert mono.music.shape == (1, 3 * RATE) and mono.details.speakers == ("FC",)
    stereo = render(noise, RATE)
    # The widening leaves the mono sum alone: the stereo music's mid is the mono music
    # up to the loudness match (the side adds loudness, so the mid comes down a little).
    mid = stereo.music.mean(axis=0)
    ratio = float(np.dot(mid, mono.music[0]) / np.dot(mono.music[0], mono.music[0]))
    residual = mid - ratio * mono.music[0]
    assert 0.8 < ratio <= 1.0
    assert np.sqrt(np.mean(residual**2)) < 1e-3 * np.sqrt(np.mean(mid**2)) + 1e-6


def test_channels_match_keeps_a_mono_stem_mono():
    r = render(_noise(3.0, 1), RATE, RenderRequest(channels="match"))
    assert r.music.shape[0] == 1


def test_channels_flag_and_refusal():
    from bnmusic_bridge.errors import ParameterError
    from bnmusic_bridge.frontends.args import build_request
    from bnmusic_bridge.frontends.cli import make_parser

    args = make_parser().parse_args(["render", "x.wav", "--channels", "mono"])
    assert build_request(args).channels == "mono"
    assert build_request(make_parser().parse_args(["render", "x.wav"])).channels == "stereo"
    with pytest.raises(ParameterError, match="channels"):
        render(_noise(1.0), RATE, RenderRequest(channels="surround"))


def test_six_channel_stem_music_on_front_pair_only(tmp_path):
    from bnmusic_bridge.export import ExportOptions, write_outputs

    noise = _noise(3.0, 6)
    r = render(noise, RATE)
    assert r.music.shape == (6, 3 * RATE)
    assert r.details.speakers == ("FL", "FR", "FC", "LFE", "SL", "SR")
    level = np.sqrt(np.mean(r.music_gained.astype(np.float64) ** 2, axis=1))
    assert level[0] > 0 and level[1] > 0
    assert np.all(r.music_gained[2:] == 0)  # centre, LFE, surrounds silent
    _in_range(r.music[:2])
    # The written stem keeps six channels and says so in its header (5.1, side).
    out = write_outputs(r, tmp_path, stem_name="five", options=ExportOptions())
    music_path = out.music
    assert sf.info(str(music_path)).channels == 6
    assert wav_channel_mask(music_path) == DEFAULT_MASKS[6]
    import json

    report = json.loads(out.report.read_text())
    assert report["speakers"] == ["FL", "FR", "FC", "LFE", "SL", "SR"] and report["channels"] == 6


def _wav_with_mask(path, audio: np.ndarray, mask: int, rate: int = RATE) -> None:
    """A 16-bit WAVE_FORMAT_EXTENSIBLE file written by hand (independent of the encoder)."""
    ch, n = audio.shape
    pcm = (np.clip(audio.T, -1, 1) * 32767).astype("<i2").tobytes()
    subformat = struct.pack("<IHH", 1, 0x0000, 0x0010) + bytes.fromhex("800000aa00389b71")
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, ch, rate, rate * ch * 2, ch * 2, 16, 22, 16, mask)
    fmt += subformat
    body = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", len(pcm))
        + pcm
    )
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def test_channel_mask_is_read_and_back_surround_layout_followed(tmp_path):
    p = tmp_path / "quad.wav"
    _wav_with_mask(p, _noise(1.0, 4), 0x33)
    assert wav_channel_mask(p) == 0x33
    assert sf.info(str(p)).channels == 4  # libsndfile reads the hand-made file too
    stem = audio_io.read_stem(p)
    assert stem.channel_mask == 0x33
    assert stem_speakers(4, stem.channel_mask) == ("FL", "FR", "BL", "BR")
    # WAV channel order is the order of the mask's bits: FL FR FC.
    assert stem_speakers(3, 0x7) == ("FL", "FR", "FC")
    # No front pair (C + LFE + sides): the side pair carries it, never LFE or centre.
    speakers = stem_speakers(4, 0x4 | 0x8 | 0x200 | 0x400)
    assert speakers == ("FC", "LFE", "SL", "SR")
    placed = place_music(np.stack([np.ones(10), -np.ones(10)]).astype(np.float32), speakers)
    assert np.all(placed[:2] == 0) and np.all(placed[2] == 1) and np.all(placed[3] == -1)
    # No pair at all (C, LFE, back centre): the one channel that is neither.
    assert music_channels(stem_speakers(3, 0x4 | 0x8 | 0x100)) == (2,)


def test_mask_patch_round_trip_and_plain_wavs():
    buf = io.BytesIO()
    audio_io.encode_audio(buf, np.zeros((8, 100), np.float32), RATE, bit_depth=24, file_type="wav")
    assert set_wav_channel_mask(buf, mask_of(default_speakers(8)))
    buf.seek(0)
    data, _ = sf.read(buf)
    assert data.shape == (100, 8)
    assert mask_of(default_speakers(8)) == 0x63F  # 7.1: FL FR FC LFE BL BR SL SR


def test_plain_stereo_wav_has_no_mask(tmp_path):
    p = tmp_path / "st.wav"
    sf.write(p, np.zeros((100, 2)), RATE)
    assert wav_channel_mask(p) is None
    (tmp_path / "x.wav").write_bytes(b"RIFF\x04\x00\x00\x00WAVE")
    assert wav_channel_mask(tmp_path / "x.wav") is None


def test_the_producers_own_track_keeps_its_image(tmp_path):
    t = np.arange(4 * RATE) / RATE
    track = tmp_path / "mine.wav"
    sf.write(track, (0.2 * np.sin(2 * np.pi * 330 * t) * (1 + np.sin(2 * np.pi * 2 * t))), RATE)
    r = render(_noise(3.0, 1), RATE, RenderRequest(generator="track", music=str(track)))
    assert r.music.shape[0] == 2
    np.testing.assert_array_equal(r.music[0], r.music[1])  # mono track: no side added


def test_cli_channels_mono_writes_mono_and_default_writes_stereo(tmp_path):
    from bnmusic_bridge.frontends.cli import main

    src = tmp_path / "bounce.wav"
    sf.write(src, _noise(2.0, 2).T, RATE)
    assert (
        main(
            [
                "render",
                str(src),
                "--out",
                str(tmp_path / "m"),
                "--channels",
                "mono",
                "--no-plot",
                "-q",
            ]
        )
        == 0
    )
    assert sf.info(str(tmp_path / "m" / "bounce.music.wav")).channels == 1
    assert sf.info(str(tmp_path / "m" / "bounce.blended.wav")).channels == 1
    mono_src = tmp_path / "mono.wav"
    sf.write(mono_src, _noise(2.0, 1)[0], RATE)
    assert main(["render", str(mono_src), "--out", str(tmp_path / "s"), "--no-plot", "-q"]) == 0
    assert sf.info(str(tmp_path / "s" / "mono.music.wav")).channels == 2
