"""The render pipeline end to end with the embedded generator."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from noise_signals import clacks

from bnmusic_bridge import RenderRequest, render, render_file, write_outputs
from bnmusic_bridge.errors import AudioInputError, OutputExistsError, ParameterError

FAST = RenderRequest(prompt="lo-fi piano", seed=7)


@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (44100, 2), (48000, 6), (22050, 8), (192000, 1)])
def test_outputs_are_sample_aligned_with_the_input(rate, channels):
    mono = clacks(1.3, rate, period_s=0.25)
    noise = np.stack([mono * (0.5 + 0.1 * c) for c in range(channels)])
    res = render(noise, rate, FAST.replace(channels="match"))  # the stem's own layout
    assert res.sample_rate_hz == rate and res.num_samples == noise.shape[1]
    assert res.music.shape == noise.shape and res.music_gained.shape == noise.shape
    assert res.music.dtype == np.float32
    assert np.all(np.isfinite(res.music_gained))
    assert 0.0 <= res.coverage <= 1.0
    assert res.lane_gain_db.min() >= FAST.min_gain_db - 1e-6
    assert res.lane_gain_db.max() <= FAST.max_gain_db + 1e-6
    # the unity stem is loudness-matched to the noise (BS.1770, both in the stem's layout)
    from bnmusic_bridge.loudness import integrated_lufs

    assert integrated_lufs(res.music, rate) == pytest.approx(integrated_lufs(noise, rate), abs=0.5)
    # the reported loudnesses are metered as a DAW would: the stem's own layout
    assert res.noise_lufs == pytest.approx(integrated_lufs(noise, rate), abs=0.01)
    assert res.music_lufs == pytest.approx(integrated_lufs(res.music_gained, rate), abs=0.01)


def test_same_seed_is_bit_identical_and_seed_matters():
    noise = clacks(2.0)
    a = render(noise, 44100, FAST)
    b = render(noise, 44100, FAST)
    assert np.array_equal(a.music_gained, b.music_gained)
    assert np.array_equal(a.lane_gain_db, b.lane_gain_db)
    c = render(noise, 44100, FAST.replace(seed=8))
    assert not np.array_equal(a.music, c.music)


def test_silent_noise_is_refused_clearly():
    with pytest.raises(AudioInputError, match="the noise is silent"):
        render(np.zeros((1, 44100), np.float32), 44100, FAST)


def test_dither_only_noise_is_refused_as_inaudible():
    rng = np.random.default_rng(0)
    dither = (rng.integers(-1, 2, size=(2, 44100)) / 32768.0).astype(np.float32)  # +-1 LSB
    with pytest.raises(AudioInputError, match="the noise is inaudible"):
        render(dither, 44100, FAST)
    with pytest.raises(AudioInputError, match="the noise is inaudible"):
        render(np.full((1, 44100), 0.5, np.float32), 44100, FAST)  # DC only


def test_stereo_unity_music_matches_the_stereo_noise_loudness():
    from bnmusic_bridge.loudness import integrated_lufs

    left = clacks(2.0, 48000)
    right = np.roll(clacks(2.0, 48000, seed=4), 100) * 0.8  # decorrelated channels
    noise = np.stack([left, right])
    res = render(noise, 48000, FAST)
    assert integrated_lufs(res.music, 48000) == pytest.approx(integrated_lufs(noise, 48000), abs=0.5)
    assert res.noise_lufs == pytest.approx(integrated_lufs(noise, 48000), abs=0.01)


def test_bad_parameters_named():
    with pytest.raises(ParameterError, match="mask_area=0.9 is out of range; allowed: 0.05 to 0.5"):
        render(clacks(1.0), 44100, FAST.replace(mask_area=0.9))
    with pytest.raises(ParameterError, match="unknown render parameter"):
        FAST.replace(mask_size=0.1)
    with pytest.raises(ParameterError, match="unknown generator 'nope'"):
        render(clacks(1.0), 44100, FAST.replace(generator="nope"))


def test_progress_reports_every_stage_and_cancel_stops():
    from bnmusic_bridge.errors import CancelledError

    seen: list[str] = []
    render(clacks(1.0), 44100, FAST, progress=lambda stage, f: seen.append(stage))
    for stage in ("analyse", "generate", "amplify", "output"):
        assert stage in seen

    def cancel(stage: str, fraction: float) -> None:
        if stage == "generate":
            raise CancelledError("stop")

    with pytest.raises(CancelledError):
        render(clacks(1.0), 44100, FAST, progress=cancel)


def test_render_file_and_outputs(tmp_path):
    src = tmp_path / "hvac.wav"
    noise = np.stack([clacks(1.5, 48000), clacks(1.5, 48000, seed=1)])
    sf.write(src, noise.T, 48000, subtype="PCM_24")
    res = render_file(src, FAST)
    paths = write_outputs(res, tmp_path / "out", stem_name="hvac")
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(
        ["hvac.music.wav", "hvac.blended.wav", "hvac.lambda.json", "hvac.lambda.csv", "hvac.report.json", "hvac.png"]
    )
    for wav in (paths.music, paths.blended):
        info = sf.info(wav)
        assert (info.samplerate, info.frames, info.channels, info.subtype) == (48000, noise.shape[1], 2, "PCM_24")
    report = json.loads(paths.report.read_text())
    for key in (
        "input", "sample_rate", "num_samples", "channels", "generator", "prompt", "seed", "threshold_model",
        "alpha", "smr_db", "mask_area", "lambda", "coverage", "nmr_db", "timings_s", "outputs", "version",
    ):
        assert key in report, key
    assert report["sample_rate"] == 48000 and report["num_samples"] == noise.shape[1]
    assert len(report["lambda"]["times_s"]) == len(report["lambda"]["gain_db"])
    assert report["coverage"]["frame_rate_hz"] == 100.0
    assert 0 <= report["coverage"]["overall"] <= 1
    assert paths.plot is not None and paths.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a second export refuses and leaves every file as it was
    before = {p: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    with pytest.raises(OutputExistsError, match="exist already"):
        write_outputs(res, tmp_path / "out", stem_name="hvac")
    assert {p: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before


def test_clipped_input_is_rendered_with_a_warning():
    noise = np.clip(clacks(1.0) * 4, -1, 1)
    res = render(noise, 44100, FAST)
    assert any("clipped" in w for w in res.warnings)


def test_request_schedulers_match_the_riffusion_generator():
    from bnmusic_bridge.generators.riffusion import SCHEDULERS
    from bnmusic_bridge.request import SCHEDULERS as REQUEST_SCHEDULERS

    assert set(REQUEST_SCHEDULERS) == set(SCHEDULERS)
    with pytest.raises(ParameterError, match="scheduler='heun'"):
        render(clacks(1.0), 44100, FAST.replace(scheduler="heun"))


def test_loud_noise_unity_stem_is_written_as_float_not_clipped(tmp_path):
    from bnmusic_bridge.export import ExportOptions

    loud = np.clip(clacks(1.5) * 8.0, -1, 1)  # a very loud noise: unity music peaks over 0 dBFS
    res = render(loud, 44100, FAST)
    assert np.max(np.abs(res.music)) > 1.0
    paths = write_outputs(res, tmp_path, stem_name="loud")
    assert sf.info(paths.music).subtype == "FLOAT"
    back, _ = sf.read(paths.music, dtype="float32", always_2d=True)
    assert np.max(np.abs(back)) > 1.0  # kept, not clipped
    assert any("32-bit float" in n for n in paths.notes)
    # peak_mode="bus-trim" (the default): the blended music keeps the level the blend
    # needs, as float where it passes full scale, and the bus trim is reported
    assert np.max(np.abs(res.music_gained)) > 1.0 and res.bus_trim_db < 0.0
    assert sf.info(paths.blended).subtype == "FLOAT"
    # peak_mode="lane": the lane keeps the blended music under -1 dBFS, an integer file
    held = render(loud, 44100, FAST.replace(peak_mode="lane"))
    assert np.max(np.abs(held.music_gained)) <= 10 ** (-1 / 20) + 1e-6  # the lane's peak limit
    held_paths = write_outputs(held, tmp_path / "lane", stem_name="loud")
    assert sf.info(held_paths.blended).subtype == "PCM_24"
    with pytest.raises(ParameterError, match="FLAC holds integers only"):
        write_outputs(res, tmp_path / "f", stem_name="loud", options=ExportOptions(file_type="flac"))
    assert not (tmp_path / "f").exists() or not any((tmp_path / "f").iterdir())


def test_force_names_outputs_it_did_not_rewrite(tmp_path):
    from bnmusic_bridge.export import ExportOptions

    res = render(clacks(1.0), 44100, FAST)
    write_outputs(res, tmp_path, stem_name="x", options=ExportOptions(lane_formats=("json", "midi")))
    again = write_outputs(res, tmp_path, stem_name="x", options=ExportOptions(force=True, plot=False))
    assert any("x.lambda.mid" in n and "x.png" in n for n in again.notes)
    assert (tmp_path / "x.lambda.mid").exists()  # kept, not deleted
