"""The ``riffusion`` generator: BNMusic's Stage 1 on Stable Diffusion 1.x (diffusers).

For every noise window (a 512 x 512 Riffusion image, picture orientation, loud = dark):

1. Outpainting: the high-energy core ``M`` of the noise image is kept, everything else is
   repainted from the prompt (diffusers' white mask = repaint, so ``mask_image = ~M``).
2. Inpainting: on the outpainted image the *enlarged* core is repainted
   (``mask_image = mask_enlarged``) and the rest kept, so music replaces the noise
   where it is loudest while keeping its rhythm and spectral placement.

Kept pixels are copied back exactly after each step (diffusers' 4-channel inpainting
still sends them through the VAE, which changes them slightly).

Masks at the model's latent scale. diffusers shrinks the pixel mask to the latent grid
(one latent per ``vae_scale_factor`` x ``vae_scale_factor`` block, 8 x 8 pixels for
Stable Diffusion) by nearest-neighbour sampling, i.e. by the block's top-left pixel
(``torch.nn.functional.interpolate`` in ``prepare_mask_latents``, after
``VaeImageProcessor.binarize`` cuts at 0.5). A block whose sampled pixel is outside the
mask keeps the latents of the input image, so masked pixels elsewhere in it come out as
the VAE's reconstruction of the input, not as new content. The masks handed to diffusers
are therefore made constant on each block first (any sampling then agrees):

- inpainting repaints every block holding any pixel to repaint
  (:func:`latent_repaint_mask`), so no pixel of the core is left as a kept block;
- outpainting keeps the blocks at least :data:`OUTPAINT_KEEP_SHARE` of whose pixels are
  kept (:func:`latent_keep_mask`): the model conditions on the densest part of the core
  (on the ten recordings, keeping every block that touches the core would keep a median
  39 % of the image as noise; keeping only blocks made entirely of core pixels keeps
  almost nothing of a scattered core). The non-core pixels of the kept blocks, which the outpainting did not
  generate, join the inpainting step's repaint mask, so every pixel of the result is
  either model output or an exactly restored kept pixel.

The grey image diffusers returns as RGB is read from its red channel, as Riffusion's
``spectrogram_from_image`` does for mono (``data[0:1]``).

Continuation (``continuation=True``, the default): for window ``k > 0`` the first
``settings.overlap_frames`` columns are replaced by the last columns of window
``k - 1``'s final music image and kept in both steps, so rhythm and harmony carry across
windows. Those columns were encoded against window ``k - 1``'s level (the ``max_value``
pixel 0 stands for); they are re-expressed at window ``k``'s level, which is raised to
the carried columns' peak when they are louder (the window's noise image is then
re-expressed too), and :attr:`WindowMusic.max_value` tells the pipeline the level to
decode with: the overlap decodes at one level on both sides of a join. The price of
continuation: windows depend on each other and run one at a time. With
``continuation=False`` windows are independent and go through the UNet in batches
(``batch_size``; on CUDA chosen from free memory by default), which is faster on a GPU.

``settings.params`` keys (anything else is a :class:`ParameterError`):

=====================  =======  ====================================================
key                    default  meaning
=====================  =======  ====================================================
``outpaint_steps``     25       scheduler steps of the outpainting call
``outpaint_strength``  1.0      0 < s <= 1; runs int(steps * s) steps (1.0 = from noise)
``outpaint_guidance``  7.0      classifier-free guidance scale (<= 1 turns it off)
``inpaint_steps``      25       scheduler steps of the inpainting call
``inpaint_strength``   0.75     0 < s <= 1; how much of the core is re-noised
``inpaint_guidance``   7.0      classifier-free guidance scale
``resolution``         512      model image side in pixels (multiple of 8, 64..2048);
                                windows are resized to it and back
``continuation``       True     carry the previous window's tail (see above)
=====================  =======  ====================================================

Weights load lazily on the first :meth:`RiffusionGenerator.generate` (or an explicit
:meth:`RiffusionGenerator.load`) and are shared, per (model, device, dtype,
local_files_only, channels_last, compile_unet), by every generator built on them in this
process (``riffusion``, ``riffusion-a2a``, ``outpaint-only``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis import StemAnalysis
from ..device import DeviceChoice, check_device_name, check_dtype_name, select_device
from ..errors import (
    BNMusicError,
    GeneratorError,
    ModelNotFoundError,
    ParameterError,
)
from ..request import DEFAULT_MODEL_ID
from ..request import SCHEDULERS as SCHEDULER_NAMES
from .base import GenerationSettings, NoiseWindow, ProgressFn, WindowMusic, check_param_names

_SCHEDULER_CLASSES = (
    "DPMSolverMultistepScheduler",
    "DDIMScheduler",
    "PNDMScheduler",
    "EulerDiscreteScheduler",
    "LMSDiscreteScheduler",
)
"""The diffusers class of each name in :data:`~bnmusic_bridge.request.SCHEDULERS`, in
its order."""

SCHEDULERS: dict[str, str] = dict(zip(SCHEDULER_NAMES, _SCHEDULER_CLASSES, strict=True))
"""Scheduler name (``RenderRequest.scheduler``) -> the diffusers class it builds."""


def _check_scheduler_classes() -> None:
    # The names live in request.py, the classes here: each class must be the one its
    # name says (the name is the start of the class's name), so a reordered or renamed
    # entry on either side fails at import instead of building the wrong scheduler.
    for name, cls in SCHEDULERS.items():
        if not cls.lower().startswith(name.rstrip("+")):
            raise ImportError(f"scheduler {name!r} is mapped to diffusers' {cls}")


_check_scheduler_classes()

MODEL_HOWTO = (
    "Get the Riffusion weights (Stable Diffusion 1.5 fine-tuned on spectrograms) with\n"
    f"    hf download {DEFAULT_MODEL_ID}\n"
    "(huggingface_hub's `hf` command; add --local-dir DIR for a folder to copy, and\n"
    "--exclude '*.ckpt' --exclude 'unet_traced/*' --exclude 'safety_checker/*' to skip\n"
    "what is not used: one --exclude per pattern), or point at a local\n"
    "diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/,\n"
    "scheduler/) with --model /path/to/folder (copy it to a machine without network),\n"
    "or render without weights with --generator procedural."
)
"""How to get the weights; part of every :class:`ModelNotFoundError` message."""

# Rough CUDA memory per window in a batch at 512 x 512 in half precision, classifier-free
# guidance on (UNet activations for 2 x batch plus the VAE decode, the peak). A
# heuristic: out-of-memory halves the batch and retries anyway.
_CUDA_BYTES_PER_WINDOW_512_FP16 = 3.0 * 2**30
_MAX_AUTO_BATCH = 8

OUTPAINT_KEEP_SHARE = 0.5
"""Outpainting keeps (conditions on) a latent block when at least this share of its
pixels is kept. Measured on every window of the ten recordings in
``../shared/data/noise`` at Stable Diffusion's 8 x 8 blocks
(``benchmarks/bench_riffusion_masks.py``): the kept blocks hold a median 56 % of the
core's pixels (31 to 83 %) and cover 8.9 % of the image (1.9 to 14.7 %), less than the
core's 14.4 %; the pixels they hold outside the core (2.9 %, 0.7 to 4.1 %) are repainted
by the inpainting step. Keeping every block that touches the core would keep a median
39 % of the image as noise; keeping only blocks made entirely of core, 0.8 % of the core."""


# ---------------------------------------------------------------------------------------
# Parameters


@dataclass(frozen=True)
class DiffusionStep:
    """One diffusers call.

    Attributes:
        kind: "outpaint" (keep the core M), "inpaint" (repaint the enlarged core) or
            "img2img" (repaint everything).
        steps: scheduler steps before ``strength`` is applied.
        strength: 0 < strength <= 1; the call runs ``int(steps * strength)`` steps.
        guidance: classifier-free guidance scale (no guidance when <= 1).
    """

    kind: str
    steps: int
    strength: float
    guidance: float

    @property
    def effective_steps(self) -> int:
        """Denoising steps this call runs (diffusers: ``min(int(steps * strength), steps)``)."""
        return min(int(self.steps * self.strength), self.steps)


@dataclass(frozen=True)
class DiffusionPlan:
    """The diffusers calls made for every window, in order.

    Attributes:
        steps: the calls (outpaint then inpaint for ``riffusion``).
        resolution: model image side in pixels.
        continuation: carry window ``k - 1``'s tail into window ``k`` (sequential).
    """

    steps: tuple[DiffusionStep, ...]
    resolution: int
    continuation: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form for diagnostics."""
        return {
            "steps": [
                {
                    "kind": s.kind,
                    "steps": s.steps,
                    "strength": s.strength,
                    "guidance": s.guidance,
                    "effective_steps": s.effective_steps,
                }
                for s in self.steps
            ],
            "resolution": self.resolution,
            "continuation": self.continuation,
        }


ParamSpec = Mapping[str, tuple[type, Any]]
"""Parameter name -> (type, default); type is ``int``, ``float`` or ``bool``."""

RIFFUSION_PARAMS: ParamSpec = {
    "outpaint_steps": (int, 25),
    "outpaint_strength": (float, 1.0),
    "outpaint_guidance": (float, 7.0),
    "inpaint_steps": (int, 25),
    "inpaint_strength": (float, 0.75),
    "inpaint_guidance": (float, 7.0),
    "resolution": (int, 512),
    "continuation": (bool, True),
}
"""``settings.params`` of the ``riffusion`` generator, with defaults."""


def parse_generator_params(
    params: Mapping[str, Any], spec: ParamSpec, generator: str
) -> dict[str, Any]:
    """Check ``params`` against ``spec``; return every key of ``spec`` with its value.

    Integers are accepted for float keys and integral floats for int keys; booleans only
    for bool keys.

    Raises:
        ParameterError: an unknown key or a value of the wrong type (named in the message).
    """
    check_param_names(generator, params, spec)
    out: dict[str, Any] = {}
    for key, (kind, default) in spec.items():
        value = params.get(key, default)
        out[key] = _coerce(generator, key, value, kind)
    return out


def _coerce(generator: str, key: str, value: Any, kind: type) -> Any:
    where = f"generator {generator!r} parameter {key!r}"
    if kind is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        raise ParameterError(f"{where} must be true or false, got {value!r}")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise ParameterError(f"{where} must be a number, got {value!r}")
    if not math.isfinite(float(value)):
        raise ParameterError(f"{where} must be finite, got {value!r}")
    if kind is int:
        if float(value) != int(value):
            raise ParameterError(f"{where} must be a whole number, got {value!r}")
        return int(value)
    return float(value)


def check_step(step: DiffusionStep, prefix: str, generator: str) -> DiffusionStep:
    """Range-check one diffusers call; ``prefix`` is the parameter-name prefix ("outpaint_").

    Raises:
        ParameterError: steps outside 1..1000, strength outside (0, 1], negative guidance,
            or fewer than one effective step.
    """
    where = f"generator {generator!r}"
    if not 1 <= step.steps <= 1000:
        raise ParameterError(f"{where}: {prefix}steps must be 1..1000, got {step.steps}")
    if not 0.0 < step.strength <= 1.0:
        raise ParameterError(f"{where}: {prefix}strength must be in (0, 1], got {step.strength}")
    if step.guidance < 0.0:
        raise ParameterError(f"{where}: {prefix}guidance must be >= 0, got {step.guidance}")
    if step.effective_steps < 1:
        raise ParameterError(
            f"{where}: {prefix}steps x {prefix}strength = {step.steps} x {step.strength} "
            "gives no denoising step; raise one of them"
        )
    return step


def check_resolution(resolution: int, generator: str) -> int:
    """Model image side: a multiple of 8 from 64 to 2048 pixels.

    Raises:
        ParameterError: otherwise.
    """
    if resolution % 8 or not 64 <= resolution <= 2048:
        raise ParameterError(
            f"generator {generator!r}: resolution must be a multiple of 8 from 64 to 2048 "
            f"pixels, got {resolution}"
        )
    return resolution


def riffusion_plan(params: Mapping[str, Any], generator: str = "riffusion") -> DiffusionPlan:
    """Parse the ``riffusion`` generator's ``settings.params`` into an outpaint+inpaint plan.

    Raises:
        ParameterError: unknown keys or out-of-range values.
    """
    p = parse_generator_params(params, RIFFUSION_PARAMS, generator)
    outpaint = DiffusionStep(
        "outpaint", p["outpaint_steps"], p["outpaint_strength"], p["outpaint_guidance"]
    )
    inpaint = DiffusionStep(
        "inpaint", p["inpaint_steps"], p["inpaint_strength"], p["inpaint_guidance"]
    )
    return DiffusionPlan(
        steps=(
            check_step(outpaint, "outpaint_", generator),
            check_step(inpaint, "inpaint_", generator),
        ),
        resolution=check_resolution(p["resolution"], generator),
        continuation=p["continuation"],
    )


def window_seed(seed: int, window_index: int) -> int:
    """The torch seed of one window: a hash of (``seed``, ``window_index``), 0..2**63-1.

    Independent of batching, so a window's music depends only on the render seed, its
    index and its inputs.
    """
    ss = np.random.SeedSequence([int(seed) & (2**64 - 1), int(window_index) & (2**64 - 1)])
    return int(ss.generate_state(1, dtype=np.uint64)[0]) & (2**63 - 1)


# ---------------------------------------------------------------------------------------
# Loaded weights, shared across generators of one process


@dataclass
class _LoadedModel:
    components: dict[str, Any]
    choice: DeviceChoice
    source: str
    load_seconds: float
    lock: threading.RLock = field(default_factory=threading.RLock)


_MODELS: dict[tuple[Any, ...], _LoadedModel] = {}
_MODELS_LOCK = threading.Lock()


def _resolve_model_location(model: str, local_files_only: bool) -> str:
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelNotFoundError(
                f"model folder {model!r} exists but is not a diffusers model folder "
                f"(no model_index.json in it).\n{MODEL_HOWTO}"
            )
        return str(path)
    looks_like_path = (
        model.startswith((".", "/", "~")) or "\\" in model or model.count("/") != 1 or path.exists()
    )
    if looks_like_path:
        raise ModelNotFoundError(f"model folder {model!r} does not exist.\n{MODEL_HOWTO}")
    if local_files_only:
        # Answer "not downloaded" at once instead of through diffusers' traceback.
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "model_index.json")
        if not isinstance(cached, str):
            raise ModelNotFoundError(
                f"model {model!r} is not in the Hugging Face cache and downloads are off "
                f"(local_files_only).\n{MODEL_HOWTO}"
            )
    return model


def _looks_like_missing(exc: BaseException) -> bool:
    if isinstance(exc, (OSError, FileNotFoundError, ConnectionError)):
        return True
    names = " ".join(type(c).__name__ for c in type(exc).__mro__)
    return any(k in names for k in ("NotFound", "Offline", "HTTP", "Connect", "Timeout"))


def _prepare_components(
    components: Mapping[str, Any], choice: DeviceChoice, channels_last: bool, compile_unet: bool
) -> dict[str, Any]:
    import torch

    dtype = choice.torch_dtype()
    out = dict(components)
    for key in ("unet", "vae", "text_encoder"):
        module = out[key]
        # Cast only when needed: from_pretrained already loaded the right dtype (and
        # knows which modules must stay float32).
        if module.dtype != dtype:
            module = module.to(dtype=dtype)
        out[key] = module.to(device=choice.device).eval()
    if channels_last:
        out["unet"] = out["unet"].to(memory_format=torch.channels_last)
    if compile_unet:
        # Default mode (no CUDA graphs): the inpainting loop blends latents between
        # UNet calls, and a changing batch size only triggers a recompile.
        out["unet"] = torch.compile(out["unet"])
    return out


def _load_model(
    model: str,
    local_files_only: bool,
    choice: DeviceChoice,
    channels_last: bool,
    compile_unet: bool,
) -> _LoadedModel:
    key = (model, local_files_only, choice.device, choice.dtype, channels_last, compile_unet)
    with _MODELS_LOCK:
        loaded = _MODELS.get(key)
        if loaded is not None:
            return loaded
        source = _resolve_model_location(model, local_files_only)
        start = time.perf_counter()
        try:
            from diffusers import StableDiffusionInpaintPipeline

            pipe = StableDiffusionInpaintPipeline.from_pretrained(
                source,
                local_files_only=local_files_only,
                **{_dtype_kwarg(): choice.torch_dtype()},
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
            components = {
                k: getattr(pipe, k)
                for k in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")
            }
            components = _prepare_components(components, choice, channels_last, compile_unet)
        except BNMusicError:
            raise
        except Exception as exc:  # noqa: BLE001 - every load failure becomes one clear error
            if _is_out_of_memory(exc):
                raise GeneratorError(
                    f"out of memory while moving {model!r} to {choice.device} "
                    f"({choice.dtype}); try --dtype float16 or --device cpu"
                ) from exc
            if _looks_like_missing(exc):
                raise ModelNotFoundError(
                    f"could not find the weights of {model!r}: {exc}\n{MODEL_HOWTO}"
                ) from exc
            raise GeneratorError(
                f"could not load the diffusers model {model!r}: {type(exc).__name__}: {exc}"
            ) from exc
        loaded = _LoadedModel(
            components=components,
            choice=choice,
            source=source,
            load_seconds=time.perf_counter() - start,
        )
        _MODELS[key] = loaded
        return loaded


def _dtype_kwarg() -> str:
    # diffusers renamed from_pretrained's ``torch_dtype`` to ``dtype`` (0.42 warns on the
    # old name); older releases only know ``torch_dtype``.
    try:
        from diffusers.utils import deprecation_utils

        return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"
    except ImportError:
        return "torch_dtype"


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    if isinstance(exc, oom):
        return True
    # MPS and some CUDA paths raise a plain RuntimeError.
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _make_scheduler(name: str, config: Mapping[str, Any]) -> Any:
    import diffusers

    cls_name = SCHEDULERS[name]
    cls = getattr(diffusers, cls_name)
    extra: dict[str, Any] = {}
    if cls_name == "DPMSolverMultistepScheduler":
        # The scheduler's name is the solver's algorithm_type in diffusers.
        extra["algorithm_type"] = name
    elif cls_name == "DDIMScheduler":
        # SD 1.x configs (PNDM) carry no clip_sample; DDIM's default (True) is wrong for
        # latents and diffusers would warn and override it.
        extra["clip_sample"] = False
    return cls.from_config(dict(config), **extra)


# ---------------------------------------------------------------------------------------
# Images


def _resize_u8(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a uint8 (H, W) image with bicubic filtering (identity when the size matches)."""
    if image.shape == (height, width):
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))


def _resize_share(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area-average a bool (H, W) mask to float (height, width) in 0..1 (the share of each
    new pixel the mask covers)."""
    if mask.shape == (height, width):
        return mask.astype(np.float32)
    from PIL import Image

    img = Image.fromarray(mask.astype(np.float32))
    return np.asarray(img.resize((width, height), Image.Resampling.BOX), dtype=np.float32)


# Images go between the window's size and the model's with bicubic filtering, whose
# kernel reaches 2 pixels of the coarser grid: a mask resized "any" grows by that reach.
_BICUBIC_REACH = 2


def _resize_any(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bool (H, W) mask to (height, width): set wherever a set source pixel could reach
    through the bicubic resizing of the images (identity when the size matches)."""
    if mask.shape == (height, width):
        return mask.copy()
    from scipy import ndimage

    scale = max(1.0, height / mask.shape[0], width / mask.shape[1])
    touched = _resize_share(mask, height, width) > 0.0
    reach = int(math.ceil(_BICUBIC_REACH * scale))
    return ndimage.binary_dilation(touched, np.ones((3, 3), dtype=bool), iterations=reach)


def _reexpress(image: np.ndarray, level: float, new_level: float) -> np.ndarray:
    """A uint8 Riffusion image encoded against ``level`` (the magnitude of pixel 0),
    encoded against ``new_level`` instead: the same mel magnitudes, other pixel values
    (louder than ``new_level`` clips to 0). Rounded to the nearest pixel value, not
    truncated as a fresh encoding is: truncation would bias the re-expressed columns
    loud (measured on a 64 x 8 overlap of the test model's output moved up 9 dB:
    +0.14 dB truncated, -0.02 dB rounded)."""
    if new_level == level:
        return image
    from ..spectrogram import RIFFUSION_POWER_FOR_IMAGE, image_to_mel

    mel = image_to_mel(image, level)[::-1]  # back to picture orientation
    x = np.clip(mel / np.float32(new_level), 0.0, 1.0) ** RIFFUSION_POWER_FOR_IMAGE * 255.0
    return np.clip(np.rint(255.0 - x), 0, 255).astype(np.uint8)


def _peak_level(image: np.ndarray, level: float) -> float:
    """The largest mel magnitude in a uint8 Riffusion image encoded against ``level``."""
    from ..spectrogram import image_to_mel

    return float(image_to_mel(image, level).max()) if image.size else 0.0


def _block_shares(mask: np.ndarray, factor: int) -> np.ndarray:
    """Share of each ``factor`` x ``factor`` block's pixels that are set (float, blocks)."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2 or factor < 1 or m.shape[0] % factor or m.shape[1] % factor:
        raise ParameterError(
            f"a mask of shape {m.shape} cannot be cut into {factor} x {factor} latent blocks; "
            "the model resolution must be a multiple of the VAE's scale factor"
        )
    rows, cols = m.shape[0] // factor, m.shape[1] // factor
    return m.reshape(rows, factor, cols, factor).mean(axis=(1, 3))


def _blocks_to_pixels(blocks: np.ndarray, factor: int) -> np.ndarray:
    return np.repeat(np.repeat(blocks, factor, axis=0), factor, axis=1)


def latent_repaint_mask(repaint: np.ndarray, factor: int) -> np.ndarray:
    """The repaint mask as diffusers must see it: every ``factor`` x ``factor`` block that
    holds any pixel of ``repaint`` is repainted as a whole.

    Args:
        repaint: bool ``(H, W)`` at the model's resolution, True = repaint; ``H`` and
            ``W`` multiples of ``factor``.
        factor: the VAE's scale factor (pixels per latent along each side; 8 for SD 1.x).

    Returns:
        bool ``(H, W)``, constant on each block, a superset of ``repaint``.

    Raises:
        ParameterError: the shape is not a whole number of blocks.
    """
    return _blocks_to_pixels(_block_shares(repaint, factor) > 0.0, factor)


def latent_keep_mask(
    keep: np.ndarray, factor: int, share: float = OUTPAINT_KEEP_SHARE
) -> np.ndarray:
    """The blocks a masked diffusers call keeps: those at least ``share`` of whose pixels
    are in ``keep`` (``share`` in (0, 1]; 1 = only blocks made entirely of kept pixels).

    Args:
        keep: bool ``(H, W)`` at the model's resolution, True = keep.
        factor: the VAE's scale factor.
        share: least share of a block's pixels that must be kept for the block to be.

    Returns:
        bool ``(H, W)``, constant on each block.

    Raises:
        ParameterError: the shape is not a whole number of blocks, or ``share`` is
            outside (0, 1].
    """
    if not 0.0 < share <= 1.0:
        raise ParameterError(f"keep share must be in (0, 1], got {share}")
    return _blocks_to_pixels(_block_shares(keep, factor) >= share, factor)


@dataclass
class _Job:
    """One window's work: its input image, what each step keeps, and its seed."""

    window: NoiseWindow
    image: np.ndarray  # uint8 (H, W), picture orientation, with the carried tail in place
    keep_outpaint: np.ndarray  # bool (H, W): kept while outpainting (M + carried tail)
    repaint_inpaint: np.ndarray  # bool (H, W): repainted while inpainting
    seed: int
    continued: bool
    level: float  # linear mel magnitude pixel 0 of ``image`` stands for (its max_value)


@dataclass
class _Done:
    """One window's result: the music image, the level it is encoded at, diagnostics."""

    index: int
    image: np.ndarray  # uint8 (H, W), picture orientation
    level: float  # linear mel magnitude pixel 0 of ``image`` stands for
    info: dict[str, Any]


class _Progress:
    """Turns per-step callbacks of several diffusers calls into one 0..1 fraction."""

    def __init__(self, progress: ProgressFn | None, total_units: float) -> None:
        self.progress = progress
        self.total_units = max(total_units, 1e-9)
        self.done_units = 0.0

    def report(self, units: float) -> None:
        if self.progress is not None:
            self.progress("generate", min(1.0, units / self.total_units))

    def callback(self, call_units: float) -> Callable[..., dict[str, Any]]:
        base = self.done_units

        def on_step_end(pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            total = max(int(getattr(pipe, "num_timesteps", 0) or 0), i + 1)
            try:
                self.report(base + call_units * (i + 1) / total)
            except BaseException:
                # Stop diffusers' loop as well as unwinding it (CancelledError included).
                pipe._interrupt = True
                raise
            return kwargs

        return on_step_end

    def finish_call(self, call_units: float) -> None:
        self.done_units += call_units


# ---------------------------------------------------------------------------------------
# The generator


class RiffusionGenerator:
    """BNMusic Stage 1 on Riffusion: outpaint around the noise core, then inpaint it.

    The model, device, dtype, scheduler and ``local_files_only`` are the request's
    fields of the same names (:func:`bnmusic_bridge.pipeline.model_options` builds them
    from a request); the rest are GPU knobs of this generator.

    Args:
        model: Hugging Face id (:data:`~bnmusic_bridge.request.DEFAULT_MODEL_ID`) or a
            local diffusers folder holding a Stable Diffusion 1.x pipeline (4- or 9-channel
            UNet).
        local_files_only: never download; use the local folder or the HF cache only.
        device: a name of :data:`~bnmusic_bridge.device.DEVICE_NAMES`.
        dtype: a name of :data:`~bnmusic_bridge.request.DTYPES` or
            :data:`~bnmusic_bridge.device.DTYPE_ALIASES`.
        scheduler: one of :data:`SCHEDULERS`.
        batch_size: windows per UNet batch when continuation is off; None = auto (from
            free memory on CUDA, 1 elsewhere).
        channels_last: put the UNet in channels-last memory format (GPU speed knob).
        compile_unet: ``torch.compile`` the UNet (GPU speed knob; first call compiles).
        name: generator name reported in diagnostics (None: the class's ``name``).

    Raises:
        ParameterError: unknown scheduler, device or dtype name, or batch_size < 1.
    """

    name = "riffusion"

    def __init__(
        self,
        model: str,
        *,
        local_files_only: bool,
        device: str,
        dtype: str,
        scheduler: str,
        batch_size: int | None = None,
        channels_last: bool = False,
        compile_unet: bool = False,
        name: str | None = None,
    ) -> None:
        if scheduler not in SCHEDULERS:
            raise ParameterError(
                f"unknown scheduler {scheduler!r}; allowed: {', '.join(SCHEDULERS)}"
            )
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise ParameterError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        if not isinstance(model, (str, Path)) or not str(model):
            raise ParameterError(f"model must be a Hugging Face id or a folder, got {model!r}")
        self.name = type(self).name if name is None else name
        self.model = str(model)
        self.local_files_only = bool(local_files_only)
        self.device = check_device_name(device)
        self.dtype = check_dtype_name(dtype)
        self.scheduler_name = scheduler
        self.batch_size = batch_size
        self.channels_last = bool(channels_last)
        self.compile_unet = bool(compile_unet)
        self._loaded: _LoadedModel | None = None
        self._pipes: dict[str, Any] | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_components(
        cls,
        components: Mapping[str, Any],
        *,
        device: str,
        dtype: str,
        scheduler: str,
        batch_size: int | None = None,
        channels_last: bool = False,
        compile_unet: bool = False,
        name: str | None = None,
        label: str = "in-memory",
    ) -> RiffusionGenerator:
        """A generator on already-built diffusers parts (benchmarks with random weights).

        Args:
            components: ``vae``, ``text_encoder``, ``tokenizer``, ``unet`` and
                ``scheduler`` (its config seeds the chosen scheduler).
            label: what diagnostics call the model.
        """
        missing = {"vae", "text_encoder", "tokenizer", "unet", "scheduler"} - set(components)
        if missing:
            raise ParameterError(f"from_components misses {', '.join(sorted(missing))}")
        gen = cls(
            label,
            local_files_only=False,
            device=device,
            dtype=dtype,
            scheduler=scheduler,
            batch_size=batch_size,
            channels_last=channels_last,
            compile_unet=compile_unet,
            name=name,
        )
        choice = select_device(gen.device, gen.dtype)
        start = time.perf_counter()
        prepared = _prepare_components(components, choice, channels_last, compile_unet)
        gen._loaded = _LoadedModel(
            components=prepared,
            choice=choice,
            source=label,
            load_seconds=time.perf_counter() - start,
        )
        return gen

    # -- loading ------------------------------------------------------------------------

    @property
    def device_choice(self) -> DeviceChoice | None:
        """The resolved device and dtype once loaded, else None."""
        return None if self._loaded is None else self._loaded.choice

    def load(self) -> None:
        """Load the weights now (otherwise the first :meth:`generate` does).

        Raises:
            ModelNotFoundError: the weights are not here; the message says how to get them.
            GeneratorError: they are here but could not be loaded.
            ParameterError: the device or dtype asked for is not available.
        """
        with self._lock:
            if self._pipes is not None:
                return
            if self._loaded is None:
                choice = select_device(self.device, self.dtype)
                self._loaded = _load_model(
                    self.model,
                    self.local_files_only,
                    choice,
                    self.channels_last,
                    self.compile_unet,
                )
            self._pipes = self._build_pipelines(self._loaded)

    def _build_pipelines(self, loaded: _LoadedModel) -> dict[str, Any]:
        from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline

        comps = loaded.components
        # Each generator gets its own scheduler object (they carry per-call state) on the
        # shared weights. No safety checker: spectrograms are not photographs.
        scheduler = _make_scheduler(self.scheduler_name, comps["scheduler"].config)
        parts = {
            "vae": comps["vae"],
            "text_encoder": comps["text_encoder"],
            "tokenizer": comps["tokenizer"],
            "unet": comps["unet"],
            "scheduler": scheduler,
            "safety_checker": None,
            "feature_extractor": None,
            "requires_safety_checker": False,
        }
        pipes: dict[str, Any] = {
            "inpaint": StableDiffusionInpaintPipeline(**parts),
            "img2img": StableDiffusionImg2ImgPipeline(**parts),
        }
        for pipe in pipes.values():
            pipe.set_progress_bar_config(disable=True)
        return pipes

    # -- generation ---------------------------------------------------------------------

    def generate(
        self,
        windows: Sequence[NoiseWindow],
        analysis: StemAnalysis,
        settings: GenerationSettings,
        progress: ProgressFn | None = None,
    ) -> list[WindowMusic]:
        """Outpaint then inpaint every window (see the module docstring).

        Returns one :class:`WindowMusic` per window with ``image`` (uint8, the window
        image's shape, picture orientation, loud = dark) and ``audio=None``.

        Raises:
            ParameterError: bad ``settings.params`` or windows.
            ModelNotFoundError: weights missing (message says how to get them).
            GeneratorError: the model failed, including CUDA out of memory at batch 1.
            CancelledError: ``progress`` raised it; generation stopped.
        """
        plan = riffusion_plan(settings.params, self.name)
        return self.render(windows, settings, plan, progress)

    def stream(
        self,
        windows: Sequence[NoiseWindow],
        analysis: StemAnalysis,
        settings: GenerationSettings,
        progress: ProgressFn | None = None,
    ) -> Iterator[WindowMusic]:
        """What :meth:`generate` returns, a window (or a batch of independent windows)
        at a time: continued windows are made one by one, each when the caller asks for
        it; batched ones a batch at a time. ``windows`` is iterated once and each is
        checked as it comes (a bad window raises when reached, after the model loaded).
        Same diagnostics and progress calls as :meth:`generate`.

        A subclass that replaces :meth:`generate` or :meth:`render` (the baselines)
        streams what its own ``generate`` returns, all windows made first.
        """
        own = type(self).generate is RiffusionGenerator.generate
        if not own or type(self).render is not RiffusionGenerator.render:
            yield from self.generate(windows, analysis, settings, progress)
            return
        plan = riffusion_plan(settings.params, self.name)
        yield from self.render_stream(windows, settings, plan, progress, check_each=True)

    def render(
        self,
        windows: Sequence[NoiseWindow],
        settings: GenerationSettings,
        plan: DiffusionPlan,
        progress: ProgressFn | None = None,
    ) -> list[WindowMusic]:
        """Run ``plan`` on every window; the shared engine of ``riffusion`` and the
        Riffusion-based baselines. Same returns and errors as :meth:`generate`.
        Every window is checked before the model is loaded."""
        return list(self.render_stream(windows, settings, plan, progress, check_each=False))

    def render_stream(
        self,
        windows: Sequence[NoiseWindow],
        settings: GenerationSettings,
        plan: DiffusionPlan,
        progress: ProgressFn | None = None,
        *,
        check_each: bool = True,
    ) -> Iterator[WindowMusic]:
        """:meth:`render`, handing each window's music over as soon as it is made.

        ``check_each`` True checks each window as it comes (``windows`` is iterated
        once); False checks them all first, before the model is loaded, as
        :meth:`render` does."""
        carry = (
            plan.continuation
            and settings.overlap_frames > 0
            and len(windows) > 1
            and any(s.kind != "img2img" for s in plan.steps)
        )
        if not check_each:
            _check_windows(windows, settings, carry)
        if len(windows) == 0:
            return
        self.load()
        assert self._loaded is not None and self._pipes is not None
        loaded = self._loaded
        in_channels = self._pipes["inpaint"].unet.config.in_channels
        if in_channels != 4 and any(s.kind == "img2img" for s in plan.steps):
            raise GeneratorError(
                f"{self.name}: image-to-image needs a plain 4-channel SD 1.x UNet; "
                f"{self.model!r} has {in_channels} input channels (an inpainting model)"
            )
        units_per_window = sum(s.effective_steps for s in plan.steps)
        tracker = _Progress(progress, units_per_window * len(windows))
        tracker.report(0.0)

        common = {
            "generator": self.name,
            "model": self.model,
            "model_source": loaded.source,
            "device": loaded.choice.device,
            "dtype": loaded.choice.dtype,
            "device_reason": loaded.choice.reason,
            "scheduler": self.scheduler_name,
            "plan": plan.as_dict(),
            "load_seconds": round(loaded.load_seconds, 3),
            "channels_last": self.channels_last,
            "compile_unet": self.compile_unet,
        }
        checked = _checked_windows(windows, settings, carry) if check_each else windows
        jobs = self._jobs(checked, settings)
        with loaded.lock:
            if carry:
                done = self._run_continued(jobs, settings, plan, tracker)
            else:
                done = self._run_batched(jobs, settings, plan, tracker)
            for w in done:
                yield WindowMusic(
                    audio=None,
                    image=w.image,
                    diagnostics={**common, **w.info},
                    max_value=w.level,
                )

    def _jobs(self, windows: Iterable[NoiseWindow], settings: GenerationSettings) -> Iterator[_Job]:
        # one window's job at a time: a lazy window sequence is not held whole
        for w in windows:
            yield _Job(
                window=w,
                image=np.asarray(w.image, dtype=np.uint8),
                keep_outpaint=np.asarray(w.mask, dtype=bool),
                repaint_inpaint=np.asarray(w.mask_enlarged, dtype=bool),
                seed=window_seed(settings.seed, w.index),
                continued=False,
                level=float(w.max_value),
            )

    def _run_continued(
        self,
        jobs: Iterable[_Job],
        settings: GenerationSettings,
        plan: DiffusionPlan,
        tracker: _Progress,
    ) -> Iterator[_Done]:
        overlap = settings.overlap_frames
        previous: _Done | None = None
        for job in jobs:
            if previous is not None and previous.index == job.window.index - 1:
                tail = previous.image[:, -overlap:]
                if tail.shape[0] == job.image.shape[0]:
                    # One level for the overlap on both sides of the join: the carried
                    # columns are re-expressed at this window's level, raised to their
                    # peak when they are louder (nothing clips), and the window's noise
                    # image moves to that level with them.
                    level = max(job.level, _peak_level(tail, previous.level))
                    job.image = _reexpress(job.image, job.level, level).copy()
                    job.image[:, :overlap] = _reexpress(tail, previous.level, level)
                    job.level = level
                    job.keep_outpaint = job.keep_outpaint.copy()
                    job.keep_outpaint[:, :overlap] = True
                    job.repaint_inpaint = job.repaint_inpaint.copy()
                    job.repaint_inpaint[:, :overlap] = False
                    job.continued = True
            start = time.perf_counter()
            try:
                (out,) = self._run_group([job], settings, plan, tracker)
            except BNMusicError:
                raise
            except Exception as exc:  # noqa: BLE001 - never a raw traceback to the host
                raise self._failure(exc, [job], plan) from exc
            image, stats = out
            previous = _Done(
                index=job.window.index,
                image=image,
                level=job.level,
                info={
                    "seed": job.seed,
                    "continued_from_previous": job.continued,
                    "overlap_frames": overlap if job.continued else 0,
                    "level_change_db": _level_change_db(job),
                    "batch_size": 1,
                    "seconds": round(time.perf_counter() - start, 4),
                    **stats,
                },
            )
            yield previous

    def _auto_batch_size(self, resolution: int) -> int:
        assert self._loaded is not None
        choice = self._loaded.choice
        if not choice.device.startswith("cuda"):
            return 1
        import torch

        free_bytes, _ = torch.cuda.mem_get_info(torch.device(choice.device))
        bytes_per_elem = 4 if choice.dtype == "float32" else 2
        per_window = _CUDA_BYTES_PER_WINDOW_512_FP16 * (resolution / 512) ** 2 * bytes_per_elem / 2
        return int(max(1, min(_MAX_AUTO_BATCH, (0.8 * free_bytes) // per_window)))

    def _run_batched(
        self,
        jobs: Iterator[_Job],
        settings: GenerationSettings,
        plan: DiffusionPlan,
        tracker: _Progress,
    ) -> Iterator[_Done]:
        batch = self.batch_size or self._auto_batch_size(plan.resolution)
        retries = 0
        pending: list[_Job] = []  # jobs taken from ``jobs`` and not yet run
        while True:
            # jobs are built one batch at a time (a lazy window sequence stays lazy)
            while len(pending) < batch:
                job = next(jobs, None)
                if job is None:
                    break
                pending.append(job)
            if not pending:
                return
            chunk = pending[:batch]
            done_before = tracker.done_units
            start = time.perf_counter()
            try:
                out = self._run_group(chunk, settings, plan, tracker)
            except BNMusicError:
                raise
            except Exception as exc:  # noqa: BLE001 - never a raw traceback to the host
                if _is_out_of_memory(exc) and len(chunk) > 1:
                    _free_cuda_cache()
                    tracker.done_units = done_before
                    batch = max(1, len(chunk) // 2)
                    retries += 1
                    continue
                raise self._failure(exc, chunk, plan) from exc
            seconds = (time.perf_counter() - start) / len(chunk)
            pending = pending[len(chunk) :]
            for job, (image, stats) in zip(chunk, out, strict=True):
                yield _Done(
                    index=job.window.index,
                    image=image,
                    level=job.level,
                    info={
                        "seed": job.seed,
                        "continued_from_previous": False,
                        "overlap_frames": 0,
                        "level_change_db": 0.0,
                        "batch_size": len(chunk),
                        "oom_retries": retries,
                        "seconds": round(seconds, 4),
                        **stats,
                    },
                )

    def _failure(self, exc: Exception, jobs: Sequence[_Job], plan: DiffusionPlan) -> GeneratorError:
        assert self._loaded is not None
        choice = self._loaded.choice
        indices = ", ".join(str(j.window.index) for j in jobs)
        if _is_out_of_memory(exc):
            _free_cuda_cache()
            return GeneratorError(
                f"{self.name}: out of memory on {choice.device} ({choice.dtype}) generating "
                f"window(s) {indices} at resolution {plan.resolution} with batch size "
                f"{len(jobs)}; try --dtype float16, a lower resolution, fewer steps, "
                "or close other programs using the GPU"
            )
        return GeneratorError(
            f"{self.name}: diffusion failed on window(s) {indices}: {type(exc).__name__}: {exc}"
        )

    def _run_group(
        self,
        jobs: Sequence[_Job],
        settings: GenerationSettings,
        plan: DiffusionPlan,
        tracker: _Progress,
    ) -> list[tuple[np.ndarray, dict[str, float]]]:
        """Run every step of ``plan`` on ``jobs`` as one batch.

        Returns per job the uint8 image and mask statistics (shares of the image, 0..1):
        ``outpaint_kept_share`` (latent blocks the outpainting kept),
        ``core_conditioned_share`` (share of the kept pixels inside those blocks),
        ``inpaint_pixel_share`` / ``inpaint_latent_share`` (pixels the inpainting took
        from the model / latent blocks it repainted), ``not_generated_share`` (pixels
        meant to be new that the last masked call left as the VAE's reconstruction of
        its input: 0 after outpaint + inpaint).
        """
        import torch

        assert self._pipes is not None and self._loaded is not None
        res = plan.resolution
        n = len(jobs)
        factor = int(self._pipes["inpaint"].vae_scale_factor)
        if res % factor:
            raise ParameterError(
                f"generator {self.name!r}: resolution {res} is not a multiple of the VAE's "
                f"scale factor {factor}"
            )
        generators = [torch.Generator("cpu").manual_seed(job.seed) for job in jobs]
        current = [job.image for job in jobs]
        stats: list[dict[str, float]] = [{} for _ in jobs]
        # Pixels the previous masked call should have generated but left as the VAE's
        # reconstruction of its input (their latent block was kept).
        not_generated = [np.zeros(job.image.shape, dtype=bool) for job in jobs]
        prompts = [settings.prompt] * n
        negatives = [settings.negative_prompt] * n if settings.negative_prompt else None
        for step in plan.steps:
            # keep: pixels restored exactly afterwards (window size); model_repaint: the
            # block-constant mask diffusers gets (model size).
            keep: list[np.ndarray] | None
            model_repaint: list[np.ndarray] | None
            if step.kind == "outpaint":
                keep = [job.keep_outpaint for job in jobs]
                model_keep = [latent_keep_mask(_resize_share(k, res, res), factor) for k in keep]
                model_repaint = [~m for m in model_keep]
                for k, (kp, mk) in enumerate(zip(keep, model_keep, strict=True)):
                    inside = _resize_share(mk, *kp.shape) >= 1.0
                    stats[k]["outpaint_kept_share"] = float(mk.mean())
                    stats[k]["core_conditioned_share"] = (
                        float((kp & inside).sum() / kp.sum()) if kp.any() else 0.0
                    )
            elif step.kind == "inpaint":
                repaint = [
                    job.repaint_inpaint | ng for job, ng in zip(jobs, not_generated, strict=True)
                ]
                keep = [~r for r in repaint]
                model_repaint = [
                    latent_repaint_mask(_resize_any(r, res, res), factor) for r in repaint
                ]
                for k, (r, mr) in enumerate(zip(repaint, model_repaint, strict=True)):
                    stats[k]["inpaint_pixel_share"] = float(r.mean())
                    stats[k]["inpaint_latent_share"] = float(mr.mean())
            elif step.kind == "img2img":
                keep = model_repaint = None
            else:  # pragma: no cover - plans are built in this package
                raise ParameterError(f"unknown diffusion step kind {step.kind!r}")

            image_t = torch.from_numpy(
                np.stack([_resize_u8(img, res, res) for img in current]).astype(np.float32) / 255.0
            )[:, None].repeat(1, 3, 1, 1)
            call_units = float(step.effective_steps * n)
            kwargs: dict[str, Any] = {
                "prompt": prompts,
                "negative_prompt": negatives,
                "image": image_t,
                "num_inference_steps": step.steps,
                "strength": step.strength,
                "guidance_scale": step.guidance,
                "generator": generators,
                "output_type": "np",
                "callback_on_step_end": tracker.callback(call_units),
            }
            if model_repaint is None:
                pipe = self._pipes["img2img"]
            else:
                pipe = self._pipes["inpaint"]
                mask_t = torch.from_numpy(np.stack(model_repaint).astype(np.float32))
                kwargs["mask_image"] = mask_t[:, None]
                kwargs["height"] = res
                kwargs["width"] = res
                if pipe.unet.config.in_channels == 4:
                    # A 4-channel UNet never reads the masked-image latents; passing zeros
                    # skips diffusers' extra VAE encode of the masked image.
                    latent = res // pipe.vae_scale_factor
                    kwargs["masked_image_latents"] = torch.zeros(
                        (n, pipe.vae.config.latent_channels, latent, latent),
                        dtype=self._loaded.choice.torch_dtype(),
                    )
            with torch.inference_mode():
                out = pipe(**kwargs).images  # float (n, res, res, 3) in 0..1
            tracker.finish_call(call_units)
            pixels = np.asarray(out, dtype=np.float32)
            if not np.all(np.isfinite(pixels)):
                choice = self._loaded.choice
                raise GeneratorError(
                    f"{self.name}: the {step.kind} step produced NaN/inf pixels on "
                    f"{choice.device} ({choice.dtype}), usually a half-precision overflow; "
                    "try --dtype float32 or --dtype bfloat16"
                )
            # Riffusion reads a mono spectrogram from the red channel of the RGB image
            # (spectrogram_from_image: data[0:1]), not from an average of the three.
            grey_u8 = np.clip(np.rint(pixels[..., 0] * 255.0), 0, 255).astype(np.uint8)
            new: list[np.ndarray] = []
            for k, img in enumerate(current):
                full = _resize_u8(grey_u8[k], img.shape[0], img.shape[1]).copy()
                if keep is not None and model_repaint is not None:
                    full[keep[k]] = img[keep[k]]  # kept pixels exactly as they came in
                    kept_blocks = _resize_any(~model_repaint[k], *img.shape)
                    not_generated[k] = kept_blocks & ~keep[k]
                else:
                    not_generated[k] = np.zeros(img.shape, dtype=bool)
                new.append(full)
            current = new
        for k, ng in enumerate(not_generated):
            stats[k]["not_generated_share"] = float(ng.mean())
        return [
            (img, {key: round(v, 4) for key, v in st.items()})
            for img, st in zip(current, stats, strict=True)
        ]


def _level_change_db(job: _Job) -> float:
    """How far a job's level was raised over its noise window's, in dB (0 when not)."""
    return round(20.0 * math.log10(job.level / float(job.window.max_value)), 3)


def _free_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _checked_windows(
    windows: Iterable[NoiseWindow], settings: GenerationSettings, carry: bool
) -> Iterator[NoiseWindow]:
    """``windows``, each checked (:func:`_check_windows`) as it is handed on."""
    for w in windows:
        _check_windows((w,), settings, carry)
        yield w


def _check_windows(
    windows: Iterable[NoiseWindow], settings: GenerationSettings, carry: bool
) -> None:
    for w in windows:
        image = np.asarray(w.image)
        if image.ndim != 2 or image.dtype != np.uint8:
            raise ParameterError(
                f"window {w.index}: image must be uint8 (rows, columns), got "
                f"{image.dtype} {image.shape}"
            )
        for label, mask in (("mask", w.mask), ("mask_enlarged", w.mask_enlarged)):
            m = np.asarray(mask)
            if m.shape != image.shape or m.dtype != bool:
                raise ParameterError(
                    f"window {w.index}: {label} must be bool {image.shape}, got {m.dtype} {m.shape}"
                )
        if carry and not 0 <= settings.overlap_frames < image.shape[1]:
            raise ParameterError(
                f"overlap_frames must be 0..{image.shape[1] - 1} columns, got "
                f"{settings.overlap_frames}"
            )
