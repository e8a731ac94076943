"""The generator interface (Stage 1): what a generator is given and what it returns.

A generator turns noise windows into music windows. Windows are on the analysis grid:
mono, 44,100 Hz, Riffusion's 512 x 512 image format (see :mod:`bnmusic_bridge.spectrogram`).
Images and masks are in *picture orientation*: row 0 is the highest mel band (10 kHz),
row 511 the lowest; column ``j`` is the STFT frame centred on sample
``window.start_sample + j * 441``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..analysis import StemAnalysis
from ..errors import ParameterError
from ..request import RenderRequest

ProgressFn = Callable[[str, float], None]
"""``progress(stage, fraction)``; fraction in 0..1. It may raise
:class:`bnmusic_bridge.errors.CancelledError` to stop the work."""


@dataclass(frozen=True)
class NoiseWindow:
    """One Riffusion-image window of the noise stem.

    Attributes:
        index: 0-based window number.
        start_sample: first sample of the window in the analysis-rate stem (44.1 kHz).
        num_samples: window length in samples; 511 * 441 = 225,351 (512 frames, 5.11 s).
        valid_samples: how many of those samples are real stem (the rest is zero padding
            after the stem's end).
        audio: mono float32 noise, shape ``(num_samples,)``, linear amplitude (1.0 = 0 dBFS).
        image: uint8 ``(512, 512)`` Riffusion image of the noise (loud = dark).
        max_value: mel magnitude that maps to pixel 0 of ``image`` (linear magnitude).
        mask: bool ``(512, 512)``, True on the high-energy core M (kept while
            outpainting).
        mask_enlarged: bool ``(512, 512)``, M grown for the inpainting step (repainted).
    """

    index: int
    start_sample: int
    num_samples: int
    valid_samples: int
    audio: np.ndarray
    image: np.ndarray
    max_value: float
    mask: np.ndarray
    mask_enlarged: np.ndarray


@dataclass(frozen=True)
class GenerationSettings:
    """What every generator is told besides the windows (the request's fields of the
    same names; :meth:`from_request` builds it).

    Attributes:
        prompt: text prompt (style, instruments).
        negative_prompt: what to avoid ("" for nothing).
        seed: integer seed; the same seed and input give the same music.
        overlap_frames: for window ``k > 0`` the first ``overlap_frames`` columns
            overlap window ``k - 1``'s last ``overlap_frames`` columns; a generator that
            continues windows keeps the previous window's tail there.
        params: generator-specific parameters (steps, guidance, strengths, ...).
        music: path of the producer's own track (the ``track`` generator), or None.
    """

    prompt: str
    negative_prompt: str
    seed: int
    overlap_frames: int
    params: Mapping[str, Any]
    music: str | None = None

    @classmethod
    def from_request(cls, req: RenderRequest) -> GenerationSettings:
        """The settings ``req`` gives its generator (``params`` = ``generator_params``)."""
        return cls(
            prompt=req.prompt,
            negative_prompt=req.negative_prompt,
            seed=req.seed,
            overlap_frames=req.overlap_frames,
            params=dict(req.generator_params),
            music=req.music,
        )


@dataclass
class WindowMusic:
    """Music for one window: audio, an image to decode, or both.

    Attributes:
        audio: float32 ``(channels, num_samples)`` at 44,100 Hz with 1 or 2 channels,
            linear amplitude, or None when only ``image`` is given (the pipeline decodes
            it). Its absolute level does not matter: the pipeline loudness-matches the
            stitched music to the noise before Stage 2.
        image: uint8 ``(512, 512)`` Riffusion image of the music, or None.
        diagnostics: anything worth reporting (timings, chosen tempo, key, ...),
            JSON-serialisable.
        max_value: linear mel magnitude that pixel 0 of ``image`` stands for, or None
            for the noise window's ``max_value``. A generator that re-expresses a window
            at another level (the riffusion generator does, so that columns carried over
            from the previous window decode at the level they were made at) says so
            here, and the pipeline decodes ``image`` with it.
    """

    audio: np.ndarray | None = None
    image: np.ndarray | None = None
    diagnostics: dict[str, Any] = field(default_factory=dict)
    max_value: float | None = None


@runtime_checkable
class Generator(Protocol):
    """Stage 1: noise windows in, music windows out (same count, same order)."""

    name: str

    def generate(
        self,
        windows: Sequence[NoiseWindow],
        analysis: StemAnalysis,
        settings: GenerationSettings,
        progress: ProgressFn | None = None,
    ) -> list[WindowMusic]: ...


@runtime_checkable
class StreamingGenerator(Generator, Protocol):
    """A generator that can also hand its music out one window at a time.

    ``stream`` yields the same :class:`WindowMusic` as ``generate`` returns, in order,
    with the same diagnostics and the same ``progress`` calls, but makes each window
    only when the caller asks for it: the caller can decode, join and drop a window
    before the next one is made, so a long stem's music windows are never all held at
    once. ``windows`` may be a lazy Sequence (items built on demand); a streaming
    generator iterates it once. Errors about a window are raised when that window is
    reached (after the earlier windows were yielded).
    """

    def stream(
        self,
        windows: Sequence[NoiseWindow],
        analysis: StemAnalysis,
        settings: GenerationSettings,
        progress: ProgressFn | None = None,
    ) -> Iterator[WindowMusic]: ...


def iter_music(
    generator: Generator,
    windows: Sequence[NoiseWindow],
    analysis: StemAnalysis,
    settings: GenerationSettings,
    progress: ProgressFn | None = None,
) -> Iterator[WindowMusic]:
    """The generator's music windows, in order: from its ``stream`` method when it has
    one (one window at a time), else from ``generate`` (all windows made first)."""
    stream = getattr(generator, "stream", None)
    if callable(stream):
        return iter(stream(windows, analysis, settings, progress))
    return iter(generator.generate(windows, analysis, settings, progress))


GeneratorFactory = Callable[..., Generator]
"""Builds a generator from keyword options (``model``, ``device``, ...)."""


def check_param_names(generator: str, params: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Refuse ``settings.params`` keys a generator does not take, naming all of them.

    Raises:
        ParameterError: an unknown key (every one named, with the allowed keys).
    """
    allowed = list(allowed)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ParameterError(
            f"unknown parameter(s) {', '.join(map(repr, unknown))} for generator "
            f"{generator!r}; allowed: {', '.join(allowed)}"
        )


class OneFileCache:
    """The audio of the last file a generator read, kept while the file is unchanged
    (same resolved path, modification time and size): a batch or server rendering many
    stems against one music file decodes it once. One file at a time bounds memory."""

    def __init__(self) -> None:
        self._key: tuple[str, int, int] | None = None
        self._audio: np.ndarray | None = None
        self._lock = threading.Lock()

    def get(self, path: Path, load: Callable[[Path], np.ndarray]) -> np.ndarray:
        """``load(path)``, or the audio it gave last time for the same unchanged file."""
        try:
            st = path.stat()
        except OSError:
            return load(path)  # the loader raises, naming the file
        key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
        with self._lock:
            if key != self._key or self._audio is None:
                self._audio = None  # the old file's audio goes before the new one loads
                self._audio = load(path)
                self._key = key
            return self._audio
