"""GPU benchmark of the ``riffusion`` generator (BNMusic Stage 1) at full size.

Run on a machine with CUDA: ``python benchmarks/bench_gpu_riffusion.py`` (writes
benchmarks/results/gpu_riffusion.json after every variant, so a run stopped early keeps
what it measured; about 6 to 8 minutes on a recent data-centre GPU, most of it the
compiled variants). Never run in CI. Without CUDA it exits with a message. ``--smoke``
runs the same code on the CPU with the tests' tiny model, 64 x 64 images, 1 step per call
and 2 windows, in seconds (writes benchmarks/results/gpu_riffusion_smoke.json; its
timings mean nothing).

What is timed: :meth:`RiffusionGenerator.render` on 512 x 512 windows with the masks
handed to diffusers at the latent scale, as a render runs it. No weights are downloaded:
Stable Diffusion 1.5's published configurations (UNet 320/640/1280/1280 with
cross-attention 768, CLIP ViT-L/14 text encoder with 12 layers of 768, VAE
128/256/512/512) are built on the GPU with random weights, which run at the speed of the
trained ones (Riffusion is SD 1.5 fine-tuned, same shapes).

Per variant: seconds per 5.12 s window (the generation only: decoding to audio is the
CPU's, ``benchmarks/bench_decode.py``), the real-time factor for a 60 s stem (seconds
per window x the 14 windows a 60 s stem is cut into / 60 s; below 1 is faster than
real time), peak GPU memory (allocated and reserved). One batch of windows is generated
first as a warm-up (and compile) and not timed.

Each speed knob is measured on and off against the same reference, ``fp16`` (the
default plan: outpaint 25 steps at strength 1 + inpaint 25 at 0.75 = 43 denoising steps,
guidance 7, DPM-Solver++, continuation on):

* half precision: ``fp32`` and ``bf16`` against ``fp16``;
* SDPA: ``fp16 classic attention`` (diffusers' ``AttnProcessor``) against ``fp16``;
* channels_last, compiled UNet: each alone on top of ``fp16``;
* batching of windows: continuation off, batch 1 against batch 4;
* few-step schedules: DPM-Solver++ 10 + 10 steps; 4 + 4 steps without guidance (the
  cost of an LCM-style schedule, which needs LCM-distilled weights to sound right);
* all on together, and the ``paper-riffusion`` preset's plan (PNDM, 50 + 50 steps at
  strength 0.75 = 74 denoising steps, windows independent and batched).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import platform
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the tiny tokenizer writer lives with the tests

from bnmusic_bridge.generators.base import GenerationSettings, NoiseWindow  # noqa: E402
from bnmusic_bridge.generators.riffusion import (  # noqa: E402
    RiffusionGenerator,
    riffusion_plan,
)
from bnmusic_bridge.grid import SAMPLE_RATE_HZ  # noqa: E402
from bnmusic_bridge.request import field_default  # noqa: E402
from bnmusic_bridge.windows import plan_windows  # noqa: E402

STEM_SECONDS = 60.0
WINDOW_SECONDS = 5.12
PROMPT = "lofi hip hop beat, warm piano, vinyl crackle"

# Public figures (method.md, "diffusers facts"): SD 1.5, 512 x 512, 50 steps, fp16.
PUBLISHED_SD15_50_STEPS_S = {
    "A100 plain": 1.59,
    "A100 compiled + channels_last": 1.07,
    "H100 PCIe plain": 1.44,
    "H100 PCIe compiled": 1.11,
}


@dataclass(frozen=True)
class Variant:
    """One benchmark configuration (defaults: the ``fp16`` reference)."""

    name: str
    dtype: str = "fp16"
    sdpa: bool = True
    channels_last: bool = False
    compile_unet: bool = False
    continuation: bool = True
    batch_size: int | None = 1
    scheduler: str = "dpmsolver++"
    outpaint_steps: int = 25
    outpaint_strength: float = 1.0
    inpaint_steps: int = 25
    inpaint_strength: float = 0.75
    guidance: float = 7.0


VARIANTS = (
    Variant("fp16"),
    Variant("fp32", dtype="fp32"),
    Variant("bf16", dtype="bf16"),
    Variant("fp16 classic attention (SDPA off)", sdpa=False),
    Variant("fp16 + channels_last", channels_last=True),
    Variant("fp16 + compiled UNet", compile_unet=True),
    Variant("fp16 continuation off, batch 1", continuation=False, batch_size=1),
    Variant("fp16 continuation off, batch 4", continuation=False, batch_size=4),
    Variant("fp16 DPM-Solver++ 10+10 steps", outpaint_steps=10, inpaint_steps=10),
    Variant(
        "fp16 4+4 steps, no guidance (LCM-style cost)",
        outpaint_steps=4,
        inpaint_steps=4,
        inpaint_strength=1.0,
        guidance=0.0,
    ),
    Variant(
        "fp16 all on: channels_last, compiled, batch 4, 10+10 steps",
        channels_last=True,
        compile_unet=True,
        continuation=False,
        batch_size=4,
        outpaint_steps=10,
        inpaint_steps=10,
    ),
    Variant(
        "paper-riffusion preset (fp16, PNDM 50+50 at 0.75, batched)",
        continuation=False,
        batch_size=None,
        scheduler="pndm",
        outpaint_steps=50,
        outpaint_strength=0.75,
        inpaint_steps=50,
        inpaint_strength=0.75,
    ),
)


def build_components(full_size: bool, work_dir: Path, device: str) -> dict[str, Any]:
    """Random-weight SD 1.x parts: SD 1.5's published configs, or the tests' tiny ones."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from tiny_sd import write_tiny_tokenizer_files
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    with torch.device(device):
        if full_size:
            unet = UNet2DConditionModel(
                sample_size=64,
                in_channels=4,
                out_channels=4,
                layers_per_block=2,
                block_out_channels=(320, 640, 1280, 1280),
                down_block_types=(
                    "CrossAttnDownBlock2D",
                    "CrossAttnDownBlock2D",
                    "CrossAttnDownBlock2D",
                    "DownBlock2D",
                ),
                up_block_types=(
                    "UpBlock2D",
                    "CrossAttnUpBlock2D",
                    "CrossAttnUpBlock2D",
                    "CrossAttnUpBlock2D",
                ),
                cross_attention_dim=768,
                attention_head_dim=8,
            )
            vae = AutoencoderKL(
                in_channels=3,
                out_channels=3,
                block_out_channels=(128, 256, 512, 512),
                down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4,
                layers_per_block=2,
                latent_channels=4,
                sample_size=512,
            )
            text_config = CLIPTextConfig(
                vocab_size=49408,
                hidden_size=768,
                intermediate_size=3072,
                num_hidden_layers=12,
                num_attention_heads=12,
                max_position_embeddings=77,
                hidden_act="quick_gelu",
                projection_dim=768,
                bos_token_id=0,
                eos_token_id=2,
                pad_token_id=1,
            )
        else:
            unet = UNet2DConditionModel(
                block_out_channels=(32, 64),
                layers_per_block=2,
                sample_size=32,
                in_channels=4,
                out_channels=4,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                cross_attention_dim=32,
            )
            vae = AutoencoderKL(
                block_out_channels=(32, 64),
                in_channels=3,
                out_channels=3,
                down_block_types=("DownEncoderBlock2D",) * 2,
                up_block_types=("UpDecoderBlock2D",) * 2,
                latent_channels=4,
            )
            text_config = CLIPTextConfig(
                bos_token_id=0,
                eos_token_id=2,
                pad_token_id=1,
                hidden_size=32,
                intermediate_size=37,
                num_attention_heads=4,
                num_hidden_layers=5,
                vocab_size=1000,
            )
        text_encoder = CLIPTextModel(text_config)
    vocab, merges = write_tiny_tokenizer_files(work_dir / "tokenizer")
    tokenizer = CLIPTokenizer(
        vocab=str(vocab), merges=str(merges), pad_token="<|pad|>", model_max_length=77
    )
    # SD 1.5's scheduler config (the generator builds DPM-Solver++ from it).
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        steps_offset=1,
        set_alpha_to_one=False,
    )
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": scheduler,
    }


def make_windows(count: int, side: int, seed: int = 0) -> list[NoiseWindow]:
    """Synthetic noise windows: random grey images with a scattered core covering about
    15 % (specks and short strokes, as real noise gives), enlarged by the pipeline's rule."""
    from scipy import ndimage

    from bnmusic_bridge.mask import enlarge_mask, remove_specks

    rng = np.random.default_rng(seed)
    n = 511 * 441
    out = []
    for k in range(count):
        image = rng.integers(0, 256, (side, side)).astype(np.uint8)
        field = ndimage.gaussian_filter(rng.random((side, side)), 1.5)
        mask = remove_specks(field >= np.quantile(field, 0.85))
        out.append(
            NoiseWindow(
                index=k,
                start_sample=k * 448 * 441,
                num_samples=n,
                valid_samples=n,
                audio=np.zeros(n, dtype=np.float32),
                image=image,
                max_value=1.0,
                mask=mask,
                mask_enlarged=enlarge_mask(mask),
            )
        )
    return out


def machine_description() -> dict[str, Any]:
    import diffusers
    import torch
    import transformers

    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": __import__("os").cpu_count(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=torch.cuda.get_device_name(0),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    return info


def windows_for_stem(seconds: float) -> int:
    """How many generation windows a stem of ``seconds`` is cut into (the pipeline's plan)."""
    return plan_windows(round(seconds * SAMPLE_RATE_HZ), field_default("overlap_frames")).count


def run_variant(
    variant: Variant,
    *,
    full_size: bool,
    device: str,
    windows: list[NoiseWindow],
    resolution: int,
    work_dir: Path,
    overlap_frames: int,
) -> dict[str, Any]:
    import torch
    from diffusers.models.attention_processor import AttnProcessor

    components = build_components(full_size, work_dir, device)
    if not variant.sdpa:
        components["unet"].set_attn_processor(AttnProcessor())
        components["vae"].set_attn_processor(AttnProcessor())
    gen = RiffusionGenerator.from_components(
        components,
        device=device,
        dtype=variant.dtype,
        batch_size=variant.batch_size,
        channels_last=variant.channels_last,
        compile_unet=variant.compile_unet,
        scheduler=variant.scheduler,
        label="sd15-random" if full_size else "tiny-random",
    )
    params = {
        "resolution": resolution,
        "outpaint_steps": variant.outpaint_steps,
        "outpaint_strength": variant.outpaint_strength,
        "outpaint_guidance": variant.guidance,
        "inpaint_steps": variant.inpaint_steps,
        "inpaint_strength": variant.inpaint_strength,
        "inpaint_guidance": variant.guidance,
        "continuation": variant.continuation,
    }
    plan = riffusion_plan(params)
    settings = GenerationSettings(
        prompt=PROMPT,
        negative_prompt="",
        seed=42,
        overlap_frames=overlap_frames,
        params=params,
    )
    cuda = device.startswith("cuda")

    # Warm-up (and compile): one batch of windows, not timed.
    warm = windows[: max(1, variant.batch_size or 1)]
    start = time.perf_counter()
    gen.render([replace(w, index=w.index + 1000) for w in warm], settings, plan)
    if cuda:
        torch.cuda.synchronize()
    warmup_s = time.perf_counter() - start
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = gen.render(windows, settings, plan)
    if cuda:
        torch.cuda.synchronize()
    total_s = time.perf_counter() - start
    peak = (
        (torch.cuda.max_memory_allocated() / 2**30, torch.cuda.max_memory_reserved() / 2**30)
        if cuda
        else (None, None)
    )
    del gen, components
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    per_window = total_s / len(windows)
    stem_windows = windows_for_stem(STEM_SECONDS)
    return {
        "variant": variant.__dict__,
        "denoising_steps_per_window": sum(s.effective_steps for s in plan.steps),
        "windows_timed": len(windows),
        "warmup_s": round(warmup_s, 3),
        "total_s": round(total_s, 3),
        "seconds_per_window": round(per_window, 4),
        "windows_in_60s_stem": stem_windows,
        "real_time_factor_60s_stem": round(per_window * stem_windows / STEM_SECONDS, 4),
        "peak_gpu_memory_allocated_gib": None if peak[0] is None else round(peak[0], 2),
        "peak_gpu_memory_reserved_gib": None if peak[1] is None else round(peak[1], 2),
        "batch_sizes_used": sorted({m.diagnostics["batch_size"] for m in out}),
        "device": out[0].diagnostics["device"],
        "dtype": out[0].diagnostics["dtype"],
    }


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write the report atomically (after every variant: a stopped run keeps its results)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)


def compare(results: list[dict[str, Any]]) -> None:
    """Add each variant's speed-up over the ``fp16`` reference and over ``fp32``."""
    by_name = {r["variant"]["name"].split(" [smoke")[0]: r for r in results if "total_s" in r}
    for ref_name in ("fp16", "fp32"):
        ref = by_name.get(ref_name)
        for r in results:
            if ref is not None and "total_s" in r:
                r[f"speedup_vs_{ref_name}"] = round(
                    ref["seconds_per_window"] / r["seconds_per_window"], 3
                )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--smoke", action="store_true", help="tiny model on the CPU, 1 step per call, in seconds"
    )
    parser.add_argument("--windows", type=int, default=None, help="windows to time (8; smoke 2)")
    parser.add_argument(
        "--variants", default="", help="comma-separated variant names to run (default all)"
    )
    parser.add_argument("--list", action="store_true", help="print the variant names and exit")
    parser.add_argument("--out", type=Path, default=None, help="JSON output path")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(v.name for v in VARIANTS))
        return 0

    import torch

    if not args.smoke and not torch.cuda.is_available():
        print(
            "bench_gpu_riffusion: no CUDA device here (torch "
            f"{torch.__version__}); this benchmark needs an NVIDIA GPU. "
            "Run with --smoke to exercise its code on the CPU with a tiny model.",
            file=sys.stderr,
        )
        return 2

    full_size = not args.smoke
    device = "cuda" if full_size else "cpu"
    resolution = 512 if full_size else 64
    count = args.windows or (8 if full_size else 2)
    variants = list(VARIANTS)
    if args.variants:
        wanted = {v.strip() for v in args.variants.split(",")}
        unknown = wanted - {v.name for v in VARIANTS}
        if unknown:
            parser.error(f"unknown variant(s) {sorted(unknown)}; see --list")
        variants = [v for v in variants if v.name in wanted]
    if args.smoke:
        torch.set_num_threads(1)  # the CPU is shared; timings here mean nothing anyway
        # CPU: half precision and compilation are GPU knobs; every other code path
        # (attention swap, channels_last, batching, schedulers, guidance) runs at
        # float32, one denoising step per call.
        variants = [
            replace(
                v,
                name=f"{v.name} [smoke: fp32, tiny]",
                dtype="fp32",
                compile_unet=False,
                outpaint_steps=1,
                outpaint_strength=1.0,
                inpaint_steps=1,
                inpaint_strength=1.0,
                batch_size=None if v.batch_size is None else min(v.batch_size, count),
            )
            for v in variants
            if v.dtype != "bf16"
        ]
    out_path = args.out or (
        REPO
        / "benchmarks"
        / "results"
        / ("gpu_riffusion_smoke.json" if args.smoke else "gpu_riffusion.json")
    )
    work = tempfile.TemporaryDirectory(prefix="bench_gpu_riffusion_")
    work_dir = Path(work.name)
    # Smoke: windows at the tiny model's size, so no time goes to resizing them.
    windows = make_windows(count, 512 if full_size else resolution)

    report: dict[str, Any] = {
        "benchmark": "riffusion generator, outpaint + inpaint, full SD 1.5 size, random weights"
        if full_size
        else "SMOKE: tiny random model on CPU, 64 x 64, 1 step per call (timings not meaningful)",
        "machine": machine_description(),
        "stem_seconds": STEM_SECONDS,
        "window_seconds": WINDOW_SECONDS,
        "resolution": resolution,
        "prompt": PROMPT,
        "results": [],
        "published_reference_not_measured_here": PUBLISHED_SD15_50_STEPS_S,
    }
    results: list[dict[str, Any]] = report["results"]
    for variant in variants:
        print(f"-- {variant.name}", flush=True)
        try:
            res = run_variant(
                variant,
                full_size=full_size,
                device=device,
                windows=windows,
                resolution=resolution,
                work_dir=work_dir,
                # A render's overlap; the smoke's 64-column windows carry 8 columns.
                overlap_frames=field_default("overlap_frames") if full_size else 8,
            )
        except Exception as exc:  # noqa: BLE001 - record and go on to the next variant
            traceback.print_exc()
            res = {"variant": variant.__dict__, "error": f"{type(exc).__name__}: {exc}"}
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        print(json.dumps(res), flush=True)
        results.append(res)
        compare(results)
        write_report(out_path, report)
    work.cleanup()
    print(f"wrote {out_path}")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
