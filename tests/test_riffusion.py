"""The ``riffusion`` generator on a tiny random Stable Diffusion pipeline (offline, CPU).

Images are 64 x 64 (one test uses 512 x 512 windows resized to the model's 64), 2 steps
per call; the tiny model is built once per session. The weights are random, so tests
check plumbing: masks, kept pixels, seeds, continuation, errors, cancellation.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_sd import tiny_sd_folder_for, torch_single_thread

from bnmusic_bridge.errors import (
    CancelledError,
    GeneratorError,
    ModelNotFoundError,
    ParameterError,
)
from bnmusic_bridge.generators import get_generator
from bnmusic_bridge.generators.base import GenerationSettings, NoiseWindow, WindowMusic
from bnmusic_bridge.generators.baselines import OutpaintOnlyGenerator
from bnmusic_bridge.generators.riffusion import (
    OUTPAINT_KEEP_SHARE,
    SCHEDULERS,
    RiffusionGenerator,
    latent_keep_mask,
    latent_repaint_mask,
    riffusion_plan,
    window_seed,
)
from bnmusic_bridge.pipeline import model_options
from bnmusic_bridge.request import DEFAULT_MODEL_ID, RenderRequest, field_default

SIDE = 64
NO_ANALYSIS: Any = None  # the riffusion generator does not read the stem analysis
# Guidance 0 turns classifier-free guidance off (half the UNet work); the tests that
# check masks and outputs keep the default guidance of 7 so that path runs too.
FAST = {
    "resolution": 64,
    "outpaint_steps": 2,
    "inpaint_steps": 2,
    "inpaint_strength": 1.0,
    "outpaint_guidance": 0.0,
    "inpaint_guidance": 0.0,
}
GUIDED: dict[str, Any] = {"outpaint_guidance": 7.0, "inpaint_guidance": 7.0}


def options(model: str, **changes: Any) -> dict[str, Any]:
    """The options the pipeline builds the generator with (the request's), on the CPU
    and offline, with ``changes``."""
    opts = model_options(RenderRequest(model=model, local_files_only=True, device="cpu"))
    return {**opts, **changes}


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    with torch_single_thread():
        yield


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tiny_sd_folder_for(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="module")
def gen(tiny_model: str) -> RiffusionGenerator:
    g = RiffusionGenerator(**options(tiny_model))
    g.load()
    return g


def make_window(index: int, side: int = SIDE, seed: int = 0) -> NoiseWindow:
    """A noise-like window: random grey image, a rectangular core M inside a larger one."""
    rng = np.random.default_rng(seed + 100 * index)
    image = rng.integers(0, 256, (side, side)).astype(np.uint8)
    mask = np.zeros((side, side), dtype=bool)
    enlarged = np.zeros((side, side), dtype=bool)
    s = side // 64
    mask[20 * s : 32 * s, 12 * s : 44 * s] = True
    enlarged[16 * s : 36 * s, 8 * s : 48 * s] = True
    n = 511 * 441
    return NoiseWindow(
        index=index,
        start_sample=index * 448 * 441,
        num_samples=n,
        valid_samples=n,
        audio=np.zeros(n, dtype=np.float32),
        image=image,
        max_value=1.0,
        mask=mask,
        mask_enlarged=enlarged,
    )


def settings(seed: int = 3, overlap: int = 8, **params: Any) -> GenerationSettings:
    return GenerationSettings(
        prompt="lofi hip hop beat",
        negative_prompt="",
        seed=seed,
        overlap_frames=overlap,
        params={**FAST, **params},
    )


def img(music: WindowMusic) -> np.ndarray:
    assert music.image is not None
    return music.image


class PipeSpy:
    """Stands in for a diffusers pipeline: records each call's kwargs and output images,
    then delegates."""

    def __init__(self, pipe: Any) -> None:
        self._pipe = pipe
        self.calls: list[dict[str, Any]] = []
        self.outputs: list[np.ndarray] = []

    def __call__(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        out = self._pipe(**kwargs)
        self.outputs.append(np.asarray(out.images))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)


def test_output_shape_dtype_and_diagnostics(gen: RiffusionGenerator) -> None:
    windows = [make_window(0), make_window(1)]
    out = gen.generate(windows, NO_ANALYSIS, settings(**GUIDED))
    assert len(out) == 2
    for music, window in zip(out, windows, strict=True):
        assert music.audio is None
        assert music.image is not None
        assert music.image.shape == (SIDE, SIDE)
        assert music.image.dtype == np.uint8
        assert music.diagnostics["device"] == "cpu"
        assert music.diagnostics["dtype"] == "float32"
        assert music.diagnostics["scheduler"] == field_default("scheduler")
        assert music.diagnostics["seed"] == window_seed(3, window.index)
        # Outside the enlarged core the outpainting generated something new.
        outside = ~window.mask_enlarged
        assert np.mean(music.image[outside] != window.image[outside]) > 0.5
    # Spectrograms are not photographs: no safety checker on either pipeline.
    assert all(p.safety_checker is None for p in gen._pipes.values())  # type: ignore[union-attr]


def test_masks_passed_to_diffusers(gen: RiffusionGenerator) -> None:
    window = make_window(0)
    spy = PipeSpy(gen._pipes["inpaint"])  # type: ignore[index]
    original = gen._pipes["inpaint"]  # type: ignore[index]
    gen._pipes["inpaint"] = spy  # type: ignore[index]
    try:
        gen.generate([window], NO_ANALYSIS, settings(continuation=False, **GUIDED))
    finally:
        gen._pipes["inpaint"] = original  # type: ignore[index]
    assert len(spy.calls) == 2
    outpaint_mask = spy.calls[0]["mask_image"].numpy()[0, 0]
    inpaint_mask = spy.calls[1]["mask_image"].numpy()[0, 0]
    # diffusers: white (1) = repaint. Outpainting repaints everything but M ...
    np.testing.assert_array_equal(outpaint_mask > 0.5, ~window.mask)
    # ... inpainting repaints the enlarged core.
    np.testing.assert_array_equal(inpaint_mask > 0.5, window.mask_enlarged)
    assert spy.calls[0]["strength"] == 1.0
    assert spy.calls[1]["num_inference_steps"] == 2


def test_kept_pixels_come_back_unchanged(gen: RiffusionGenerator, tiny_model: str) -> None:
    window = make_window(0)
    s = settings(continuation=False)
    full = gen.generate([window], NO_ANALYSIS, s)[0].image
    outpaint_only = OutpaintOnlyGenerator(**options(tiny_model))
    outpainted = outpaint_only.generate(
        [window],
        NO_ANALYSIS,
        GenerationSettings(
            prompt=s.prompt,
            negative_prompt="",
            seed=s.seed,
            overlap_frames=field_default("overlap_frames"),
            params={
                "resolution": 64,
                "outpaint_steps": 2,
                "outpaint_guidance": 0.0,
                "continuation": False,
            },
        ),
    )[0].image
    assert full is not None and outpainted is not None
    # Step (a) keeps the noise core M exactly.
    np.testing.assert_array_equal(outpainted[window.mask], window.image[window.mask])
    # Step (b) keeps everything outside the enlarged core exactly as step (a) left it
    # (same seed, same first call), and repaints inside it.
    outside = ~window.mask_enlarged
    np.testing.assert_array_equal(full[outside], outpainted[outside])
    assert np.mean(full[window.mask_enlarged] != outpainted[window.mask_enlarged]) > 0.5
    # The two generators share one set of weights.
    assert outpaint_only._loaded is gen._loaded


def test_full_size_windows_resized_to_model_resolution(gen: RiffusionGenerator) -> None:
    window = make_window(0, side=512)
    out = gen.generate([window], NO_ANALYSIS, settings(continuation=False))[0]
    assert out.image is not None and out.image.shape == (512, 512)
    outside = ~window.mask_enlarged
    assert np.mean(out.image[outside] != window.image[outside]) > 0.5


def test_same_seed_same_music_other_seed_differs(gen: RiffusionGenerator) -> None:
    windows = [make_window(0)]
    a = gen.generate(windows, NO_ANALYSIS, settings(seed=7))[0].image
    b = gen.generate(windows, NO_ANALYSIS, settings(seed=7))[0].image
    c = gen.generate(windows, NO_ANALYSIS, settings(seed=8))[0].image
    np.testing.assert_array_equal(a, b)
    assert np.mean(a != c) > 0.3


def test_continuation_keeps_previous_tail(gen: RiffusionGenerator) -> None:
    windows = [make_window(0), make_window(1), make_window(2)]
    overlap = 8
    out = gen.generate(windows, NO_ANALYSIS, settings(overlap=overlap))
    images = [img(m) for m in out]
    for k in (1, 2):
        np.testing.assert_array_equal(images[k][:, :overlap], images[k - 1][:, -overlap:])
        assert out[k].diagnostics["continued_from_previous"] is True
    assert out[0].diagnostics["continued_from_previous"] is False
    # Without continuation the first columns are generated afresh.
    free = gen.generate(windows, NO_ANALYSIS, settings(overlap=overlap, continuation=False))
    assert not np.array_equal(img(free[1])[:, :overlap], img(free[0])[:, -overlap:])


def test_batched_windows_match_one_by_one(tiny_model: str, gen: RiffusionGenerator) -> None:
    windows = [make_window(0), make_window(1)]
    batched = RiffusionGenerator(**options(tiny_model, batch_size=2))
    s = settings(continuation=False)
    a = batched.generate(windows, NO_ANALYSIS, s)
    b = gen.generate(windows, NO_ANALYSIS, s)
    assert a[0].diagnostics["batch_size"] == 2 and b[0].diagnostics["batch_size"] == 1
    for x, y in zip(a, b, strict=True):
        diff = np.abs(x.image.astype(int) - y.image.astype(int))  # type: ignore[union-attr]
        assert diff.max() <= 2, "per-window seeds make results independent of batching"


def test_out_of_memory_halves_batch_then_fails(
    tiny_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    g = RiffusionGenerator(**options(tiny_model, batch_size=4))
    real = g._run_group
    sizes: list[int] = []

    def flaky(jobs: Any, *args: Any) -> Any:
        sizes.append(len(jobs))
        if len(jobs) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(jobs, *args)

    monkeypatch.setattr(g, "_run_group", flaky)
    windows = [make_window(i) for i in range(3)]
    out = g.generate(windows, NO_ANALYSIS, settings(continuation=False))
    assert sizes[:3] == [3, 1, 1] or sizes[:2] == [3, 1]
    assert all(m.diagnostics["batch_size"] == 1 for m in out)
    assert out[0].diagnostics["oom_retries"] >= 1

    def always_oom(jobs: Any, *args: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(g, "_run_group", always_oom)
    with pytest.raises(GeneratorError, match="out of memory"):
        g.generate(windows, NO_ANALYSIS, settings(continuation=False))


def test_progress_reaches_one_and_cancel_stops(gen: RiffusionGenerator) -> None:
    windows = [make_window(0), make_window(1)]
    seen: list[tuple[str, float]] = []
    gen.generate(windows, NO_ANALYSIS, settings(), lambda st, f: seen.append((st, f)))
    fractions = [f for _, f in seen]
    assert {st for st, _ in seen} == {"generate"}
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    # 2 windows x (2 + 2) denoising steps, plus the opening 0.0.
    assert len(fractions) == 9

    calls: list[float] = []

    def cancel_on_third(stage: str, fraction: float) -> None:
        calls.append(fraction)
        if len(calls) == 3:
            raise CancelledError("stop asked")

    with pytest.raises(CancelledError):
        gen.generate(windows, NO_ANALYSIS, settings(), cancel_on_third)
    assert len(calls) == 3
    assert gen._pipes["inpaint"].interrupt is True  # type: ignore[index]


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_scheduler_runs(tiny_model: str, name: str) -> None:
    # Inpainting at strength 0.5 starts mid-schedule, which each scheduler handles itself.
    g = RiffusionGenerator(**options(tiny_model, scheduler=name))
    window = make_window(0)
    out = g.generate(
        [window],
        NO_ANALYSIS,
        settings(seed=1, inpaint_steps=4, inpaint_strength=0.5),
    )[0]
    assert out.diagnostics["scheduler"] == name
    assert out.diagnostics["plan"]["steps"][1]["effective_steps"] == 2
    image = img(out)
    outside = ~window.mask_enlarged
    assert np.mean(image[outside] != window.image[outside]) > 0.5


def test_missing_model_folder_says_how_to_get_weights(tmp_path: Path) -> None:
    g = RiffusionGenerator(**options(str(tmp_path / "no-such-model")))
    with pytest.raises(ModelNotFoundError) as err:
        g.generate([make_window(0)], NO_ANALYSIS, settings())
    text = str(err.value)
    assert f"hf download {DEFAULT_MODEL_ID}" in text and "huggingface-cli" not in text
    assert "--model /path/to/folder" in text and "--generator procedural" in text

    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="model_index.json"):
        RiffusionGenerator(**options(str(tmp_path / "empty"))).load()


def test_uncached_hub_model_offline_is_model_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    g = RiffusionGenerator(**options("someone/not-downloaded-model"))
    with pytest.raises(ModelNotFoundError, match="not in the Hugging Face cache"):
        g.load()


def test_parameter_errors(tmp_path: Path) -> None:
    absent = str(tmp_path / "absent")
    with pytest.raises(ParameterError, match=re.escape(", ".join(SCHEDULERS))):
        RiffusionGenerator(**options(absent, scheduler="heun"))
    with pytest.raises(ParameterError, match="device"):
        RiffusionGenerator(**options(absent, device="tpu"))
    with pytest.raises(ParameterError, match="dtype"):
        RiffusionGenerator(**options(absent, dtype="int8"))
    with pytest.raises(ParameterError, match="batch_size"):
        RiffusionGenerator(**options(absent, batch_size=0))
    # params are checked before any weights are looked for
    g = RiffusionGenerator(**options(absent))
    with pytest.raises(ParameterError, match="'guidence'"):
        g.generate([make_window(0)], NO_ANALYSIS, settings(guidence=3.0))
    for bad in (
        {"inpaint_strength": 0.0},
        {"outpaint_steps": 0},
        {"resolution": 100},
        {"continuation": "yes"},
        {"outpaint_steps": 2.5},
        {"inpaint_steps": 1, "inpaint_strength": 0.5},
    ):
        with pytest.raises(ParameterError):
            riffusion_plan(bad)
    plan = riffusion_plan({})
    assert [s.kind for s in plan.steps] == ["outpaint", "inpaint"]
    assert (plan.steps[1].steps, plan.steps[1].strength, plan.resolution) == (25, 0.75, 512)


def test_registry_builds_riffusion_lazily(tiny_model: str) -> None:
    g = get_generator("riffusion", **options(tiny_model))
    assert isinstance(g, RiffusionGenerator)
    assert g.device_choice is None  # nothing loaded until the first generate
    assert get_generator("riffusion", **options(tiny_model)) is g


def test_window_seed_depends_on_seed_and_index() -> None:
    assert window_seed(1, 0) == window_seed(1, 0)
    assert len({window_seed(1, 0), window_seed(1, 1), window_seed(2, 0)}) == 3
    assert 0 <= window_seed(-5, 3) < 2**63


def test_device_selection_on_this_machine() -> None:
    import torch

    from bnmusic_bridge.device import select_device

    if torch.cuda.is_available():
        pytest.skip("checks the CPU-only fallbacks")
    auto = select_device("auto", "auto")
    assert (auto.device, auto.dtype) == ("cpu", "float32")
    assert "no CUDA" in auto.reason
    assert select_device("cpu", "bf16").dtype == "bfloat16"  # explicit wins
    with pytest.raises(ParameterError, match="CUDA is not available"):
        select_device("cuda", "auto")
    with pytest.raises(ParameterError, match="unknown device"):
        select_device("gpu0", "auto")


def test_importing_the_generators_loads_no_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, bnmusic_bridge.generators.riffusion, bnmusic_bridge.generators.baselines;"
        "from bnmusic_bridge.generators import available_generators; available_generators();"
        "print('torch' in sys.modules, 'diffusers' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.stdout.split() == ["False", "False"]


# --- Stable Diffusion's latent scale: a VAE with scale factor 8 ------------------------


def test_latent_masks_are_block_constant() -> None:
    repaint = np.zeros((16, 16), dtype=bool)
    repaint[3, 9] = True  # one pixel, not on a block's top-left corner
    blocks = latent_repaint_mask(repaint, 8)
    assert blocks[:8, 8:].all() and blocks.sum() == 64
    keep = np.zeros((16, 16), dtype=bool)
    keep[:8, :5] = True  # 40 of the block's 64 pixels
    keep[8:, 8:10] = True  # 16 of 64
    kept = latent_keep_mask(keep, 8, OUTPAINT_KEEP_SHARE)
    assert kept[:8, :8].all() and kept.sum() == 64
    assert latent_keep_mask(keep, 8, 1.0).sum() == 0
    with pytest.raises(ParameterError, match="latent blocks"):
        latent_repaint_mask(np.zeros((12, 16), dtype=bool), 8)


@pytest.fixture(scope="module")
def gen8(tmp_path_factory: pytest.TempPathFactory) -> RiffusionGenerator:
    folder = tiny_sd_folder_for(tmp_path_factory.getbasetemp(), vae_levels=4)
    g = RiffusionGenerator(**options(str(folder)))
    g.load()
    assert g._pipes["inpaint"].vae_scale_factor == 8  # type: ignore[index]
    return g


def scattered_window(side: int = 64, seed: int = 5) -> NoiseWindow:
    """A window whose core is scattered specks and short strokes off the 8 x 8 grid,
    enlarged by the pipeline's own rule; the core is at pixel 0 (the loudest)."""
    from bnmusic_bridge.mask import enlarge_mask

    rng = np.random.default_rng(seed)
    image = rng.integers(40, 256, (side, side)).astype(np.uint8)
    core = rng.random((side, side)) < 0.06
    core[9:12, 13:30] = True  # a stroke across block borders
    core[41, 3:60] = True  # a one-pixel line
    image[core] = 0
    n = 511 * 441
    return NoiseWindow(
        index=0,
        start_sample=0,
        num_samples=n,
        valid_samples=n,
        audio=np.zeros(n, dtype=np.float32),
        image=image,
        max_value=1.0,
        mask=core,
        mask_enlarged=enlarge_mask(core),
    )


def test_scale_8_every_core_pixel_repainted_every_kept_pixel_restored(
    gen8: RiffusionGenerator,
) -> None:
    window = scattered_window()
    core, enlarged = window.mask, window.mask_enlarged
    blocks = lambda m: m.reshape(8, 8, 8, 8).any(axis=(1, 3))  # noqa: E731
    top_left = lambda m: m[::8, ::8]  # noqa: E731 - what diffusers' nearest resize samples
    # The masks are scattered enough that sampling one pixel per block misses core pixels.
    assert (blocks(core) & ~top_left(enlarged)).any()

    pipe = gen8._pipes["inpaint"]  # type: ignore[index]
    spy = PipeSpy(pipe)
    latent_masks: list[np.ndarray] = []
    real_prepare = pipe.prepare_mask_latents

    def record(mask: Any, *args: Any, **kwargs: Any) -> Any:
        out = real_prepare(mask, *args, **kwargs)
        latent_masks.append(out[0][0, 0].numpy().copy())  # the mask the latents are blended with
        return out

    pipe.prepare_mask_latents = record
    gen8._pipes["inpaint"] = spy  # type: ignore[index]
    try:
        music = gen8.generate([window], NO_ANALYSIS, settings(continuation=False, **GUIDED))[0]
    finally:
        gen8._pipes["inpaint"] = pipe  # type: ignore[index]
        del pipe.prepare_mask_latents
    final = img(music)
    assert len(latent_masks) == 2
    outpaint_latent, inpaint_latent = (m > 0.5 for m in latent_masks)

    # Outpainting keeps (latent 0) exactly the blocks at least half core ...
    share = core.reshape(8, 8, 8, 8).mean(axis=(1, 3))
    np.testing.assert_array_equal(~outpaint_latent, share >= OUTPAINT_KEEP_SHARE)
    outpainted = np.rint(spy.outputs[0][0, ..., 0] * 255).astype(np.uint8)
    outpainted[core] = window.image[core]  # the generator's copy-back of the kept core
    not_generated = np.repeat(np.repeat(~outpaint_latent, 8, 0), 8, 1) & ~core
    # ... and inpainting repaints every block holding a pixel of the enlarged core or a
    # pixel the outpainting kept without generating it: no core pixel is a kept block.
    repaint = enlarged | not_generated
    np.testing.assert_array_equal(inpaint_latent, blocks(repaint))
    assert inpaint_latent[blocks(core)].all()

    # Every core pixel is the inpainting's output (its block was repainted) and differs
    # from the noise; every pixel outside the repainted region is restored exactly.
    inpainted = np.rint(spy.outputs[1][0, ..., 0] * 255).astype(np.uint8)
    np.testing.assert_array_equal(final[repaint], inpainted[repaint])
    assert np.mean(final[core] != window.image[core]) > 0.99
    np.testing.assert_array_equal(final[~repaint], outpainted[~repaint])
    assert music.diagnostics["not_generated_share"] == 0.0
    assert music.diagnostics["inpaint_pixel_share"] == pytest.approx(repaint.mean(), abs=1e-4)


def test_grey_is_read_from_the_red_channel(gen: RiffusionGenerator) -> None:
    # Riffusion's spectrogram_from_image reads channel 0 of the RGB image for mono.
    window = make_window(0)
    spy = PipeSpy(gen._pipes["inpaint"])  # type: ignore[index]
    original = gen._pipes["inpaint"]  # type: ignore[index]
    gen._pipes["inpaint"] = spy  # type: ignore[index]
    try:
        out = gen.generate([window], NO_ANALYSIS, settings(continuation=False))[0]
    finally:
        gen._pipes["inpaint"] = original  # type: ignore[index]
    rgb = spy.outputs[1][0]
    assert np.abs(rgb[..., 0] - rgb.mean(axis=-1)).max() > 2 / 255  # the channels differ
    red = np.rint(rgb[..., 0] * 255).astype(np.uint8)
    repaint = window.mask_enlarged
    np.testing.assert_array_equal(img(out)[repaint], red[repaint])


def level_db(image: np.ndarray, max_value: float) -> float:
    from bnmusic_bridge.spectrogram import image_to_mel

    return 10 * float(np.log10(np.sum(image_to_mel(image, max_value).astype(np.float64) ** 2)))


def test_continuation_overlap_decodes_at_one_level(gen: RiffusionGenerator) -> None:
    from dataclasses import replace

    overlap = 8
    # The noise's peak moves up 9 dB, then down 12 dB between windows.
    levels = [1.0, 10 ** (9 / 20), 10 ** (-3 / 20)]
    windows = [replace(make_window(k), max_value=v) for k, v in enumerate(levels)]
    out = gen.generate(windows, NO_ANALYSIS, settings(overlap=overlap))
    for k in (1, 2):
        prev, cur = out[k - 1], out[k]
        assert prev.max_value is not None and cur.max_value is not None
        assert cur.max_value >= windows[k].max_value
        tail_db = level_db(img(prev)[:, -overlap:], prev.max_value)
        head_db = level_db(img(cur)[:, :overlap], cur.max_value)
        assert head_db == pytest.approx(tail_db, abs=0.05)
        # Copied verbatim and decoded at the noise window's level, as before, the
        # overlap would jump by the peak's move.
        verbatim_db = level_db(img(prev)[:, -overlap:], windows[k].max_value)
        move_db = 20 * np.log10(windows[k].max_value / prev.max_value)
        assert verbatim_db - tail_db == pytest.approx(move_db, abs=0.01)
        assert abs(move_db) > 6
    # Up: the window keeps its own level; down: it is raised to the carried peak.
    assert out[1].max_value == pytest.approx(levels[1])
    assert out[2].max_value > levels[2] and out[2].diagnostics["level_change_db"] > 0


def test_pipeline_decodes_with_the_generators_level(monkeypatch: pytest.MonkeyPatch) -> None:
    import bnmusic_bridge.spectrogram as spec
    from bnmusic_bridge.pipeline import _window_audio

    seen: list[float] = []

    def fake_image_to_audio(image: Any, max_value: float, num_samples: int, **kw: Any) -> Any:
        seen.append(max_value)
        return np.zeros(num_samples, dtype=np.float32)

    monkeypatch.setattr(spec, "image_to_audio", fake_image_to_audio)
    windows = [make_window(0), make_window(1)]
    image = np.zeros((SIDE, SIDE), dtype=np.uint8)
    music = [WindowMusic(image=image, max_value=3.5), WindowMusic(image=image)]
    _window_audio(music, windows, 0, lambda stage, fraction: None)
    assert seen == [3.5, windows[1].max_value]


class _LazyWindows:
    """Windows built on demand; counts how often the sequence is walked."""

    def __init__(self, windows: list[NoiseWindow]) -> None:
        self._windows = windows
        self.built = 0
        self.iterations = 0

    def __len__(self) -> int:
        return len(self._windows)

    def __getitem__(self, k: int) -> NoiseWindow:
        self.built += 1
        return self._windows[k]

    def __iter__(self) -> Iterator[NoiseWindow]:
        self.iterations += 1
        for k in range(len(self)):
            yield self[k]


def _same_music(a: list[WindowMusic], b: list[WindowMusic]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(img(x), img(y))
        assert x.max_value == y.max_value
        timing = {"seconds"}
        assert {k: v for k, v in x.diagnostics.items() if k not in timing} == {
            k: v for k, v in y.diagnostics.items() if k not in timing
        }


@pytest.mark.parametrize("continuation", [True, False])
def test_stream_equals_generate_one_window_at_a_time(
    gen: RiffusionGenerator, continuation: bool
) -> None:
    windows = [make_window(i) for i in range(3)]
    s = settings(overlap=8, continuation=continuation)
    seen_generate: list[tuple[str, float]] = []
    listed = gen.generate(windows, NO_ANALYSIS, s, lambda st, f: seen_generate.append((st, f)))
    lazy = _LazyWindows(windows)
    seen_stream: list[tuple[str, float]] = []
    streamed = []
    for k, m in enumerate(
        gen.stream(lazy, NO_ANALYSIS, s, lambda st, f: seen_stream.append((st, f)))
    ):
        assert lazy.built == k + 1  # made when asked for (batch size 1 here)
        streamed.append(m)
    assert lazy.iterations == 1
    assert seen_stream == seen_generate
    _same_music(streamed, listed)
    assert streamed[1].diagnostics["continued_from_previous"] is continuation


def test_stream_checks_each_window_as_it_comes(gen: RiffusionGenerator) -> None:
    windows = [make_window(i) for i in range(3)]
    bad = NoiseWindow(**{**windows[2].__dict__, "image": windows[2].image.astype(np.float32)})
    stream = gen.stream([*windows[:2], bad], NO_ANALYSIS, settings(overlap=8))
    assert next(stream).image is not None
    assert next(stream).image is not None
    with pytest.raises(ParameterError, match="window 2: image must be uint8"):
        next(stream)
    # generate still checks every window before any is made
    with pytest.raises(ParameterError, match="window 2: image must be uint8"):
        gen.generate([*windows[:2], bad], NO_ANALYSIS, settings(overlap=8))


def test_baselines_stream_what_their_generate_returns(tiny_model: str) -> None:
    from bnmusic_bridge.generators.base import iter_music

    g = OutpaintOnlyGenerator(**options(tiny_model))
    windows = [make_window(i) for i in range(2)]
    s = GenerationSettings(
        prompt="lofi hip hop beat",
        negative_prompt="",
        seed=3,
        overlap_frames=8,
        params={k: v for k, v in FAST.items() if not k.startswith("inpaint")},
    )
    _same_music(list(iter_music(g, windows, NO_ANALYSIS, s)), g.generate(windows, NO_ANALYSIS, s))
