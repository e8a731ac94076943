"""Eval inputs: finding and categorising noise clips, prompts, and loading a clip at the
paper's loudness.

Audio arrays are float ``(channels, samples)``, linear amplitude; the analysis signal is
mono float32 ``(samples,)`` at :data:`bnmusic_bridge.grid.SAMPLE_RATE_HZ`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio import analysis_length, audio_files_in, read_stem, resample
from ..errors import AudioInputError, ParameterError
from ..grid import AUDIO_EXTENSIONS, SAMPLE_RATE_HZ
from ..loudness import SILENCE_LUFS, integrated_lufs
from ..request import expand_path
from ..result import WholeStemArray

TARGET_LUFS = -18.0
"""Every noise clip is normalised to this integrated loudness first (the paper's setting)."""
CATEGORY_MODES = ("auto", "folder", "prefix", "none")
"""How :func:`discover_noises` gives clips a category (``--categories``)."""
UNCATEGORISED = "other"
"""Category of a file whose name has no ``_``-separated prefix (``--categories prefix``)."""


@dataclass(frozen=True)
class NoiseClip:
    """One noise input: its file, a unique short name and its category."""

    path: Path
    name: str
    category: str


@dataclass(frozen=True)
class LoadedClip:
    """A noise clip read from disk and normalised to the eval's loudness.

    Attributes:
        noise: the normalised audio, float32 ``(channels, samples)``.
        sample_rate_hz: its sample rate, Hz.
        num_samples: its length, samples.
        original_lufs: its integrated loudness before normalisation, LUFS.
        gain_db: the normalisation gain applied, dB.
    """

    noise: np.ndarray
    sample_rate_hz: int
    num_samples: int
    original_lufs: float
    gain_db: float

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate_hz

    @property
    def peak_dbfs(self) -> float:
        """Peak sample of the normalised audio, dBFS (``-inf`` for silence)."""
        peak = float(np.max(np.abs(self.noise)))
        return 20.0 * math.log10(peak) if peak > 0 else -math.inf



def prefix_category(path: Path) -> str:
    """The file-name prefix before the first ``_`` (lower case), or :data:`UNCATEGORISED`."""
    stem = path.stem
    return stem.split("_", 1)[0].lower() if "_" in stem else UNCATEGORISED


def _category(path: Path, subfolder: str | None, mode: str) -> str:
    if mode == "none":
        return "all"
    if mode == "prefix":
        return prefix_category(path)
    if mode == "folder":
        return subfolder or UNCATEGORISED
    return subfolder or prefix_category(path)


def _input_files(item: str | os.PathLike[str]) -> list[tuple[Path, str | None]]:
    """``(file, first-level subfolder or None)`` for one input (a file or a folder)."""
    p = expand_path(item)
    if p.is_file():
        return [(p, None)]
    if not p.is_dir():
        raise AudioInputError(f"{item}: no such file or folder")
    files = audio_files_in(p)
    if not files:
        raise AudioInputError(f"{p}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this folder")
    return [
        (f, f.relative_to(p).parts[0] if len(f.relative_to(p).parts) > 1 else None) for f in files
    ]


def discover_noises(
    inputs: Sequence[str | os.PathLike[str]], categories: str = "auto"
) -> list[NoiseClip]:
    """Noise clips named by ``inputs`` (files or folders, folders searched recursively).

    Categories (``categories``):

    * ``auto``: a file inside a subfolder of an input folder takes that subfolder's name
      (first level); any other file takes its file-name prefix (``esc10_rain_x.wav`` ->
      ``esc10``; a name without ``_`` -> ``other``).
    * ``folder``: the first-level subfolder, or ``other`` for files outside one.
    * ``prefix``: the file-name prefix only.
    * ``none``: one category, ``all``.

    A file named twice is taken once; clips whose file stems clash are named
    ``category__stem``.

    Raises:
        ParameterError: an unknown mode.
        AudioInputError: an input that does not exist, a folder without audio files, or
            no clip at all.
    """
    if categories not in CATEGORY_MODES:
        raise ParameterError(f"categories={categories!r}; use one of {', '.join(CATEGORY_MODES)}")
    found: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for item in inputs:
        for f, sub in _input_files(item):
            r = f.resolve()
            if r in seen:
                continue
            seen.add(r)
            found.append((f, _category(f, sub, categories)))
    if not found:
        raise AudioInputError("no noise clips given")
    names = [f.stem for f, _ in found]
    clash = {n for n in names if names.count(n) > 1}
    return [
        NoiseClip(f, f"{cat}__{f.stem}" if f.stem in clash else f.stem, cat) for f, cat in found
    ]


def read_prompts(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Prompts from a text file, one per line; blank lines and ``#`` comments are skipped.

    Raises:
        ParameterError: the file is missing, unreadable or holds no prompt.
    """
    p = expand_path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ParameterError(f"--prompts {p}: cannot read it: {e}") from e
    prompts = tuple(s.strip() for s in lines if s.strip() and not s.strip().startswith("#"))
    if not prompts:
        raise ParameterError(f"--prompts {p}: no prompt in the file (one per line)")
    return prompts


def normalise_loudness(
    audio: WholeStemArray, sample_rate_hz: int, target_lufs: float = TARGET_LUFS
) -> tuple[np.ndarray, float, float]:
    """Scale ``(channels, samples)`` audio to ``target_lufs`` integrated loudness.

    Returns:
        ``(scaled float32 audio, loudness before in LUFS, gain applied in dB)``.

    Raises:
        AudioInputError: the audio is too quiet for BS.1770's gates (silence).
    """
    before = integrated_lufs(audio, sample_rate_hz)
    if before <= SILENCE_LUFS:
        raise AudioInputError("the noise is silent (no loudness to normalise)")
    gain_db = float(target_lufs - before)
    return (
        (np.asarray(audio, dtype=np.float32) * np.float32(10.0 ** (gain_db / 20.0))),
        before,
        gain_db,
    )


def load_clip(clip: NoiseClip, target_lufs: float = TARGET_LUFS) -> LoadedClip:
    """Read ``clip`` and normalise it to ``target_lufs`` (:func:`normalise_loudness`).

    Raises:
        AudioInputError: the file cannot be read, or is silent.
    """
    stem = read_stem(clip.path)
    noise, before, gain_db = normalise_loudness(stem.audio, stem.sample_rate_hz, target_lufs)
    return LoadedClip(noise, stem.sample_rate_hz, stem.num_samples, before, gain_db)


def analysis_mono(audio: WholeStemArray, sample_rate_hz: int) -> np.ndarray:
    """``(channels, samples)`` or ``(samples,)`` audio as the pipeline's analysis signal:
    the channel mean, resampled to :data:`~bnmusic_bridge.grid.SAMPLE_RATE_HZ` (float32
    ``(samples,)``)."""
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim == 1:
        a = a[None, :]
    mono = a.mean(axis=0, keepdims=True)
    if sample_rate_hz == SAMPLE_RATE_HZ:
        return mono[0]
    n = analysis_length(a.shape[1], sample_rate_hz)
    return resample(mono, sample_rate_hz, SAMPLE_RATE_HZ, n)[0]
