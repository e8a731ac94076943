"""The paper's baselines: noise-only, random-music, riffusion-a2a and outpaint-only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from tiny_sd import tiny_sd_folder_for, torch_single_thread

from bnmusic_bridge.errors import AudioInputError, ParameterError
from bnmusic_bridge.generators import available_generators, get_generator
from bnmusic_bridge.generators.base import GenerationSettings, NoiseWindow
from bnmusic_bridge.generators.baselines import (
    NoiseOnlyGenerator,
    OutpaintOnlyGenerator,
    RandomMusicGenerator,
    RiffusionA2AGenerator,
    a2a_plan,
    list_music_files,
)
from bnmusic_bridge.pipeline import model_options
from bnmusic_bridge.request import RenderRequest, field_default

NO_ANALYSIS: Any = None  # baselines do not read the stem analysis
RATE = 44_100
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def settings_of(
    prompt: str = "",
    *,
    seed: int = 0,
    overlap_frames: int | None = None,
    params: dict | None = None,
) -> GenerationSettings:
    """Generation settings for a test: the given fields (overlap: the request's)."""
    return GenerationSettings(
        prompt=prompt,
        negative_prompt="",
        seed=seed,
        overlap_frames=field_default("overlap_frames") if overlap_frames is None else overlap_frames,
        params=params or {},
    )


def cpu_options(model: str) -> dict[str, Any]:
    """The options the pipeline builds a model-owning generator with, on the CPU."""
    return model_options(RenderRequest(model=model, local_files_only=True, device="cpu"))


def window(index: int, start_sample: int, num_samples: int, side: int = 64) -> NoiseWindow:
    rng = np.random.default_rng(index)
    mask = np.zeros((side, side), dtype=bool)
    mask[24:36, 10:50] = True
    enlarged = np.zeros((side, side), dtype=bool)
    enlarged[20:40, 6:54] = True
    return NoiseWindow(
        index=index,
        start_sample=start_sample,
        num_samples=num_samples,
        valid_samples=num_samples,
        audio=np.zeros(num_samples, dtype=np.float32),
        image=rng.integers(0, 256, (side, side)).astype(np.uint8),
        max_value=1.0,
        mask=mask,
        mask_enlarged=enlarged,
    )


def test_registry_lists_the_baselines() -> None:
    names = available_generators()
    for name in (
        "procedural",
        "riffusion",
        "riffusion-a2a",
        "outpaint-only",
        "noise-only",
        "random-music",
    ):
        assert name in names


def test_noise_only_is_silence() -> None:
    gen = get_generator("noise-only")
    assert isinstance(gen, NoiseOnlyGenerator)
    out = gen.generate(
        [window(0, 0, 1000), window(1, 800, 1000)], NO_ANALYSIS, settings_of()
    )
    assert len(out) == 2
    for music in out:
        assert music.audio is not None and music.audio.shape == (2, 1000)
        assert music.audio.dtype == np.float32 and not np.any(music.audio)
    with pytest.raises(ParameterError, match="'steps'"):
        gen.generate([window(0, 0, 10)], NO_ANALYSIS, settings_of(params={"steps": 3}))


@pytest.fixture()
def music_dir(tmp_path: Path) -> Path:
    """Two short files: a 0.25 s ramp at 22,050 Hz mono and a 0.5 s stereo tone at 44.1 kHz."""
    folder = tmp_path / "music"
    folder.mkdir()
    ramp = np.linspace(-0.5, 0.5, 5512, dtype=np.float32)
    sf.write(folder / "a_ramp.wav", ramp, 22_050)
    t = np.arange(RATE // 2) / RATE
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    sf.write(folder / "b_tone.flac", np.stack([tone, -tone], axis=1), RATE)
    (folder / "notes.txt").write_text("not audio")
    return folder


def test_random_music_loops_to_the_global_timeline(music_dir: Path) -> None:
    gen = RandomMusicGenerator(music_dir)
    n = 30_000  # longer than either file: both loop
    windows = [window(0, 0, n), window(1, 25_000, n)]
    picks = {}
    for seed in range(12):
        out = gen.generate(windows, NO_ANALYSIS, settings_of(seed=seed))
        picks[seed] = out[0].diagnostics["music_file"]
        for music in out:
            assert music.audio is not None and music.audio.shape == (2, n)
            assert music.audio.dtype == np.float32
        a0, a1 = out[0].audio, out[1].audio
        assert a0 is not None and a1 is not None
        # Window 1 starts 25,000 samples in: its first 5,000 samples are window 0's last.
        np.testing.assert_array_equal(a1[:, :5000], a0[:, 25_000:])
        length = out[0].diagnostics["music_samples"]
        assert out[0].diagnostics["looped"] is True
        # Looping: the file repeats every `length` samples.
        np.testing.assert_array_equal(a0[:, length:], a0[:, : n - length])
    # Deterministic by seed, and both files get used across seeds.
    again = gen.generate(windows, NO_ANALYSIS, settings_of(seed=3))
    assert again[0].diagnostics["music_file"] == picks[3]
    assert set(picks.values()) == {"a_ramp.wav", "b_tone.flac"}
    # The 22,050 Hz mono file comes back resampled to 44.1 kHz (about 11,024 samples)
    # with both channels equal.
    seed = next(s for s, name in picks.items() if name == "a_ramp.wav")
    ramp = gen.generate(windows, NO_ANALYSIS, settings_of(seed=seed))[0]
    assert ramp.audio is not None
    assert abs(ramp.diagnostics["music_samples"] - 11_024) <= 4
    np.testing.assert_array_equal(ramp.audio[0], ramp.audio[1])


def test_random_music_params_override_and_errors(music_dir: Path, tmp_path: Path) -> None:
    w = [window(0, 0, 100)]
    out = RandomMusicGenerator().generate(
        w, NO_ANALYSIS, settings_of(params={"music_dir": str(music_dir)})
    )
    assert out[0].audio is not None and out[0].audio.shape == (2, 100)
    with pytest.raises(ParameterError, match="music_dir"):
        RandomMusicGenerator().generate(w, NO_ANALYSIS, settings_of())
    with pytest.raises(AudioInputError, match="does not exist"):
        RandomMusicGenerator(tmp_path / "nowhere").generate(w, NO_ANALYSIS, settings_of())
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("no audio here")
    with pytest.raises(AudioInputError, match="no audio file"):
        RandomMusicGenerator(empty).generate(w, NO_ANALYSIS, settings_of())
    with pytest.raises(ParameterError, match="'gain_db'"):
        RandomMusicGenerator(music_dir).generate(
            w, NO_ANALYSIS, settings_of(params={"gain_db": 3})
        )


@pytest.mark.skipif(not (SHARED_DATA / "music").is_dir(), reason="../shared/data absent")
def test_random_music_on_real_excerpts() -> None:
    files = list_music_files(SHARED_DATA / "music")
    assert len(files) >= 3
    gen = RandomMusicGenerator(SHARED_DATA / "music")
    n = 511 * 441
    out = gen.generate(
        [window(0, 0, n), window(1, 448 * 441, n)], NO_ANALYSIS, settings_of(seed=42)
    )
    for music in out:
        assert music.audio is not None and music.audio.shape == (2, n)
        assert 0.001 < float(np.sqrt(np.mean(music.audio**2))) < 1.0


# --- Riffusion-based baselines on the tiny random SD pipeline -------------------------


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    with torch_single_thread():
        yield


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tiny_sd_folder_for(tmp_path_factory.getbasetemp()))


def test_riffusion_a2a_repaints_the_whole_image(tiny_model: str) -> None:
    gen = RiffusionA2AGenerator(**cpu_options(tiny_model))
    windows = [window(0, 0, 10), window(1, 5, 10)]
    s = settings_of(prompt="jazz", seed=5, params={"resolution": 64, "steps": 4})
    out = gen.generate(windows, NO_ANALYSIS, s)
    assert len(out) == 2
    for music, w in zip(out, windows, strict=True):
        assert music.audio is None and music.image is not None
        assert music.image.shape == (64, 64) and music.image.dtype == np.uint8
        assert music.diagnostics["generator"] == "riffusion-a2a"
        assert music.diagnostics["plan"]["steps"][0]["kind"] == "img2img"
        # strength 0.55 of 4 steps = 2 denoising steps; nothing is kept, even in M.
        assert music.diagnostics["plan"]["steps"][0]["effective_steps"] == 2
        assert np.mean(music.image[w.mask] != w.image[w.mask]) > 0.5
    again = gen.generate(windows, NO_ANALYSIS, s)
    assert again[0].image is not None and out[0].image is not None
    np.testing.assert_array_equal(again[0].image, out[0].image)
    plan = a2a_plan({})
    assert (plan.steps[0].strength, plan.steps[0].steps, plan.steps[0].guidance) == (0.55, 25, 7.0)
    with pytest.raises(ParameterError, match="'outpaint_steps'"):
        gen.generate(windows, NO_ANALYSIS, settings_of(params={"outpaint_steps": 2}))


def test_outpaint_only_keeps_the_core_and_shares_weights(tiny_model: str) -> None:
    gen = get_generator("outpaint-only", **cpu_options(tiny_model))
    assert isinstance(gen, OutpaintOnlyGenerator)
    a2a = RiffusionA2AGenerator(**cpu_options(tiny_model))
    windows = [window(0, 0, 10), window(1, 5, 10)]
    s = settings_of(
        seed=2,
        overlap_frames=6,
        params={"resolution": 64, "outpaint_steps": 2, "outpaint_guidance": 0.0},
    )
    out = gen.generate(windows, NO_ANALYSIS, s)
    for music, w in zip(out, windows, strict=True):
        assert music.image is not None
        np.testing.assert_array_equal(music.image[w.mask], w.image[w.mask])
        assert np.mean(music.image[~w.mask] != w.image[~w.mask]) > 0.5
        assert [st["kind"] for st in music.diagnostics["plan"]["steps"]] == ["outpaint"]
    assert out[0].image is not None and out[1].image is not None
    np.testing.assert_array_equal(out[1].image[:, :6], out[0].image[:, -6:])
    a2a.load()
    gen.load()
    assert a2a._loaded is gen._loaded
