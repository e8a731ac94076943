"""The BNMusic paper's baselines and ablation, as generators.

- ``noise-only``: silent music (Table 1's "noise only" row: the noise heard alone).
- ``random-music``: an unrelated music file, chosen by seed from a folder, laid on the
  stem's timeline (looped or trimmed); Table 1's "random music".
- ``riffusion-a2a``: Riffusion audio-to-audio, i.e. plain image-to-image of the noise
  image (Riffusion's defaults: strength 0.55, 25 steps, guidance 7).
- ``outpaint-only``: the ablation that stops after BNMusic's outpainting step.

The last two are :class:`~bnmusic_bridge.generators.riffusion.RiffusionGenerator` with
another diffusion plan (same constructor), and so share its loaded weights within a
process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis import StemAnalysis
from ..errors import AudioInputError, ParameterError
from ..grid import AUDIO_EXTENSIONS, SAMPLE_RATE_HZ
from .base import (
    GenerationSettings,
    NoiseWindow,
    OneFileCache,
    ProgressFn,
    WindowMusic,
    check_param_names,
)
from .riffusion import (
    DiffusionPlan,
    DiffusionStep,
    ParamSpec,
    RiffusionGenerator,
    check_resolution,
    check_step,
    parse_generator_params,
)

# ---------------------------------------------------------------------------------------
# noise-only


class NoiseOnlyGenerator:
    """Silent music: every window is zeros, shape ``(2, window.num_samples)``, 44.1 kHz.

    Takes no ``settings.params``. The noise is then heard alone, as in the paper's
    "noise only" row; a loudness match of silence is the pipeline's to handle.
    """

    name = "noise-only"

    def generate(
        self,
        windows: Sequence[NoiseWindow],
        analysis: StemAnalysis,
        settings: GenerationSettings,
        progress: ProgressFn | None = None,
    ) -> list[WindowMusic]:
        parse_generator_params(settings.params, {}, self.name)
        out = [
            WindowMusic(
                audio=np.zeros((2, w.num_samples), dtype=np.float32),
                image=None,
                diagnostics={"generator": self.name, "silent": True},
            )
            for w in windows
        ]
        if progress is not None:
            progress("generate", 1.0)
        return out


# ---------------------------------------------------------------------------------------
# random-music


def list_music_files(music_dir: str | os.PathLike[str]) -> list[Path]:
    """Audio files directly in ``music_dir`` (see :data:`AUDIO_EXTENSIONS`), sorted by name.

    Raises:
        AudioInputError: the folder is missing, not a folder, or holds no audio file.
    """
    folder = Path(music_dir).expanduser()
    if not folder.exists():
        raise AudioInputError(f"random-music: music_dir {str(folder)!r} does not exist")
    if not folder.is_dir():
        raise AudioInputError(f"random-music: music_dir {str(folder)!r} is not a folder")
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
    )
    if not files:
        raise AudioInputError(
            f"random-music: no audio file ({', '.join(AUDIO_EXTENSIONS)}) in {str(folder)!r}"
        )
    return files


def pick_music_file(files: Sequence[Path], seed: int) -> Path:
    """The file a render with ``seed`` uses: a seeded choice, stable for a given file list."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & (2**64 - 1), 0x6D75]))
    return files[int(rng.integers(len(files)))]


def load_music_stereo(path: Path) -> np.ndarray:
    """Read ``path`` as float32 ``(2, samples)`` at 44.1 kHz, linear amplitude.

    Resampled with pedalboard when the file's rate differs; mono is copied to both
    channels; files with more than two channels keep their first two.

    Raises:
        AudioInputError: unreadable, empty, or holding NaN/inf.
    """
    from pedalboard.io import AudioFile

    try:
        with AudioFile(str(path)) as f:
            rate = f.samplerate
        reader: Any = AudioFile(str(path))
        if rate != SAMPLE_RATE_HZ:
            reader = reader.resampled_to(SAMPLE_RATE_HZ)
        with reader as f:
            audio = np.asarray(f.read(f.frames), dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - pedalboard raises several kinds
        raise AudioInputError(f"random-music: cannot read {str(path)!r}: {exc}") from exc
    if audio.ndim != 2 or audio.shape[1] == 0:
        raise AudioInputError(f"random-music: {str(path)!r} holds no samples")
    if not np.all(np.isfinite(audio)):
        raise AudioInputError(f"random-music: {str(path)!r} holds NaN or inf samples")
    if audio.shape[0] == 1:
        audio = np.repeat(audio, 2, axis=0)
    return np.ascontiguousarray(audio[:2])


class RandomMusicGenerator:
    """Unrelated music laid on the stem's timeline: the paper's "random music" baseline.

    One file per render, chosen from ``music_dir`` by ``settings.seed``; window ``k``
    gets the file's samples at the window's global position (``start_sample`` onward),
    looping the file when the stem is longer and trimming it when shorter.

    Args:
        music_dir: folder of audio files; ``settings.params["music_dir"]`` overrides it.

    ``settings.params``: ``music_dir`` (str) only.

    Returns per window: ``audio`` float32 ``(2, window.num_samples)`` at 44.1 kHz.
    """

    name = "random-music"

    def __init__(self, music_dir: str | os.PathLike[str] | None = None) -> None:
        self.music_dir = None if music_dir is None else str(music_dir)
        self._music = OneFileCache()

    def generate(
        self,
        windows: Sequence[NoiseWindow],
        analysis: StemAnalysis,
        settings: GenerationSettings,
        progress: ProgressFn | None = None,
    ) -> list[WindowMusic]:
        check_param_names(self.name, settings.params, ("music_dir",))
        music_dir = settings.params.get("music_dir", self.music_dir)
        if music_dir is None or str(music_dir) == "":
            raise ParameterError(
                "random-music needs a folder of audio files: --param music_dir=DIR on the "
                "command line, music_dir in the preset's [generator.params], or "
                "bnmusic eval --music-dir DIR"
            )
        if not windows:
            return []
        path = pick_music_file(list_music_files(str(music_dir)), settings.seed)
        audio = self._music.get(path, load_music_stereo)
        length = audio.shape[1]
        out = []
        for w in windows:
            idx = (w.start_sample + np.arange(w.num_samples)) % length
            out.append(
                WindowMusic(
                    audio=audio[:, idx],
                    image=None,
                    diagnostics={
                        "generator": self.name,
                        "music_file": path.name,
                        "music_samples": int(length),
                        "music_seconds": round(length / SAMPLE_RATE_HZ, 3),
                        "looped": bool(w.start_sample + w.num_samples > length),
                    },
                )
            )
        if progress is not None:
            progress("generate", 1.0)
        return out


# ---------------------------------------------------------------------------------------
# Riffusion-based baselines

A2A_PARAMS: ParamSpec = {
    "steps": (int, 25),
    "strength": (float, 0.55),
    "guidance": (float, 7.0),
    "resolution": (int, 512),
}
"""``settings.params`` of ``riffusion-a2a`` (Riffusion's audio-to-audio defaults)."""

OUTPAINT_ONLY_PARAMS: ParamSpec = {
    "outpaint_steps": (int, 25),
    "outpaint_strength": (float, 1.0),
    "outpaint_guidance": (float, 7.0),
    "resolution": (int, 512),
    "continuation": (bool, True),
}
"""``settings.params`` of ``outpaint-only`` (the same meaning as for ``riffusion``)."""


def a2a_plan(params: Mapping[str, Any], generator: str = "riffusion-a2a") -> DiffusionPlan:
    """Parse ``riffusion-a2a`` params into a one-call image-to-image plan (no continuation)."""
    p = parse_generator_params(params, A2A_PARAMS, generator)
    step = DiffusionStep("img2img", p["steps"], p["strength"], p["guidance"])
    return DiffusionPlan(
        steps=(check_step(step, "", generator),),
        resolution=check_resolution(p["resolution"], generator),
        continuation=False,
    )


def outpaint_only_plan(
    params: Mapping[str, Any], generator: str = "outpaint-only"
) -> DiffusionPlan:
    """Parse ``outpaint-only`` params into a one-call outpainting plan."""
    p = parse_generator_params(params, OUTPAINT_ONLY_PARAMS, generator)
    step = DiffusionStep(
        "outpaint", p["outpaint_steps"], p["outpaint_strength"], p["outpaint_guidance"]
    )
    return DiffusionPlan(
        steps=(check_step(step, "outpaint_", generator),),
        resolution=check_resolution(p["resolution"], generator),
        continuation=p["continuation"],
    )


class RiffusionA2AGenerator(RiffusionGenerator):
    """Riffusion audio-to-audio: image-to-image of the noise image, nothing kept.

    Same constructor as :class:`RiffusionGenerator`. ``settings.params``: ``steps`` (25),
    ``strength`` (0.55), ``guidance`` (7.0), ``resolution`` (512). Windows are
    independent and batched. Returns ``image`` uint8 per window, ``audio=None``.
    """

    name = "riffusion-a2a"

    def generate(
        self,
        windows: Sequence[NoiseWindow],
        analysis: StemAnalysis,
        settings: GenerationSettings,
        progress: ProgressFn | None = None,
    ) -> list[WindowMusic]:
        return self.render(windows, settings, a2a_plan(settings.params, self.name), progress)


class OutpaintOnlyGenerator(RiffusionGenerator):
    """The ablation "outpainting only": BNMusic's step (a) without the inpainting step.

    Same constructor as :class:`RiffusionGenerator`. ``settings.params``:
    ``outpaint_steps``, ``outpaint_strength``, ``outpaint_guidance``, ``resolution``,
    ``continuation`` (as for ``riffusion``). Returns ``image`` uint8, ``audio=None``.

    The outpainting keeps the latent blocks at least half core, as in the full method,
    so besides the core itself the non-core pixels of those blocks stay the VAE's
    reconstruction of the noise (the full method repaints them in its inpainting step):
    a median 2.9 % of the image on the ten recordings in ``../shared/data/noise``,
    reported per window as ``not_generated_share``.
    """

    name = "outpaint-only"

    def generate(
        self,
        windows: Sequence[NoiseWindow],
        analysis: StemAnalysis,
        settings: GenerationSettings,
        progress: ProgressFn | None = None,
    ) -> list[WindowMusic]:
        plan = outpaint_only_plan(settings.params, self.name)
        return self.render(windows, settings, plan, progress)
