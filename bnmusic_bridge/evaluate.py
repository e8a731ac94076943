"""``bnmusic eval``: measure how well each method blends noise, the way the paper does and
beyond it.

For every noise clip and every method (the full method and the paper's baselines and
ablation, as generators), the clip is normalised to -18 LUFS (ITU-R BS.1770-4 through
:func:`bnmusic_bridge.loudness.integrated_lufs`, as the paper does), rendered through
:func:`bnmusic_bridge.pipeline.render`, and measured in two scenarios:

* ``normalised`` ("loudness normalised", the paper's Table 1 setting): the music at unity
  gain, i.e. matched to the noise's integrated loudness;
* ``direct``: the music with the lambda lane the pipeline chose (``music_gained``).

Per clip, method and scenario: masking coverage of the high-energy mask, NMR, the music's
loudness as played, the loudness (LUFS, and LU over the noise) the music would need to
mask 90 % of the high-energy bins under each threshold model (lower is better), the
paper's scalar lambda, spectral and rhythmic alignment (:mod:`bnmusic_bridge.alignment`),
and FAD / KL of the noise + music mixtures against reference music when an audio
embedding model is available on this machine (otherwise the report says why not).

The report (Markdown, CSV, JSON, PNG) follows the layout of the paper's Table 1 (methods
as rows, per scenario) and its ablation table, overall and per noise category.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as _dt
import importlib.util
import io
import json
import math
import os
import platform
import shlex
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .errors import (
    AudioInputError,
    BNMusicError,
    ModelNotFoundError,
    OutputExistsError,
    ParameterError,
)
from .grid import AUDIO_EXTENSIONS

# --------------------------------------------------------------------------------------
# Methods, scenarios, constants

TARGET_LUFS = -18.0
"""Every noise clip is normalised to this integrated loudness first (the paper's setting)."""
TARGET_COVERAGE = 0.9
"""Share of high-energy bins the "loudness for coverage" metric asks the music to mask."""
THRESHOLD_MODELS = ("smr", "spreading")
"""Threshold models the loudness-for-coverage metric is reported under (paper; ours)."""
SCENARIOS = ("normalised", "direct")
"""``normalised``: music at unity (loudness-matched to the noise); ``direct``: music with
the lambda lane the pipeline chose."""
SCENARIO_LABELS = {"normalised": "loudness normalised", "direct": "direct (lambda applied)"}
CATEGORY_MODES = ("auto", "folder", "prefix", "none")
UNCATEGORISED = "other"
"""Category of a file whose name has no ``_``-separated prefix (``--categories prefix``)."""
DEFAULT_METHODS = ("bnmusic", "noise-only", "random-music", "riffusion-a2a", "outpaint-only")
REFERENCE_SEGMENT_S = 5.0
"""Reference music files are cut into segments this long (the paper's clip length), s."""
KNOWN_EMBEDDING_MODELS = (
    "MIT/ast-finetuned-audioset-10-10-0.4593",
    "MIT/ast-finetuned-audioset-16-16-0.442",
    "MIT/ast-finetuned-audioset-14-14-0.443",
)
"""Hugging Face audio classifiers looked for in the local cache (never downloaded)."""
EMBEDDING_PACKAGES = (
    "frechet_audio_distance",
    "torchvggish",
    "panns_inference",
    "hear21passt",
    "laion_clap",
    "openl3",
)
"""Packages of the usual FAD/KL embedders; reported when present (no adapter for them yet)."""
ENV_EMBEDDING_MODEL = "BNMUSIC_EMBEDDING_MODEL"
"""Environment variable naming a local embedding model folder (as ``--embedding-model``)."""


@dataclass(frozen=True)
class MethodSpec:
    """One row of Table 1.

    Attributes:
        name: the method's name on the command line.
        label: its name in the report.
        generator: the registered generator it renders with; None = the request's own
            (the preset's or ``--generator``), which is the full method.
    """

    name: str
    label: str
    generator: str | None


METHODS: dict[str, MethodSpec] = {
    "bnmusic": MethodSpec("bnmusic", "BNMusic (full)", None),
    "noise-only": MethodSpec("noise-only", "noise only", "noise-only"),
    "random-music": MethodSpec("random-music", "random music", "random-music"),
    "riffusion-a2a": MethodSpec("riffusion-a2a", "Riffusion audio-to-audio", "riffusion-a2a"),
    "outpaint-only": MethodSpec("outpaint-only", "outpainting only", "outpaint-only"),
}
"""Named methods; any other registered generator name is accepted as a method too."""


def method_spec(name: str) -> MethodSpec:
    """The :class:`MethodSpec` of ``name`` (a named method or any registered generator)."""
    if name in METHODS:
        return METHODS[name]
    from .generators import available_generators

    if name in available_generators():
        return MethodSpec(name, name, name)
    raise ParameterError(
        f"unknown method {name!r}; use one of {', '.join(METHODS)} or a generator name "
        f"({', '.join(sorted(available_generators()))})"
    )


# --------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class NoiseClip:
    """One noise input: its file, a unique short name and its category."""

    path: Path
    name: str
    category: str


def _prefix_category(path: Path) -> str:
    stem = path.stem
    return stem.split("_", 1)[0].lower() if "_" in stem else UNCATEGORISED


def _audio_files(folder: Path) -> list[Path]:
    return sorted(
        f
        for f in folder.rglob("*")
        if f.is_file()
        and f.suffix.lower() in AUDIO_EXTENSIONS
        and not any(part.startswith(".") for part in f.relative_to(folder).parts)
    )


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
        p = Path(item).expanduser()
        pairs: list[tuple[Path, str | None]]
        if p.is_file():
            pairs = [(p, None)]
        elif p.is_dir():
            files = _audio_files(p)
            if not files:
                raise AudioInputError(
                    f"{p}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this folder"
                )
            pairs = [
                (f, f.relative_to(p).parts[0] if len(f.relative_to(p).parts) > 1 else None)
                for f in files
            ]
        else:
            raise AudioInputError(f"{item}: no such file or folder")
        for f, sub in pairs:
            r = f.resolve()
            if r in seen:
                continue
            seen.add(r)
            if categories == "none":
                cat = "all"
            elif categories == "prefix":
                cat = _prefix_category(f)
            elif categories == "folder":
                cat = sub or UNCATEGORISED
            else:
                cat = sub or _prefix_category(f)
            found.append((f, cat))
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
    p = Path(path).expanduser()
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ParameterError(f"--prompts {p}: cannot read it: {e}") from e
    prompts = tuple(s.strip() for s in lines if s.strip() and not s.strip().startswith("#"))
    if not prompts:
        raise ParameterError(f"--prompts {p}: no prompt in the file (one per line)")
    return prompts


def normalise_loudness(
    audio: np.ndarray, sample_rate_hz: int, target_lufs: float = TARGET_LUFS
) -> tuple[np.ndarray, float, float]:
    """Scale ``(channels, samples)`` audio to ``target_lufs`` integrated loudness.

    Returns:
        ``(scaled float32 audio, loudness before in LUFS, gain applied in dB)``.

    Raises:
        AudioInputError: the audio is too quiet for BS.1770's gates (silence).
    """
    from .loudness import SILENCE_LUFS, integrated_lufs

    before = integrated_lufs(audio, sample_rate_hz)
    if before <= SILENCE_LUFS:
        raise AudioInputError("the noise is silent (no loudness to normalise)")
    gain_db = float(target_lufs - before)
    return (
        (np.asarray(audio, dtype=np.float32) * np.float32(10.0 ** (gain_db / 20.0))),
        before,
        gain_db,
    )


# --------------------------------------------------------------------------------------
# Configuration and per-clip measurement


@dataclass(frozen=True)
class EvalConfig:
    """What an evaluation runs.

    Attributes:
        methods: method names in table order (see :data:`METHODS`).
        request: the base request (preset + flags); each method overrides its generator.
        prompts: prompts cycled over the clips (clip ``k`` gets ``prompts[k % n]``);
            empty: the request's prompt.
        music_dir: folder of music files for ``random-music`` (None: that method is skipped).
        reference_dir: folder of reference music for FAD/KL (None: not computed).
        embedding_model: local folder or cached Hugging Face id of an audio classifier
            for FAD/KL (None: look in :data:`ENV_EMBEDDING_MODEL` and the known ids).
        target_lufs: noise normalisation target, LUFS.
        target_coverage: share (0..1) of high-energy bins for the loudness-for-coverage
            metric.
        tolerance_ms: onset tolerance of the rhythmic F-measure and the largest lag of
            the onset cross-correlation, ms.
    """

    methods: tuple[str, ...] = DEFAULT_METHODS
    request: Any = None
    prompts: tuple[str, ...] = ()
    music_dir: Path | None = None
    reference_dir: Path | None = None
    embedding_model: str | None = None
    target_lufs: float = TARGET_LUFS
    target_coverage: float = TARGET_COVERAGE
    tolerance_ms: float = 50.0

    def base_request(self) -> Any:
        from .request import RenderRequest

        return self.request if self.request is not None else RenderRequest()


@dataclass(frozen=True)
class ClipMetrics:
    """The measurements of one clip x method x scenario. dB/LUFS/LU in the names;
    shares 0..1; ``inf`` for a loudness the music can never reach (bins it cannot mask);
    NaN where a metric is undefined (e.g. alignment of silent music).

    Attributes:
        clip, category, method, scenario: what was measured.
        generator, prompt, seed: how the music was made.
        noise_lufs: the noise's loudness as the pipeline measured it (mono mix), LUFS.
        gain_db: mean gain applied to the unity music in this scenario, dB (0 for
            ``normalised``; the lane's mean for ``direct``).
        music_lufs: the music's loudness as played in this scenario, LUFS.
        music_lu: ``music_lufs - noise_lufs``, LU.
        coverage: share of high-energy bins masked (request's threshold model).
        nmr_db: PEAQ-style noise-to-mask ratio, dB (lower: better masked).
        lufs_90_smr, lu_90_smr: loudness of the music scaled to mask ``target_coverage``
            of the high-energy bins under the paper's smr model (LUFS; LU over the noise).
        lufs_90_spreading, lu_90_spreading: the same under the spreading model.
        ceiling_smr: largest reachable coverage under smr (bins the music has no energy
            in can never be masked).
        lambda_paper_db: the paper's scalar lambda (exact minimiser of its loss over the
            whole clip), dB re unity; ``-inf`` when the loss chooses silence.
        spectral_time_r, spectral_freq_r, mask_energy_share: see
            :class:`~bnmusic_bridge.alignment.SpectralAlignment`.
        onset_xcorr, onset_lag_ms, onset_precision, onset_recall, onset_f,
            noise_onsets, music_onsets: see :class:`~bnmusic_bridge.alignment.RhythmicAlignment`.
        render_s: seconds the render took.
    """

    clip: str
    category: str
    method: str
    scenario: str
    generator: str
    prompt: str
    seed: int
    noise_lufs: float
    gain_db: float
    music_lufs: float
    music_lu: float
    coverage: float
    nmr_db: float
    lufs_90_smr: float
    lu_90_smr: float
    lufs_90_spreading: float
    lu_90_spreading: float
    ceiling_smr: float
    lambda_paper_db: float
    spectral_time_r: float
    spectral_freq_r: float
    mask_energy_share: float
    onset_xcorr: float
    onset_lag_ms: float
    onset_precision: float
    onset_recall: float
    onset_f: float
    noise_onsets: int
    music_onsets: int
    render_s: float


def _mono_44k(audio: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    from .audio import analysis_length, resample
    from .grid import SAMPLE_RATE_HZ

    a = np.asarray(audio, dtype=np.float32)
    if a.ndim == 1:
        a = a[None, :]
    mono = a.mean(axis=0, keepdims=True)
    if sample_rate_hz == SAMPLE_RATE_HZ:
        return mono[0]
    n = analysis_length(a.shape[1], sample_rate_hz)
    return resample(mono, sample_rate_hz, SAMPLE_RATE_HZ, n)[0]


def loudness_for_coverage(
    field: Any, mask: np.ndarray, music: np.ndarray, sample_rate_hz: int, target_coverage: float
) -> tuple[float, float]:
    """Loudness the unity music would need to mask ``target_coverage`` of the mask's bins.

    The lowest linear gain reaching the target (:func:`~bnmusic_bridge.amplify.solve_gain_for_coverage`
    on the unity music's masking field) is applied to ``music`` and the result measured.

    Args:
        field: the :class:`~bnmusic_bridge.masking.MaskingField` of the unity music.
        mask: bool ``(n_mels, frames)`` high-energy mask.
        music: the unity music, ``(channels, samples)`` at ``sample_rate_hz``.
        target_coverage: 0..1.

    Returns:
        ``(loudness in LUFS, linear gain)``; ``(inf, inf)`` when the target is out of
        reach (too many bins where the music is silent).
    """
    from .amplify import solve_gain_for_coverage
    from .loudness import integrated_lufs

    gain = solve_gain_for_coverage(field, mask, target_coverage)
    if not math.isfinite(gain) or not np.any(music):
        return math.inf, math.inf
    return integrated_lufs(np.asarray(music, dtype=np.float64) * gain, sample_rate_hz), gain


def coverage_ceiling(field: Any, mask: np.ndarray) -> float:
    """Largest coverage (0..1) any gain reaches: share of mask bins with a finite
    required gain (1.0 for an empty mask)."""
    gains = field.required_gain()[np.asarray(mask, dtype=bool)]
    return float(np.isfinite(gains).mean()) if gains.size else 1.0


def measure_result(
    result: Any,
    noise_mono_44k: np.ndarray,
    *,
    clip: NoiseClip,
    method: str,
    target_coverage: float = TARGET_COVERAGE,
    tolerance_ms: float = 50.0,
) -> list[ClipMetrics]:
    """Measure one render in both scenarios.

    Args:
        result: the :class:`~bnmusic_bridge.request.RenderResult` of the normalised noise.
        noise_mono_44k: that noise as mono float ``(samples,)`` at 44.1 kHz (the
            pipeline's analysis signal).
        clip, method: labels of the rows.
        target_coverage: 0..1 for the loudness-for-coverage metric.
        tolerance_ms: rhythmic tolerance and largest cross-correlation lag, ms.

    Returns:
        one :class:`ClipMetrics` per scenario, in :data:`SCENARIOS` order.
    """
    from .alignment import rhythmic_alignment, spectral_alignment
    from .amplify import solve_lambda_exact
    from .loudness import integrated_lufs
    from .masking import masking_field
    from .metering import coverage, nmr_db

    req = result.request
    noise_mel = result.analysis["noise_mel"]
    music_mel = result.analysis["music_mel"]
    mask = result.analysis["mask"]
    sr = result.sample_rate_hz
    fields = {
        model: masking_field(model, noise_mel, music_mel, smr_db=req.smr_db)
        for model in THRESHOLD_MODELS
    }
    field_req = (
        fields[req.threshold_model]
        if req.threshold_model in fields
        else masking_field(req.threshold_model, noise_mel, music_mel, smr_db=req.smr_db)
    )
    lufs_90 = {
        m: loudness_for_coverage(f, mask, result.music, sr, target_coverage)[0]
        for m, f in fields.items()
    }
    silent = not np.any(music_mel)
    lam = 0.0 if silent else solve_lambda_exact(music_mel, field_req, mask, alpha=req.alpha)
    lambda_db = 20.0 * math.log10(lam) if lam > 0 else -math.inf
    frame_gain = np.power(10.0, np.asarray(result.lane_gain_db, dtype=np.float64) / 20.0)
    noise_lufs = float(result.noise_lufs)
    unity_mono = _mono_44k(result.music, sr)
    rows = []
    for scenario in SCENARIOS:
        if scenario == "normalised":
            gain: float | np.ndarray = 1.0
            gain_db = 0.0
            music_audio = result.music
            mel = music_mel
            mono = unity_mono
        else:
            gain = frame_gain
            gain_db = float(np.mean(result.lane_gain_db)) if len(result.lane_gain_db) else 0.0
            music_audio = result.music_gained
            mel = music_mel * frame_gain[None, :]
            mono = _mono_44k(result.music_gained, sr)
        cov, _ = coverage(field_req, mask, gain)
        nmr, _ = nmr_db(noise_mel, field_req, gain)
        # Silence has no loudness: -inf rather than the meter's -120 LUFS floor, so that
        # tables say "silent" instead of averaging a made-up level.
        music_lufs = integrated_lufs(music_audio, sr) if np.any(music_audio) else -math.inf
        spec = spectral_alignment(noise_mel, mel, mask)
        n = min(mono.size, noise_mono_44k.size)
        rhythm = rhythmic_alignment(
            noise_mono_44k[:n], mono[:n], max_lag_ms=tolerance_ms, tolerance_ms=tolerance_ms
        )
        rows.append(
            ClipMetrics(
                clip=clip.name,
                category=clip.category,
                method=method,
                scenario=scenario,
                generator=req.generator,
                prompt=req.prompt,
                seed=int(req.seed),
                noise_lufs=noise_lufs,
                gain_db=gain_db,
                music_lufs=float(music_lufs),
                music_lu=float(music_lufs - noise_lufs),
                coverage=float(cov),
                nmr_db=float(nmr),
                lufs_90_smr=lufs_90["smr"],
                lu_90_smr=lufs_90["smr"] - noise_lufs,
                lufs_90_spreading=lufs_90["spreading"],
                lu_90_spreading=lufs_90["spreading"] - noise_lufs,
                ceiling_smr=coverage_ceiling(fields["smr"], mask),
                lambda_paper_db=lambda_db,
                spectral_time_r=spec.time_correlation,
                spectral_freq_r=spec.frequency_correlation,
                mask_energy_share=spec.mask_energy_share,
                onset_xcorr=rhythm.envelope_correlation,
                onset_lag_ms=rhythm.envelope_lag_ms,
                onset_precision=rhythm.onset_precision,
                onset_recall=rhythm.onset_recall,
                onset_f=rhythm.onset_f_measure,
                noise_onsets=rhythm.noise_onsets,
                music_onsets=rhythm.music_onsets,
                render_s=float(result.timings_s.get("total", 0.0)),
            )
        )
    return rows


# --------------------------------------------------------------------------------------
# FAD and KL (pluggable audio embedding model)


@dataclass(frozen=True)
class Embedding:
    """What an embedding model says about one piece of audio.

    Attributes:
        vector: float64 ``(dims,)`` embedding (for FAD).
        class_probs: float64 ``(classes,)`` class distribution summing to 1 (for KL), or
            None when the model has no classifier head.
    """

    vector: np.ndarray
    class_probs: np.ndarray | None


@runtime_checkable
class AudioEmbedder(Protocol):
    """A local audio embedding model. Plug one in by implementing this and passing it to
    :func:`evaluate` (or by making :func:`find_embedding_model` find it)."""

    name: str
    sample_rate_hz: int

    def embed(self, audio: np.ndarray) -> Embedding:
        """Embed mono float ``(samples,)`` audio at ``sample_rate_hz``, linear amplitude."""
        ...


class TransformersAudioClassifier:
    """Any local Hugging Face audio-classification model (e.g. AST fine-tuned on AudioSet)
    as an :class:`AudioEmbedder`: the embedding is the last hidden layer averaged over
    tokens, the class distribution the sigmoid of the logits normalised to sum 1.

    Args:
        source: a model folder, or a Hugging Face id already in the local cache (never
            downloaded: ``local_files_only``).
    """

    def __init__(self, source: str) -> None:
        from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

        try:
            self.extractor = AutoFeatureExtractor.from_pretrained(source, local_files_only=True)
            self.model = AutoModelForAudioClassification.from_pretrained(
                source, local_files_only=True
            ).eval()
        except Exception as e:  # noqa: BLE001 - every load failure means "not available"
            raise ModelNotFoundError(
                f"embedding model {source!r} could not be loaded locally: {e}"
            ) from e
        self.name = str(source)
        self.sample_rate_hz = int(getattr(self.extractor, "sampling_rate", 16_000))

    def embed(self, audio: np.ndarray) -> Embedding:
        import torch

        inputs = self.extractor(
            np.asarray(audio, dtype=np.float32),
            sampling_rate=self.sample_rate_hz,
            return_tensors="pt",
        )
        with torch.no_grad():
            out = self.model(**inputs, output_hidden_states=True)
        vector = out.hidden_states[-1].mean(dim=1)[0].double().numpy()
        probs = torch.sigmoid(out.logits.double())[0].numpy()
        total = float(probs.sum())
        return Embedding(vector, probs / total if total > 0 else None)


def find_embedding_model(spec: str | None = None) -> tuple[AudioEmbedder | None, str]:
    """Look for a local audio embedding model for FAD/KL; never downloads anything.

    Looks at ``spec`` (a folder or cached id) if given, else at the environment
    variable :data:`ENV_EMBEDDING_MODEL`, else at :data:`KNOWN_EMBEDDING_MODELS` in the
    Hugging Face cache, and notes which :data:`EMBEDDING_PACKAGES` are installed.

    Returns:
        ``(embedder or None, a sentence saying what was looked for and found)``.
    """
    looked: list[str] = []
    candidates: list[str] = []
    if spec:
        candidates.append(spec)
        looked.append(f"--embedding-model {spec}")
    elif os.environ.get(ENV_EMBEDDING_MODEL):
        candidates.append(os.environ[ENV_EMBEDDING_MODEL])
        looked.append(f"${ENV_EMBEDDING_MODEL}={os.environ[ENV_EMBEDDING_MODEL]}")
    else:
        looked.append("the Hugging Face cache for " + ", ".join(KNOWN_EMBEDDING_MODELS))
        try:
            from huggingface_hub import try_to_load_from_cache

            for repo in KNOWN_EMBEDDING_MODELS:
                if isinstance(try_to_load_from_cache(repo, "config.json"), str):
                    candidates.append(repo)
        except ImportError:
            pass
    packages = [p for p in EMBEDDING_PACKAGES if importlib.util.find_spec(p) is not None]
    looked.append(
        "Python packages "
        + ", ".join(EMBEDDING_PACKAGES)
        + (
            f" (installed but without an adapter here: {', '.join(packages)})"
            if packages
            else " (none installed)"
        )
    )
    problems: list[str] = []
    for source in candidates:
        if not Path(source).expanduser().is_dir() and source.count("/") != 1:
            problems.append(f"{source}: no such folder")
            continue
        try:
            return TransformersAudioClassifier(
                str(Path(source).expanduser()) if Path(source).expanduser().is_dir() else source
            ), (f"using {source}")
        except ModelNotFoundError as e:
            problems.append(str(e).splitlines()[0])
    note = "looked for " + "; ".join(looked)
    if problems:
        note += "; " + "; ".join(problems)
    return None, note


def frechet_distance(
    mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray
) -> float:
    """Fréchet distance between two Gaussians ``N(mu_a, cov_a)`` and ``N(mu_b, cov_b)``:
    ``|mu_a - mu_b|^2 + tr(cov_a + cov_b - 2 (cov_a cov_b)^(1/2))`` (FAD on embeddings)."""
    from scipy import linalg

    mu_a, mu_b = np.atleast_1d(mu_a).astype(np.float64), np.atleast_1d(mu_b).astype(np.float64)
    cov_a, cov_b = np.atleast_2d(cov_a).astype(np.float64), np.atleast_2d(cov_b).astype(np.float64)
    if (
        mu_a.shape != mu_b.shape
        or cov_a.shape != cov_b.shape
        or cov_a.shape != (mu_a.size, mu_a.size)
    ):
        raise ParameterError(
            f"frechet_distance: shapes {mu_a.shape}, {cov_a.shape}, {mu_b.shape}, {cov_b.shape} differ"
        )
    with warnings.catch_warnings():
        # Few samples for many dimensions make the product singular; sqrtm still
        # returns the root of its non-zero part, which is what FAD wants.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.all(np.isfinite(covmean)):
        # Singular products (fewer samples than dimensions): nudge both diagonals.
        eps = 1e-6 * np.eye(mu_a.size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", linalg.LinAlgWarning)
            covmean = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    covmean = np.real(covmean)
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean))


def fad(embeddings: np.ndarray, reference: np.ndarray) -> float:
    """FAD of ``(n, dims)`` embeddings against ``(m, dims)`` reference embeddings; NaN
    with fewer than two of either (no covariance)."""
    a, b = np.asarray(embeddings, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] < 2 or b.shape[0] < 2:
        return math.nan
    return frechet_distance(
        a.mean(axis=0), np.cov(a, rowvar=False), b.mean(axis=0), np.cov(b, rowvar=False)
    )


def mean_kl(probs: np.ndarray, reference_probs: np.ndarray, eps: float = 1e-8) -> float:
    """Mean over the rows of ``probs`` ``(n, classes)`` of KL(reference mean || row), nats.

    The reference is the mean class distribution of ``reference_probs`` ``(m, classes)``
    (the reference music is unpaired with the mixtures, so one reference distribution
    stands for it). NaN when either is empty.
    """
    p = np.asarray(probs, dtype=np.float64)
    q = np.asarray(reference_probs, dtype=np.float64)
    if p.ndim != 2 or q.ndim != 2 or p.shape[0] == 0 or q.shape[0] == 0:
        return math.nan
    ref = q.mean(axis=0) + eps
    ref /= ref.sum()
    rows = p + eps
    rows /= rows.sum(axis=1, keepdims=True)
    return float(np.mean(np.sum(ref[None, :] * np.log(ref[None, :] / rows), axis=1)))


def embed_reference(embedder: AudioEmbedder, reference_dir: Path) -> list[Embedding]:
    """Embed every audio file of ``reference_dir`` in :data:`REFERENCE_SEGMENT_S` segments."""
    from .audio import read_stem, resample

    out = []
    files = _audio_files(reference_dir)
    if not files:
        raise AudioInputError(f"--reference-dir {reference_dir}: no audio files in it")
    for f in files:
        stem = read_stem(f)
        mono = stem.audio.mean(axis=0, keepdims=True)
        n = int(round(mono.shape[1] * embedder.sample_rate_hz / stem.sample_rate_hz))
        a = resample(mono, stem.sample_rate_hz, embedder.sample_rate_hz, n)[0]
        seg = int(REFERENCE_SEGMENT_S * embedder.sample_rate_hz)
        for s in range(0, max(1, a.size - seg // 2), seg):
            out.append(embedder.embed(a[s : s + seg]))
    return out


# --------------------------------------------------------------------------------------
# Orchestration


@dataclass(frozen=True)
class SkippedMethod:
    """A method that could not run, and why (shown in the report)."""

    method: str
    reason: str


@dataclass(frozen=True)
class ClipInfo:
    """A clip as evaluated: loudness before normalisation, gain and peak after it."""

    clip: str
    category: str
    path: str
    duration_s: float
    original_lufs: float
    normalisation_gain_db: float
    peak_dbfs: float
    prompt: str
    seed: int


@dataclass(frozen=True)
class EvalResult:
    """Everything an evaluation measured.

    Attributes:
        rows: one :class:`ClipMetrics` per clip x method x scenario that ran.
        clips: the clips, with their normalisation.
        skipped: methods that did not run at all, and why.
        failures: ``(clip, method, message)`` for renders that failed.
        distribution: FAD/KL per ``(category, method, scenario)``: ``{"fad": .., "kl": ..}``
            (category ``"all"`` too); empty when not computed.
        distribution_note: why FAD/KL were (not) computed, and with what.
        config: the configuration.
    """

    rows: list[ClipMetrics]
    clips: list[ClipInfo]
    skipped: list[SkippedMethod]
    failures: list[tuple[str, str, str]]
    distribution: dict[tuple[str, str, str], dict[str, float]]
    distribution_note: str
    config: EvalConfig

    @property
    def methods_run(self) -> list[str]:
        done = {r.method for r in self.rows}
        return [m for m in self.config.methods if m in done]

    @property
    def categories(self) -> list[str]:
        return sorted({c.category for c in self.clips})


def method_request(config: EvalConfig, method: str, clip_index: int) -> Any:
    """The request one method renders clip ``clip_index`` with.

    The base request's analysis, threshold and lambda settings are kept; the generator is
    the method's (the full method keeps the base generator and its parameters, the
    others get their defaults; ``random-music`` gets ``music_dir``). The seed is the
    base seed + ``clip_index`` (so ``random-music`` picks varied files); the prompt
    cycles over ``config.prompts``. Model-based generators never download weights here
    (``local_files_only``).
    """
    from .pipeline import MODEL_GENERATORS

    base = config.base_request()
    spec = method_spec(method)
    generator = spec.generator or base.generator
    params: dict[str, Any] = dict(base.generator_params) if spec.generator is None else {}
    if generator == "random-music":
        if config.music_dir is None and "music_dir" not in params:
            raise ParameterError("random-music needs --music-dir (a folder of music files)")
        if config.music_dir is not None:
            params["music_dir"] = str(config.music_dir)
    changes: dict[str, Any] = {
        "generator": generator,
        "generator_params": params,
        "seed": int((base.seed + clip_index) % 2**32),
    }
    if config.prompts:
        changes["prompt"] = config.prompts[clip_index % len(config.prompts)]
    if generator in MODEL_GENERATORS:
        changes["local_files_only"] = True
    return base.replace(**changes)


def _probe(config: EvalConfig, method: str) -> str | None:
    """Why ``method`` cannot run on this machine (None: it can, as far as we can tell)."""
    from .pipeline import MODEL_GENERATORS, generator_for

    try:
        req = method_request(config, method, 0)
    except ParameterError as e:
        return str(e)
    if req.generator not in MODEL_GENERATORS:
        return None
    try:
        gen = generator_for(req)
        load = getattr(gen, "load", None)
        if callable(load):
            load()
    except ModelNotFoundError as e:
        first = str(e).strip().splitlines()[0]
        return f"generator {req.generator!r}: model weights not available locally ({first})"
    except BNMusicError as e:
        return f"generator {req.generator!r} could not start: {e}"
    return None


def evaluate(
    clips: Sequence[NoiseClip],
    config: EvalConfig,
    *,
    embedder: AudioEmbedder | None = None,
    on_step: Callable[[NoiseClip, str], None] | None = None,
) -> EvalResult:
    """Run every method on every clip and measure it (see the module docstring).

    Args:
        clips: the noise clips.
        config: methods, base request, prompts, folders, targets.
        embedder: an audio embedding model for FAD/KL; None: :func:`find_embedding_model`
            is asked when ``config.reference_dir`` is set.
        on_step: called after each clip x method (progress bars).

    Returns:
        :class:`EvalResult`. Methods that cannot run here (missing weights, no music
        folder) are listed in ``skipped``; single failed renders in ``failures``.
    """
    from .audio import read_stem
    from .pipeline import render

    if not config.methods:
        raise ParameterError("no method to evaluate")
    for m in config.methods:
        method_spec(m)
    if not 0.0 < config.target_coverage <= 1.0:
        raise ParameterError(
            f"target_coverage={config.target_coverage}; allowed: greater than 0, at most 1"
        )
    skipped: list[SkippedMethod] = []
    active: list[str] = []
    for m in config.methods:
        reason = _probe(config, m)
        if reason is None:
            active.append(m)
        else:
            skipped.append(SkippedMethod(m, reason))

    embedder, note, reference = _distribution_setup(config, embedder)
    mixtures: dict[tuple[str, str], list[tuple[str, Embedding]]] = {}

    rows: list[ClipMetrics] = []
    infos: list[ClipInfo] = []
    failures: list[tuple[str, str, str]] = []
    for k, clip in enumerate(clips):
        try:
            stem = read_stem(clip.path)
            noise, before, gain_db = normalise_loudness(
                stem.audio, stem.sample_rate_hz, config.target_lufs
            )
        except BNMusicError as e:
            failures.append((clip.name, "(all)", f"{clip.path}: {e}"))
            for m in config.methods:
                if on_step:
                    on_step(clip, m)
            continue
        peak = float(np.max(np.abs(noise)))
        base_req = method_request(config, active[0], k) if active else config.base_request()
        infos.append(
            ClipInfo(
                clip=clip.name,
                category=clip.category,
                path=str(clip.path),
                duration_s=stem.num_samples / stem.sample_rate_hz,
                original_lufs=before,
                normalisation_gain_db=gain_db,
                peak_dbfs=20.0 * math.log10(peak) if peak > 0 else -math.inf,
                prompt=base_req.prompt,
                seed=int(base_req.seed),
            )
        )
        noise_mono = _mono_44k(noise, stem.sample_rate_hz)
        for m in config.methods:
            if m not in active:
                if on_step:
                    on_step(clip, m)
                continue
            try:
                req = method_request(config, m, k)
                result = render(noise, stem.sample_rate_hz, req)
                rows.extend(
                    measure_result(
                        result,
                        noise_mono,
                        clip=clip,
                        method=m,
                        target_coverage=config.target_coverage,
                        tolerance_ms=config.tolerance_ms,
                    )
                )
                if embedder is not None:
                    for scenario, music in (
                        ("normalised", result.music),
                        ("direct", result.music_gained),
                    ):
                        mix = _mono_44k(noise, stem.sample_rate_hz) + _mono_44k(
                            music, stem.sample_rate_hz
                        )
                        mixtures.setdefault((m, scenario), []).append(
                            (clip.category, _embed_44k(embedder, mix))
                        )
            except ModelNotFoundError as e:
                active.remove(m)
                skipped.append(
                    SkippedMethod(
                        m, f"model weights not available locally ({str(e).splitlines()[0]})"
                    )
                )
            except BNMusicError as e:
                failures.append((clip.name, m, str(e)))
            finally:
                if on_step:
                    on_step(clip, m)
    distribution = _distribution(mixtures, reference) if embedder is not None and reference else {}
    return EvalResult(rows, infos, skipped, failures, distribution, note, config)


def _embed_44k(embedder: AudioEmbedder, mono_44k: np.ndarray) -> Embedding:
    from .audio import resample
    from .grid import SAMPLE_RATE_HZ

    n = int(round(mono_44k.size * embedder.sample_rate_hz / SAMPLE_RATE_HZ))
    return embedder.embed(
        resample(mono_44k[None, :], SAMPLE_RATE_HZ, embedder.sample_rate_hz, n)[0]
    )


def _distribution_setup(
    config: EvalConfig, embedder: AudioEmbedder | None
) -> tuple[AudioEmbedder | None, str, list[Embedding]]:
    if config.reference_dir is None:
        return None, "FAD/KL: not computed, no reference music folder given (--reference-dir)", []
    if embedder is None:
        embedder, found = find_embedding_model(config.embedding_model)
        if embedder is None:
            return None, f"FAD/KL: not computed, no local audio embedding model ({found})", []
    else:
        found = f"using {embedder.name}"
    reference = embed_reference(embedder, Path(config.reference_dir))
    note = (
        f"FAD/KL: computed with {embedder.name} against {len(reference)} reference segments of "
        f"{REFERENCE_SEGMENT_S:g} s from {config.reference_dir} ({found}); embeddings of the "
        "noise + music mixtures, one per clip; KL = mean KL(reference class distribution || mixture's)"
    )
    return embedder, note, reference


def _distribution(
    mixtures: Mapping[tuple[str, str], list[tuple[str, Embedding]]], reference: Sequence[Embedding]
) -> dict[tuple[str, str, str], dict[str, float]]:
    ref_vec = np.stack([e.vector for e in reference])
    ref_probs = [e.class_probs for e in reference if e.class_probs is not None]
    out: dict[tuple[str, str, str], dict[str, float]] = {}
    for (method, scenario), items in mixtures.items():
        cats = ["all"] + sorted({c for c, _ in items})
        for cat in cats:
            sel = [e for c, e in items if cat in ("all", c)]
            vec = np.stack([e.vector for e in sel])
            probs = [e.class_probs for e in sel if e.class_probs is not None]
            kl = mean_kl(np.stack(probs), np.stack(ref_probs)) if probs and ref_probs else math.nan
            out[(cat, method, scenario)] = {"fad": fad(vec, ref_vec), "kl": kl}
    return out


# --------------------------------------------------------------------------------------
# Tables


@dataclass(frozen=True)
class Column:
    """A table column: the metric it averages, its heading, a scale and decimals."""

    key: str
    heading: str
    scale: float = 1.0
    decimals: int = 1


TABLE_COLUMNS = (
    Column("coverage", "coverage (%)", 100.0),
    Column("nmr_db", "NMR (dB)"),
    Column("gain_db", "gain (dB)"),
    Column("music_lufs", "music (LUFS)"),
    Column("lufs_90_smr", "LUFS@90% smr"),
    Column("lu_90_smr", "LU@90% smr"),
    Column("lufs_90_spreading", "LUFS@90% spreading"),
    Column("lu_90_spreading", "LU@90% spreading"),
    Column("lambda_paper_db", "paper lambda (dB)"),
    Column("spectral_time_r", "spectral r (time)", 1.0, 2),
    Column("spectral_freq_r", "spectral r (freq)", 1.0, 2),
    Column("mask_energy_share", "music energy in M (%)", 100.0),
    Column("onset_xcorr", "onset xcorr", 1.0, 2),
    Column("onset_f", "onset F", 1.0, 2),
)
"""Table 1 / ablation columns (means over clips; "(k/n)" where only k of n are finite)."""
DISTRIBUTION_COLUMNS = (Column("fad", "FAD", 1.0, 2), Column("kl", "KL", 1.0, 2))


@dataclass(frozen=True)
class TableRow:
    """One row of a summary table.

    Attributes:
        label: row label (method label, or ablation step).
        method, scenario: the rows of :class:`ClipMetrics` it averages.
        clips: number of clips averaged.
        means: metric key -> mean over the clips' finite values (NaN if none).
        finite: metric key -> how many clips had a finite value.
        note: why a row is empty ("not available: ...").
    """

    label: str
    method: str
    scenario: str
    clips: int
    means: dict[str, float]
    finite: dict[str, int]
    note: str = ""


def _summary_row(
    label: str,
    method: str,
    scenario: str,
    rows: Sequence[ClipMetrics],
    extra: Mapping[str, float] | None = None,
    note: str = "",
) -> TableRow:
    means: dict[str, float] = {}
    finite: dict[str, int] = {}
    for col in TABLE_COLUMNS:
        values = np.array([float(getattr(r, col.key)) for r in rows], dtype=np.float64)
        ok = values[np.isfinite(values)]
        means[col.key] = float(ok.mean()) if ok.size else math.nan
        finite[col.key] = int(ok.size)
    for col in DISTRIBUTION_COLUMNS:
        value = (extra or {}).get(col.key, math.nan)
        means[col.key] = float(value)
        finite[col.key] = 1 if math.isfinite(value) else 0
    return TableRow(label, method, scenario, len(rows), means, finite, note)


def _rows_of(result: EvalResult, method: str, scenario: str, category: str) -> list[ClipMetrics]:
    return [
        r
        for r in result.rows
        if r.method == method and r.scenario == scenario and category in ("all", r.category)
    ]


def table1(result: EvalResult, scenario: str, category: str = "all") -> list[TableRow]:
    """Table 1: one row per method that ran (in ``config.methods`` order), means over the
    clips of ``category`` (``"all"``: every clip) in ``scenario``."""
    out = []
    for m in result.methods_run:
        rows = _rows_of(result, m, scenario, category)
        if rows:
            dist = result.distribution.get((category, m, scenario))
            out.append(_summary_row(method_spec(m).label, m, scenario, rows, dist))
    return out


def ablation_table(result: EvalResult, category: str = "all") -> list[TableRow]:
    """The paper's ablation rows, from the methods and scenarios that ran:

    noise only; outpainting only (``outpaint-only``, normalised); outpainting +
    amplification (``outpaint-only``, direct); outpainting + inpainting (the full
    method's Stage 1 without amplification: ``bnmusic``, normalised; labelled with the
    generator when that is not ``riffusion``); full (``bnmusic``, direct). Rows whose
    method did not run carry a note instead of numbers.
    """
    base_gen = result.config.base_request().generator
    stage1 = (
        "outpainting + inpainting"
        if base_gen == "riffusion"
        else f"Stage 1 only ({base_gen}), no amplification"
    )
    plan = [
        ("noise only", "noise-only", "normalised"),
        ("outpainting only", "outpaint-only", "normalised"),
        ("outpainting + amplification", "outpaint-only", "direct"),
        (stage1, "bnmusic", "normalised"),
        (f"full: Stage 1 ({base_gen}) + amplification", "bnmusic", "direct"),
    ]
    skipped = {s.method: s.reason for s in result.skipped}
    out = []
    for label, method, scenario in plan:
        rows = _rows_of(result, method, scenario, category)
        if rows:
            dist = result.distribution.get((category, method, scenario))
            out.append(_summary_row(label, method, scenario, rows, dist))
        else:
            why = (
                f"`{method}` skipped (see Methods)"
                if method in skipped
                else "not in --methods"
                if method not in result.config.methods
                else "no clip rendered"
            )
            out.append(TableRow(label, method, scenario, 0, {}, {}, f"not available: {why}"))
    return out


@dataclass(frozen=True)
class PairedRow:
    """The full method against one other method, clip by clip (loudness normalised).

    Attributes:
        method: the other method.
        clips: clips both methods rendered.
        wins: model -> clips where the full method needs less loudness for the target
            coverage (a reachable level beats an unreachable one; two unreachable ones
            are a tie).
        median_difference_lu: model -> median over clips where both are reachable of
            (full - other) LU@target: negative = the full method is quieter.
    """

    method: str
    clips: int
    wins: dict[str, int]
    median_difference_lu: dict[str, float]


def paired_table(
    result: EvalResult, category: str = "all", reference: str = "bnmusic"
) -> list[PairedRow]:
    """Clip-by-clip comparison of ``reference`` with every other method that ran, on the
    loudness needed for the target coverage under each threshold model; empty when
    ``reference`` did not run. Means hide which clips a method wins; this shows it."""
    ref = {r.clip: r for r in _rows_of(result, reference, "normalised", category)}
    if not ref:
        return []
    out = []
    for m in result.methods_run:
        if m == reference:
            continue
        other = {r.clip: r for r in _rows_of(result, m, "normalised", category)}
        common = sorted(set(ref) & set(other))
        wins: dict[str, int] = {}
        median: dict[str, float] = {}
        for model in THRESHOLD_MODELS:
            key = f"lu_90_{model}"
            a = np.array([getattr(ref[c], key) for c in common], dtype=np.float64)
            b = np.array([getattr(other[c], key) for c in common], dtype=np.float64)
            wins[model] = int(np.sum((a < b) & ~np.isinf(a)))
            both = np.isfinite(a) & np.isfinite(b)
            median[model] = float(np.median(a[both] - b[both])) if both.any() else math.nan
        out.append(PairedRow(m, len(common), wins, median))
    return out


def markdown_paired(rows: Sequence[PairedRow], reference_label: str = "BNMusic (full)") -> str:
    """A Markdown table of :func:`paired_table` rows."""
    heads = ["other method", "clips"]
    for model in THRESHOLD_MODELS:
        heads += [f"full quieter ({model})", f"median full - other ({model}, LU)"]
    lines = [
        "| " + " | ".join(heads) + " |",
        "| " + " | ".join(["---"] + ["---:"] * (len(heads) - 1)) + " |",
    ]
    for r in rows:
        cells = [method_spec(r.method).label, str(r.clips)]
        for model in THRESHOLD_MODELS:
            d = r.median_difference_lu[model]
            cells += [f"{r.wins[model]}/{r.clips}", f"{d:+.1f}" if math.isfinite(d) else "n/a"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value: float, col: Column, finite: int, clips: int) -> str:
    if not math.isfinite(value):
        if col.key.startswith(("lufs_90", "lu_90")) and clips and finite == 0:
            return "unreachable"
        if col.key == "lambda_paper_db" and clips and finite == 0:
            return "-inf (silence)"
        if col.key in ("music_lufs", "music_lu") and clips and finite == 0:
            return "silent"
        return "n/a" if col.key not in ("fad", "kl") else "n/c"
    text = f"{value * col.scale:.{col.decimals}f}"
    if finite < clips:
        text += f" ({finite}/{clips})"
    return text


def markdown_table(rows: Sequence[TableRow], first: str = "method") -> str:
    """A Markdown table of ``rows``: a header, a separator and one line per row."""
    cols = TABLE_COLUMNS + DISTRIBUTION_COLUMNS
    lines = [
        "| " + " | ".join([first, "clips"] + [c.heading for c in cols]) + " |",
        "| " + " | ".join(["---", "---:"] + ["---:"] * len(cols)) + " |",
    ]
    for r in rows:
        if r.note:
            cells = [r.label, "0", r.note] + [""] * (len(cols) - 1)
        else:
            cells = [r.label, str(r.clips)] + [
                _fmt(r.means[c.key], c, r.finite[c.key], r.clips) for c in cols
            ]
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    return "\n".join(lines)


def _csv_value(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.6g}"
    return str(value)


def _csv_bytes(header: Sequence[str], records: Iterable[Sequence[Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for rec in records:
        w.writerow([_csv_value(v) for v in rec])
    return buf.getvalue().encode("utf-8")


def _table_records(result: EvalResult) -> list[tuple[str, str, str, TableRow]]:
    """(table, category, scenario, row) for every Table 1 and ablation row."""
    out: list[tuple[str, str, str, TableRow]] = []
    for cat in ["all"] + (result.categories if len(result.categories) > 1 else []):
        for scenario in SCENARIOS:
            out.extend(("table1", cat, scenario, r) for r in table1(result, scenario, cat))
        out.extend(("ablation", cat, r.scenario, r) for r in ablation_table(result, cat))
    return out


# --------------------------------------------------------------------------------------
# Report


REPORT_FILES = (
    "report.md",
    "results.csv",
    "table1.csv",
    "ablation.csv",
    "paired.csv",
    "results.json",
    "lufs90_by_method.png",
    "coverage_by_method.png",
    "alignment_vs_level.png",
)
"""Files :func:`write_report` writes (the PNGs only with plots on)."""


def report_paths(out_dir: str | os.PathLike[str], plots: bool = True) -> list[Path]:
    """The paths :func:`write_report` would write into ``out_dir``."""
    return [Path(out_dir) / n for n in REPORT_FILES if plots or not n.endswith(".png")]


def _machine() -> dict[str, Any]:
    from . import __version__

    return {
        "bnmusic_bridge": __version__,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _settings_lines(result: EvalResult) -> list[str]:
    req = result.config.base_request()
    return [
        f"- noise: {len(result.clips)} clips, each normalised to {result.config.target_lufs:g} LUFS "
        "(ITU-R BS.1770-4, pyloudnorm) before rendering",
        f"- full method (`bnmusic`): generator `{req.generator}`, threshold model `{req.threshold_model}`"
        f" (smr {req.smr_db:g} dB), objective `{req.objective}` (alpha {req.alpha:g}), mask area "
        f"{req.mask_area:g}, lane {req.lane_window_s:g} s / {req.lane_hop_s:g} s, gain "
        f"{req.min_gain_db:g}..{req.max_gain_db:g} dB",
        f"- prompts: {len(result.config.prompts)} from --prompts, cycled over the clips"
        if result.config.prompts
        else f'- prompt: "{req.prompt}" for every clip',
        f"- seeds: {req.seed} + clip index; loudness for coverage: {result.config.target_coverage * 100:g} % "
        f"of the high-energy bins; rhythm tolerance +-{result.config.tolerance_ms:g} ms",
    ]


def _clips_text(n: int) -> str:
    return f"{n} clip" if n == 1 else f"{n} clips"


def markdown_report(result: EvalResult, command: str = "", plots: bool = True) -> str:
    """The whole report as Markdown (see :func:`write_report`)."""
    lines = ["# bnmusic eval report", ""]
    if command:
        lines += ["Command:", "", f"    {command}", ""]
    m = _machine()
    lines += [
        f"bnmusic-bridge {m['bnmusic_bridge']}, {m['date']}, {m['platform']}, {m['cpu_count']} CPUs.",
        "",
        "## Settings",
        "",
        *_settings_lines(result),
        "",
        "## Methods",
        "",
    ]
    for name in result.config.methods:
        spec = method_spec(name)
        gen = spec.generator or result.config.base_request().generator
        n = len({r.clip for r in result.rows if r.method == name})
        lines.append(f"- `{name}` ({spec.label}, generator `{gen}`): {_clips_text(n)}")
    for s in result.skipped:
        lines.append(f"- SKIPPED `{s.method}`: {s.reason}")
    for clip, method, msg in result.failures:
        lines.append(f"- FAILED `{method}` on `{clip}`: {msg}")
    lines += ["", "## FAD / KL", "", result.distribution_note, ""]
    sections = [("all", f"All clips ({_clips_text(len(result.clips))})")]
    if len(result.categories) > 1:
        sections += [
            (c, f"Category `{c}` ({_clips_text(sum(1 for i in result.clips if i.category == c))})")
            for c in result.categories
        ]
    for cat, title in sections:
        lines += [f"## {title}", ""]
        for scenario in SCENARIOS:
            lines += [
                f"### Table 1, {SCENARIO_LABELS[scenario]}",
                "",
                markdown_table(table1(result, scenario, cat)),
                "",
            ]
        lines += ["### Ablation", "", markdown_table(ablation_table(result, cat), first="step"), ""]
        paired = paired_table(result, cat)
        if paired:
            lines += [
                f"### Clip by clip: loudness for {result.config.target_coverage * 100:g} % coverage, "
                "full method against each other method (loudness normalised)",
                "",
                markdown_paired(paired),
                "",
            ]
    if plots:
        lines += [
            "## Plots",
            "",
            "![loudness for 90 % coverage by method](lufs90_by_method.png)",
            "",
            "![coverage by method](coverage_by_method.png)",
            "",
            "![alignment against level](alignment_vs_level.png)",
            "",
        ]
    lines += [
        "## Clips",
        "",
        "| clip | category | seconds | LUFS before | gain (dB) | peak after (dBFS) | prompt |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for c in result.clips:
        lines.append(
            f"| {c.clip} | {c.category} | {c.duration_s:.2f} | {c.original_lufs:.1f} | "
            f"{c.normalisation_gain_db:+.1f} | {c.peak_dbfs:.1f} | {c.prompt.replace('|', '/')} |"
        )
    lines += ["", METRIC_NOTES]
    return "\n".join(lines) + "\n"


METRIC_NOTES = """## How to read the tables

- Each cell is the mean over the clips; `(k/n)`: only k of the n clips had a finite value
  (e.g. the music cannot reach 90 % coverage because it is silent where the noise is loud).
- coverage: share of the noise's high-energy bins (loudest 15 % of the mel image) whose
  noise lies under the music's masking threshold (request's threshold model). NMR:
  PEAQ-style noise-to-mask ratio in dB (lower: better masked).
- gain, music (LUFS): the gain applied to the loudness-matched music (0 dB when loudness
  normalised; the lambda lane's mean when direct) and the music's loudness as played.
- LUFS@90% / LU@90%: the loudness the music would need (absolute, and over the noise) to
  mask 90 % of the high-energy bins, under the paper's fixed 21 dB SMR model (smr) and
  under psychoacoustic model 1 (spreading). Lower is better: aligned music blends at a
  more comfortable volume. "unreachable": no clip reaches 90 %.
- paper lambda: the exact minimiser of the paper's loss over the whole clip, dB re the
  loudness-matched music; the pipeline itself applies a smoothed lane.
- spectral r (time / freq): Pearson correlation of the noise's and the music's mel
  energy in dB, per frame and per band; music energy in M: share of the music's energy
  inside the high-energy mask. onset xcorr: peak normalised cross-correlation of the
  onset envelopes within +-50 ms; onset F: onset F-measure with a 50 ms tolerance.
- FAD / KL: "n/c" = not computed (see the FAD / KL section).
"""


def _bar_positions(n_groups: int, n_bars: int) -> tuple[np.ndarray, float]:
    width = 0.8 / max(n_bars, 1)
    return np.arange(n_groups), width


def _colour(result: EvalResult, method: str) -> str:
    """One colour per method across every plot (matplotlib's cycle, in method order)."""
    return f"C{list(result.config.methods).index(method) % 10}"


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _grouped_bars(
    result: EvalResult,
    keys: Sequence[tuple[str, str, str]],
    ylabel: str,
    title: str,
    scale: float = 1.0,
) -> bytes:
    """Bars of a metric per method (one bar each) and category (groups); one panel per
    ``(metric key, scenario, panel title)``."""
    from matplotlib.figure import Figure

    cats = ["all"] + (result.categories if len(result.categories) > 1 else [])
    methods = result.methods_run
    fig = Figure(
        figsize=(max(6.0, 1.4 * len(cats) * max(1, len(methods)) / 2 + 2), 3.4 * len(keys))
    )
    for i, (key, scenario, panel) in enumerate(keys):
        ax = fig.add_subplot(len(keys), 1, i + 1)
        x, width = _bar_positions(len(cats), len(methods))
        for j, m in enumerate(methods):
            values, notes = [], []
            for c in cats:
                vals = [float(getattr(r, key)) for r in _rows_of(result, m, scenario, c)]
                ok = [v for v in vals if math.isfinite(v)]
                values.append(float(np.mean(ok)) * scale if ok else 0.0)
                notes.append("" if ok else "none")
            pos = x - 0.4 + width * (j + 0.5)
            bars = ax.bar(pos, values, width, label=method_spec(m).label, color=_colour(result, m))
            for b, note in zip(bars, notes, strict=True):
                if note:
                    ax.text(
                        b.get_x() + b.get_width() / 2,
                        0,
                        note,
                        ha="center",
                        va="bottom",
                        fontsize=7,
                        rotation=90,
                    )
        ax.set_xticks(x)
        ax.set_xticklabels(cats)
        ax.set_ylabel(ylabel)
        ax.set_title(panel, fontsize=10)
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.grid(axis="y", alpha=0.3)
        low, high = ax.get_ylim()
        ax.set_ylim(low, high + 0.25 * (high - low))  # room for the legend above the bars
        if i == 0:
            ax.legend(fontsize=8, ncols=min(3, max(1, len(methods))), loc="upper left")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _png(fig)


def _scatter(result: EvalResult) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0, 4.0))
    for i, (key, xlabel) in enumerate(
        (
            ("mask_energy_share", "music energy in the high-energy mask (%)"),
            ("onset_f", "onset F-measure"),
        )
    ):
        ax = fig.add_subplot(1, 2, i + 1)
        for m in result.methods_run:
            pts = [
                (
                    float(getattr(r, key)) * (100.0 if key == "mask_energy_share" else 1.0),
                    r.lu_90_smr,
                )
                for r in _rows_of(result, m, "normalised", "all")
                if math.isfinite(float(getattr(r, key))) and math.isfinite(r.lu_90_smr)
            ]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.scatter(xs, ys, label=method_spec(m).label, s=18, color=_colour(result, m))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("LU over the noise for 90 % coverage (smr)")
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=8)
    fig.suptitle("Alignment against the level needed to mask (one point per clip)", fontsize=11)
    fig.tight_layout()
    return _png(fig)


def write_report(
    result: EvalResult,
    out_dir: str | os.PathLike[str],
    *,
    force: bool = False,
    plots: bool = True,
    command: str = "",
) -> list[Path]:
    """Write the report into ``out_dir``: ``report.md``, ``results.csv`` (one row per
    clip x method x scenario), ``table1.csv`` and ``ablation.csv`` (the summary rows,
    category ``all`` and per category), ``results.json`` (everything) and, with
    ``plots``, three PNGs. Every file is written atomically; existing files are refused
    (:class:`OutputExistsError`) unless ``force``.

    Returns:
        the paths written.
    """
    from .audio import write_bytes_atomic

    out = Path(out_dir)
    paths = report_paths(out, plots)
    if not force:
        existing = [str(p) for p in paths if p.exists()]
        if existing:
            raise OutputExistsError(
                f"output file(s) exist already: {', '.join(existing)}; pass --force to overwrite"
            )
    out.mkdir(parents=True, exist_ok=True)
    fields = [f.name for f in dataclasses.fields(ClipMetrics)]
    files: dict[str, bytes] = {
        "report.md": markdown_report(result, command, plots).encode("utf-8"),
        "results.csv": _csv_bytes(fields, ([getattr(r, f) for f in fields] for r in result.rows)),
    }
    cols = [c.key for c in TABLE_COLUMNS + DISTRIBUTION_COLUMNS]
    records = _table_records(result)
    paired_header = ["category", "method", "clips"] + [
        f"{kind}_{model}" for model in THRESHOLD_MODELS for kind in ("wins", "median_difference_lu")
    ]
    files["paired.csv"] = _csv_bytes(
        paired_header,
        (
            [cat, r.method, r.clips]
            + [
                v
                for model in THRESHOLD_MODELS
                for v in (r.wins[model], r.median_difference_lu[model])
            ]
            for cat in ["all"] + (result.categories if len(result.categories) > 1 else [])
            for r in paired_table(result, cat)
        ),
    )
    for table in ("table1", "ablation"):
        header = (
            ["category", "scenario", "row", "method", "clips"]
            + cols
            + [f"{c}_finite" for c in cols]
            + ["note"]
        )
        files[f"{table}.csv"] = _csv_bytes(
            header,
            (
                [cat, scen, r.label, r.method, r.clips]
                + [r.means.get(c, math.nan) for c in cols]
                + [r.finite.get(c, 0) for c in cols]
                + [r.note]
                for t, cat, scen, r in records
                if t == table
            ),
        )
    files["results.json"] = (
        json.dumps(
            {
                "command": command,
                "machine": _machine(),
                "config": {
                    "methods": list(result.config.methods),
                    "prompts": list(result.config.prompts),
                    "music_dir": str(result.config.music_dir) if result.config.music_dir else None,
                    "reference_dir": str(result.config.reference_dir)
                    if result.config.reference_dir
                    else None,
                    "target_lufs": result.config.target_lufs,
                    "target_coverage": result.config.target_coverage,
                    "tolerance_ms": result.config.tolerance_ms,
                    "request": result.config.base_request().to_dict(),
                },
                "skipped": [dataclasses.asdict(s) for s in result.skipped],
                "failures": [{"clip": c, "method": m, "error": e} for c, m, e in result.failures],
                "distribution_note": result.distribution_note,
                "distribution": [
                    {
                        "category": c,
                        "method": m,
                        "scenario": s,
                        **{k: _json_float(v) for k, v in d.items()},
                    }
                    for (c, m, s), d in result.distribution.items()
                ],
                "clips": [
                    {k: _json_float(v) for k, v in dataclasses.asdict(c).items()}
                    for c in result.clips
                ],
                "rows": [
                    {k: _json_float(v) for k, v in dataclasses.asdict(r).items()}
                    for r in result.rows
                ],
            },
            indent=1,
        )
        + "\n"
    ).encode("utf-8")
    if plots and result.rows:
        files["lufs90_by_method.png"] = _grouped_bars(
            result,
            [
                ("lu_90_smr", "normalised", "smr threshold (paper)"),
                ("lu_90_spreading", "normalised", "spreading threshold (ours)"),
            ],
            "LU over the noise",
            f"Music loudness needed to mask {result.config.target_coverage * 100:g} % of the high-energy bins (lower is better)",
        )
        files["coverage_by_method.png"] = _grouped_bars(
            result,
            [("coverage", s, SCENARIO_LABELS[s]) for s in SCENARIOS],
            "coverage (%)",
            "Masking coverage of the high-energy bins",
            scale=100.0,
        )
        files["alignment_vs_level.png"] = _scatter(result)
    written = []
    for p in paths:
        if p.name in files:
            written.append(write_bytes_atomic(p, files[p.name], force=force))
    return written


def _json_float(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


# --------------------------------------------------------------------------------------
# Command line


def register_cli(subparsers: Any) -> None:
    """Add the ``eval`` command to the ``bnmusic`` parser."""
    from .frontends.args import add_render_args

    p = subparsers.add_parser(
        "eval",
        help="measure how well methods blend noise (the paper's Table 1 and ablation, and more)",
        description=(
            "Normalise every noise to -18 LUFS, render it with each method, and report masking "
            "coverage, NMR, the loudness needed for 90 % coverage, lambda, spectral and rhythmic "
            "alignment (and FAD/KL when a local embedding model exists), as Markdown, CSV and PNG."
        ),
    )
    p.add_argument(
        "noises", nargs="+", help="noise files or folders (a folder's subfolders are categories)"
    )
    p.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help=f"comma-separated methods (default {','.join(DEFAULT_METHODS)}); any generator name works too",
    )
    p.add_argument(
        "--prompts", type=Path, help="text file, one prompt per line, cycled over the clips"
    )
    p.add_argument("--music-dir", type=Path, help="folder of music files for random-music")
    p.add_argument("--reference-dir", type=Path, help="folder of reference music for FAD/KL")
    p.add_argument(
        "--embedding-model", help="local folder (or cached id) of an audio classifier for FAD/KL"
    )
    p.add_argument(
        "--categories",
        choices=CATEGORY_MODES,
        default="auto",
        help="how clips get a category (default auto)",
    )
    p.add_argument(
        "--target-lufs",
        type=float,
        default=TARGET_LUFS,
        help="noise normalisation, LUFS (default -18)",
    )
    p.add_argument(
        "--eval-coverage",
        type=float,
        default=TARGET_COVERAGE,
        help="share of high-energy bins the loudness-for-coverage metric asks for (default "
        "0.9; --target-coverage is the render's coverage objective)",
    )
    p.add_argument("--out", type=Path, required=True, help="report folder")
    p.add_argument("--force", action="store_true", help="overwrite an existing report")
    p.add_argument("--no-plot", action="store_true", help="skip the PNGs")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    add_render_args(p)
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    """Run ``bnmusic eval`` (see :func:`register_cli`)."""
    from .frontends.args import EXIT_OK, build_request

    request = build_request(args)
    methods = tuple(m.strip() for m in str(args.methods).split(",") if m.strip())
    for m in methods:
        method_spec(m)
    config = EvalConfig(
        methods=methods,
        request=request,
        prompts=read_prompts(args.prompts) if args.prompts else (),
        music_dir=args.music_dir,
        reference_dir=args.reference_dir,
        embedding_model=args.embedding_model,
        target_lufs=args.target_lufs,
        target_coverage=args.eval_coverage,
    )
    clips = discover_noises(args.noises, args.categories)
    plots = not args.no_plot
    if not args.force:
        existing = [str(p) for p in report_paths(args.out, plots) if p.exists()]
        if existing:
            raise OutputExistsError(
                f"output file(s) exist already: {', '.join(existing)}; pass --force to overwrite"
            )
    from tqdm import tqdm

    bar = tqdm(
        total=len(clips) * len(methods),
        desc="eval",
        unit="render",
        file=sys.stderr,
        disable=True if args.quiet else None,
    )

    def step(clip: NoiseClip, method: str) -> None:
        bar.set_postfix_str(f"{clip.name[:24]} / {method}")
        bar.update(1)

    try:
        result = evaluate(clips, config, on_step=step)
    finally:
        bar.close()
    if not result.rows:
        problems = [f"{s.method}: {s.reason}" for s in result.skipped] + [
            f"{c}/{m}: {e}" for c, m, e in result.failures
        ]
        raise BNMusicError("nothing was measured: " + "; ".join(problems))
    # The raw argv is not in ``args``; when this process was started as `bnmusic eval ...`
    # the command is quoted into the report as it was typed.
    command = "bnmusic " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["eval"] else ""
    written = write_report(result, args.out, force=args.force, plots=plots, command=command)
    if not args.quiet:
        for s in result.skipped:
            print(f"skipped {s.method}: {s.reason}", file=sys.stderr)
        for c, m, e in result.failures:
            print(f"failed {m} on {c}: {e}", file=sys.stderr)
        print(result.distribution_note)
        print(markdown_table(table1(result, "normalised")))
        for p in written:
            print(f"  {p}")
    return EXIT_OK
