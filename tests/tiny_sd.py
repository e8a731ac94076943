"""Build and save a tiny random Stable Diffusion 1.x pipeline for offline tests.

The configuration follows diffusers' own fast tests (see method.md, "diffusers facts"):
a UNet with block_out_channels (32, 64), a two-level VAE (vae_scale_factor 2) and a
five-layer CLIP text encoder with hidden size 32. ``vae_levels=4`` builds a four-level
VAE instead (vae_scale_factor 8, Stable Diffusion's real latent scale), with 16 channels
per level so that it stays fast. Nothing is downloaded: the tokenizer is
written from a small byte-level vocabulary at build time. Weights are random (seeded), so
images are meaningless; tests check shapes, masks, determinism and plumbing only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _bytes_to_unicode() -> dict[int, str]:
    # CLIP's byte-level BPE maps every byte to a printable character; the tiny vocabulary
    # holds every such character (alone and as a word end) so any text tokenises.
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def write_tiny_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    """Write ``vocab.json`` and ``merges.txt`` of a tiny CLIP BPE tokenizer into ``folder``.

    Ids: 0 = ``<|startoftext|>`` (bos), 1 = ``<|pad|>``, 2 = ``<|endoftext|>`` (eos), then
    the 256 byte characters, each also with the ``</w>`` word-end suffix (515 ids, below
    the text encoder's vocabulary of 1,000).
    """
    folder.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|pad|>": 1, "<|endoftext|>": 2}
    for ch in _bytes_to_unicode().values():
        vocab[ch] = len(vocab)
    for ch in _bytes_to_unicode().values():
        vocab[ch + "</w>"] = len(vocab)
    # One merge so the BPE path is exercised ("lo" + "fi" style words stay byte-level).
    vocab["th</w>"] = len(vocab)
    merges = ["#version: 0.2", "t h</w>"]
    vocab_path = folder / "vocab.json"
    merges_path = folder / "merges.txt"
    vocab_path.write_text(json.dumps(vocab), encoding="utf-8")
    merges_path.write_text("\n".join(merges) + "\n", encoding="utf-8")
    return vocab_path, merges_path


def build_tiny_sd_pipeline(
    work_dir: Path, seed: int = 0, vae_levels: int = 2
):  # -> StableDiffusionInpaintPipeline
    """Build the tiny random SD 1.x inpainting pipeline (CPU, float32), seeded.

    Args:
        work_dir: scratch folder for the tokenizer files.
        seed: ``torch.manual_seed`` value for the random weights.
        vae_levels: 2 (vae_scale_factor 2, diffusers' test VAE) or 4 (scale factor 8,
            as Stable Diffusion's).
    """
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionInpaintPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
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
    torch.manual_seed(seed)
    if vae_levels == 2:
        vae = AutoencoderKL(
            block_out_channels=[32, 64],
            in_channels=3,
            out_channels=3,
            down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
            up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
            latent_channels=4,
        )
    elif vae_levels == 4:
        vae = AutoencoderKL(
            block_out_channels=[16, 16, 16, 16],
            in_channels=3,
            out_channels=3,
            down_block_types=["DownEncoderBlock2D"] * 4,
            up_block_types=["UpDecoderBlock2D"] * 4,
            layers_per_block=1,
            norm_num_groups=8,
            latent_channels=4,
        )
    else:
        raise ValueError(f"vae_levels must be 2 or 4, got {vae_levels}")
    torch.manual_seed(seed)
    text_config = CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=5,
        vocab_size=1000,
    )
    text_encoder = CLIPTextModel(text_config)
    vocab_path, merges_path = write_tiny_tokenizer_files(Path(work_dir) / "tokenizer_src")
    tokenizer = CLIPTokenizer(
        vocab=str(vocab_path),
        merges=str(merges_path),
        pad_token="<|pad|>",
        model_max_length=77,
    )
    scheduler = PNDMScheduler(skip_prk_steps=True, steps_offset=1)
    return StableDiffusionInpaintPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_tiny_sd_pipeline(folder: Path, seed: int = 0, vae_levels: int = 2) -> Path:
    """Build the tiny pipeline and ``save_pretrained`` it into ``folder``; return ``folder``."""
    folder = Path(folder)
    pipe = build_tiny_sd_pipeline(
        folder.parent / (folder.name + "_work"), seed=seed, vae_levels=vae_levels
    )
    pipe.save_pretrained(str(folder))
    return folder


def tiny_sd_folder_for(base_temp: Path, vae_levels: int = 2) -> Path:
    """The tiny pipeline saved once under ``base_temp`` (pytest's session base temp);
    later calls, from any test module, reuse the folder. ``vae_levels=4``: the variant
    with Stable Diffusion's latent scale (vae_scale_factor 8), in its own folder."""
    name = "tiny_sd_pipeline" if vae_levels == 2 else f"tiny_sd_pipeline_vae{2 ** (vae_levels - 1)}"
    folder = Path(base_temp) / name
    if not (folder / "model_index.json").is_file():
        save_tiny_sd_pipeline(folder, vae_levels=vae_levels)
    return folder


@contextmanager
def torch_single_thread() -> Iterator[None]:
    """Run torch on one intra-op thread, restoring the previous count afterwards.

    Measured on the shared 2-core machine under load (load average 7): one 2-step call
    of the tiny pipeline took 3 to 9 s with torch's default 2 threads (OpenMP threads
    spinning against other processes) and 0.23 s with 1 thread. Restoring the count keeps
    other test modules in the same pytest process unaffected.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
