"""Choosing the torch device and floating-point type for model-owning generators.

``auto`` follows the safe-defaults rule: the GPU only when one is present, and the
report says what was picked and why. Torch is imported inside the functions so that
importing this module stays cheap (fast ``bnmusic --help``, fast server start).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import ParameterError
from .request import DEVICES, DTYPES

DEVICE_NAMES = (*DEVICES, "cuda:N")
"""Accepted ``device`` strings: a request's :data:`~bnmusic_bridge.request.DEVICES`, and
``cuda:N`` naming one GPU by index (library use)."""

DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}
"""Short ``dtype`` names accepted besides a request's
:data:`~bnmusic_bridge.request.DTYPES`, and the name each one means."""

_CUDA_INDEX_RE = re.compile(r"^cuda:\d+$")


@dataclass(frozen=True)
class DeviceChoice:
    """The device and dtype a model runs on.

    Attributes:
        device: torch device string ("cpu", "cuda", "cuda:1", "mps").
        dtype: torch dtype name ("float32", "float16", "bfloat16").
        reason: one sentence on why (what was asked, what was found).
    """

    device: str
    dtype: str
    reason: str

    def torch_dtype(self) -> Any:
        """The ``torch.dtype`` object for :attr:`dtype`."""
        import torch

        return getattr(torch, self.dtype)

    def as_dict(self) -> dict[str, str]:
        """JSON-serialisable form for diagnostics."""
        return {"device": self.device, "dtype": self.dtype, "reason": self.reason}


def check_device_name(device: str) -> str:
    """Validate a device string without importing torch; return it lower-cased.

    Raises:
        ParameterError: ``device`` is not one of :data:`DEVICE_NAMES`.
    """
    name = str(device).strip().lower()
    if name not in DEVICES and not _CUDA_INDEX_RE.match(name):
        raise ParameterError(f"unknown device {device!r}; use one of: {', '.join(DEVICE_NAMES)}")
    return name


def check_dtype_name(dtype: str) -> str:
    """Validate a dtype string without importing torch; return the canonical name.

    Returns a name of :data:`~bnmusic_bridge.request.DTYPES`.

    Raises:
        ParameterError: ``dtype`` is neither in :data:`~bnmusic_bridge.request.DTYPES`
            nor in :data:`DTYPE_ALIASES`.
    """
    name = str(dtype).strip().lower()
    name = DTYPE_ALIASES.get(name, name)
    if name not in DTYPES:
        raise ParameterError(
            f"unknown dtype {dtype!r}; use one of: {', '.join(sorted((*DTYPES, *DTYPE_ALIASES)))}"
        )
    return name


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def select_device(device: str, dtype: str) -> DeviceChoice:
    """Resolve ``device`` and ``dtype`` strings to what this machine will run.

    ``auto`` device: CUDA when available, else Apple MPS, else CPU. ``auto`` dtype:
    float16 on CUDA and MPS, float32 on CPU (half precision on CPU is slow and poorly
    supported). An explicit value always wins, but a device that is not present, or
    bfloat16 on a GPU without bfloat16 support, is an error rather than a silent
    fallback.

    Raises:
        ParameterError: unknown names, or an explicit device/dtype this machine lacks.
    """
    import torch

    dev = check_device_name(device)
    dt = check_dtype_name(dtype)
    notes: list[str] = []

    if dev == "auto":
        if torch.cuda.is_available():
            dev = "cuda"
            notes.append(f"auto device: CUDA found ({torch.cuda.get_device_name(0)})")
        elif _mps_available():
            dev = "mps"
            notes.append("auto device: Apple MPS found")
        else:
            dev = "cpu"
            notes.append("auto device: no CUDA or MPS, using CPU")
    elif dev.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ParameterError(
                f"device {device!r} asked but CUDA is not available on this machine "
                f"(torch {torch.__version__}); use --device cpu or auto"
            )
        index = int(dev.split(":")[1]) if ":" in dev else 0
        if index >= torch.cuda.device_count():
            raise ParameterError(
                f"device {device!r} asked but only {torch.cuda.device_count()} CUDA "
                "device(s) are present"
            )
        notes.append(f"device {dev} asked")
    elif dev == "mps":
        if not _mps_available():
            raise ParameterError(
                "device 'mps' asked but Apple MPS is not available; use --device cpu or auto"
            )
        notes.append("device mps asked")
    else:
        notes.append("device cpu asked")

    if dt == "auto":
        dt = "float32" if dev == "cpu" else "float16"
        notes.append(f"auto dtype: {dt} on {dev.split(':')[0]}")
    else:
        if dt == "bfloat16" and dev.startswith("cuda") and not torch.cuda.is_bf16_supported():
            raise ParameterError(
                f"dtype 'bf16' asked but the GPU on {dev} does not support bfloat16; "
                "use fp16 or fp32"
            )
        notes.append(f"dtype {dt} asked")
    return DeviceChoice(device=dev, dtype=dt, reason="; ".join(notes))
