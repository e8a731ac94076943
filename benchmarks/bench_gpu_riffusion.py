"""GPU benchmark of the ``riffusion`` generator (BNMusic Stage 1) at full size.

Run: ``python benchmarks/bench_gpu_riffusion.py`` on a machine with CUDA (writes
benchmarks/results/gpu_riffusion.json). Never run in CI. Without CUDA it exits with a
message; ``--smoke`` runs the same code on the CPU with a tiny model, 64 x 64 images and
2 steps (writes benchmarks/results/gpu_riffusion_smoke.json; its timings mean nothing).

What is timed: :class:`RiffusionGenerator.render` with the ``riffusion`` plan at its
default parameters (outpaint 25 steps at strength 1.0 + inpaint 25 steps at strength
0.75 = 43 denoising steps, guidance 7, DPM-Solver++), 512 x 512 windows, 12 windows
(5.12 s each, about a 60 s stem). No weights are downloaded: Stable Diffusion 1.5's
published configurations (UNet 320/640/1280/1280 with cross-attention 768, CLIP ViT-L/14
text encoder with 12 layers of 768, VAE 128/256/512/512) are built in-process with random
weights, which run at the same speed as the trained ones.

Variants, each against the float32 baseline measured in the same run:
fp32 (baseline), fp16, bf16, fp16 without SDPA (classic attention), fp16 +
channels_last, fp16 + torch.compile of the UNet, fp16 with continuation off and windows
batched, fp16 with fewer steps (12 + 12). Per variant: seconds per window, real-time
factor for the 60 s stem (processing seconds / 60; below 1 is faster than real time),
peak GPU memory. One window is generated first as a warm-up (and compile) and not timed.
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
from bnmusic_bridge.request import field_default  # noqa: E402

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
    """One benchmark configuration."""

    name: str
    dtype: str = "fp16"
    sdpa: bool = True
    channels_last: bool = False
    compile_unet: bool = False
    continuation: bool = True
    batch_size: int | None = None
    outpaint_steps: int = 25
    inpaint_steps: int = 25


VARIANTS = (
    Variant("fp32 (baseline)", dtype="fp32"),
    Variant("fp16", dtype="fp16"),
    Variant("bf16", dtype="bf16"),
    Variant("fp16 classic attention (no SDPA)", sdpa=False),
    Variant("fp16 + channels_last", channels_last=True),
    Variant("fp16 + torch.compile unet", channels_last=True, compile_unet=True),
    Variant("fp16 batched, continuation off", continuation=False, batch_size=4),
    Variant("fp16 12+12 steps", outpaint_steps=12, inpaint_steps=12),
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
    """Synthetic noise windows: random grey images, a band-shaped core covering ~15 %."""
    rng = np.random.default_rng(seed)
    n = 511 * 441
    out = []
    for k in range(count):
        image = rng.integers(0, 256, (side, side)).astype(np.uint8)
        mask = np.zeros((side, side), dtype=bool)
        r0 = int(side * 0.6)
        mask[r0 : r0 + int(side * 0.15), :] = True  # a low-frequency band, all frames
        enlarged = np.zeros_like(mask)
        pad = max(1, side // 32)
        enlarged[r0 - pad : r0 + int(side * 0.15) + pad, :] = True
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
                mask_enlarged=enlarged,
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


def run_variant(
    variant: Variant,
    *,
    full_size: bool,
    device: str,
    windows: list[NoiseWindow],
    resolution: int,
    work_dir: Path,
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
        scheduler=field_default("scheduler"),
        label="sd15-random" if full_size else "tiny-random",
    )
    params = {
        "resolution": resolution,
        "outpaint_steps": variant.outpaint_steps,
        "inpaint_steps": variant.inpaint_steps,
        "continuation": variant.continuation,
    }
    plan = riffusion_plan(params)
    settings = GenerationSettings(
        prompt=PROMPT,
        negative_prompt="",
        seed=42,
        overlap_frames=field_default("overlap_frames"),
        params=params,
    )
    cuda = device.startswith("cuda")

    # Warm-up (and compile): as many windows as one batch holds, not timed.
    warm = windows[: max(1, variant.batch_size or 1)]
    start = time.perf_counter()
    gen.render([replace(w, index=w.index + 1000) for w in warm], settings, plan)
    warmup_s = time.perf_counter() - start
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = gen.render(windows, settings, plan)
    if cuda:
        torch.cuda.synchronize()
    total_s = time.perf_counter() - start
    peak_gib = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    del gen, components
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return {
        "variant": variant.__dict__,
        "denoising_steps_per_window": sum(s.effective_steps for s in plan.steps),
        "windows": len(windows),
        "warmup_s": round(warmup_s, 3),
        "total_s": round(total_s, 3),
        "seconds_per_window": round(total_s / len(windows), 4),
        "real_time_factor_60s_stem": round(total_s / STEM_SECONDS, 4),
        "peak_gpu_memory_gib": None if peak_gib is None else round(peak_gib, 2),
        "batch_sizes_used": sorted({m.diagnostics["batch_size"] for m in out}),
        "device": out[0].diagnostics["device"],
        "dtype": out[0].diagnostics["dtype"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model on CPU, 2 steps")
    parser.add_argument("--windows", type=int, default=None, help="windows to time (12)")
    parser.add_argument(
        "--variants", default="", help="comma-separated variant names to run (default all)"
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON output path")
    args = parser.parse_args(argv)

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
    count = args.windows or (12 if full_size else 3)
    variants = list(VARIANTS)
    if args.variants:
        wanted = {v.strip() for v in args.variants.split(",")}
        variants = [v for v in variants if v.name in wanted]
    if args.smoke:
        torch.set_num_threads(1)  # the CPU is shared; timings here mean nothing anyway
        # CPU: half precision and compilation are GPU knobs; keep their code paths
        # (attention swap, channels_last, batching, fewer steps) at float32, 2 steps.
        variants = [
            replace(
                v,
                name=f"{v.name} [smoke: fp32, tiny]",
                dtype="fp32",
                compile_unet=False,
                outpaint_steps=2 if v.outpaint_steps == 25 else 1,
                inpaint_steps=2,
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
    windows = make_windows(count, 512)

    results = []
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
            )
        except Exception as exc:  # noqa: BLE001 - record and go on to the next variant
            traceback.print_exc()
            res = {"variant": variant.__dict__, "error": f"{type(exc).__name__}: {exc}"}
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        print(json.dumps(res), flush=True)
        results.append(res)

    baseline = next(
        (r for r in results if "total_s" in r and r["variant"]["dtype"] == "fp32"), None
    )
    for r in results:
        if baseline is not None and "total_s" in r:
            r["speedup_vs_fp32_baseline"] = round(baseline["total_s"] / r["total_s"], 3)

    report = {
        "benchmark": "riffusion generator, outpaint + inpaint, full SD 1.5 size, random weights"
        if full_size
        else "SMOKE: tiny random model on CPU, 64 x 64, 2 steps (timings not meaningful)",
        "machine": machine_description(),
        "stem_seconds": STEM_SECONDS,
        "window_seconds": WINDOW_SECONDS,
        "resolution": resolution,
        "prompt": PROMPT,
        "results": results,
        "published_reference_not_measured_here": PUBLISHED_SD15_50_STEPS_S,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2) + "\n")
    work.cleanup()
    print(f"wrote {out_path}")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
