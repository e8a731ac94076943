"""FAD and KL of the noise + music mixtures against reference music, through a pluggable
local audio embedding model (never downloaded).

Audio given to an embedder is mono float ``(samples,)`` at its own ``sample_rate_hz``,
linear amplitude; mixtures arrive at :data:`~bnmusic_bridge.grid.SAMPLE_RATE_HZ`.
"""

from __future__ import annotations

import importlib.util
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast, runtime_checkable

import numpy as np

from ..audio import audio_files_in, read_stem, resample
from ..errors import AudioInputError, ModelNotFoundError, ParameterError
from ..grid import SAMPLE_RATE_HZ

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
    :func:`~bnmusic_bridge.evaluation.run.evaluate` (or by making
    :func:`find_embedding_model` find it)."""

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


def _model_candidates(spec: str | None) -> tuple[list[str], list[str]]:
    """``(model sources to try, what was looked at)`` for :func:`find_embedding_model`."""
    if spec:
        return [spec], [f"--embedding-model {spec}"]
    if os.environ.get(ENV_EMBEDDING_MODEL):
        source = os.environ[ENV_EMBEDDING_MODEL]
        return [source], [f"${ENV_EMBEDDING_MODEL}={source}"]
    looked = ["the Hugging Face cache for " + ", ".join(KNOWN_EMBEDDING_MODELS)]
    candidates: list[str] = []
    try:
        from huggingface_hub import try_to_load_from_cache

        for repo in KNOWN_EMBEDDING_MODELS:
            if isinstance(try_to_load_from_cache(repo, "config.json"), str):
                candidates.append(repo)
    except ImportError:
        pass
    return candidates, looked


def _packages_note() -> str:
    packages = [p for p in EMBEDDING_PACKAGES if importlib.util.find_spec(p) is not None]
    return (
        "Python packages "
        + ", ".join(EMBEDDING_PACKAGES)
        + (
            f" (installed but without an adapter here: {', '.join(packages)})"
            if packages
            else " (none installed)"
        )
    )


def find_embedding_model(spec: str | None = None) -> tuple[AudioEmbedder | None, str]:
    """Look for a local audio embedding model for FAD/KL; never downloads anything.

    Looks at ``spec`` (a folder or cached id) if given, else at the environment
    variable :data:`ENV_EMBEDDING_MODEL`, else at :data:`KNOWN_EMBEDDING_MODELS` in the
    Hugging Face cache, and notes which :data:`EMBEDDING_PACKAGES` are installed.

    Returns:
        ``(embedder or None, a sentence saying what was looked for and found)``.
    """
    candidates, looked = _model_candidates(spec)
    looked.append(_packages_note())
    problems: list[str] = []
    for source in candidates:
        folder = Path(source).expanduser()
        if not folder.is_dir() and source.count("/") != 1:
            problems.append(f"{source}: no such folder")
            continue
        try:
            return TransformersAudioClassifier(
                str(folder) if folder.is_dir() else source
            ), f"using {source}"
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
    out = []
    files = audio_files_in(reference_dir)
    if not files:
        raise AudioInputError(f"--reference-dir {reference_dir}: no audio files in it")
    for f in files:
        stem = read_stem(f)
        # read_stem without a store reads the samples into a numpy array
        mono = cast(np.ndarray, stem.audio).mean(axis=0, keepdims=True)
        n = int(round(mono.shape[1] * embedder.sample_rate_hz / stem.sample_rate_hz))
        a = resample(mono, stem.sample_rate_hz, embedder.sample_rate_hz, n)[0]
        seg = int(REFERENCE_SEGMENT_S * embedder.sample_rate_hz)
        for s in range(0, max(1, a.size - seg // 2), seg):
            out.append(embedder.embed(a[s : s + seg]))
    return out


def embed_analysis_mono(embedder: AudioEmbedder, mono_44k: np.ndarray) -> Embedding:
    """Embed mono float ``(samples,)`` audio at :data:`~bnmusic_bridge.grid.SAMPLE_RATE_HZ`
    (resampled to the embedder's rate first)."""
    n = int(round(mono_44k.size * embedder.sample_rate_hz / SAMPLE_RATE_HZ))
    return embedder.embed(
        resample(mono_44k[None, :], SAMPLE_RATE_HZ, embedder.sample_rate_hz, n)[0]
    )


@dataclass(frozen=True)
class DistributionSetup:
    """What FAD/KL will be computed with.

    Attributes:
        embedder: the embedding model, or None when FAD/KL are not computed.
        note: one sentence for the report: why FAD/KL are (not) computed, and with what.
        reference: the reference music's embeddings (empty when not computed).
    """

    embedder: AudioEmbedder | None
    note: str
    reference: list[Embedding]


def distribution_setup(
    reference_dir: Path | None, embedder: AudioEmbedder | None, embedding_model: str | None
) -> DistributionSetup:
    """Find the embedder (``embedder`` if given, else :func:`find_embedding_model` of
    ``embedding_model``) and embed the reference music of ``reference_dir``.

    Nothing is computed without ``reference_dir``, or without a local embedder."""
    if reference_dir is None:
        return DistributionSetup(
            None, "FAD/KL: not computed, no reference music folder given (--reference-dir)", []
        )
    if embedder is None:
        embedder, found = find_embedding_model(embedding_model)
        if embedder is None:
            return DistributionSetup(
                None, f"FAD/KL: not computed, no local audio embedding model ({found})", []
            )
    else:
        found = f"using {embedder.name}"
    reference = embed_reference(embedder, Path(reference_dir))
    note = (
        f"FAD/KL: computed with {embedder.name} against {len(reference)} reference segments of "
        f"{REFERENCE_SEGMENT_S:g} s from {reference_dir} ({found}); embeddings of the "
        "noise + music mixtures, one per clip; KL = mean KL(reference class distribution || mixture's)"
    )
    return DistributionSetup(embedder, note, reference)


def distribution_metrics(
    mixtures: Mapping[tuple[str, str], list[tuple[str, Embedding]]], reference: Sequence[Embedding]
) -> dict[tuple[str, str, str], dict[str, float]]:
    """FAD and KL per ``(category, method, scenario)`` (category ``"all"`` too).

    Args:
        mixtures: ``(method, scenario)`` -> ``(category, embedding)`` of each clip's
            noise + music mixture.
        reference: the reference music's embeddings.

    Returns:
        ``{(category, method, scenario): {"fad": .., "kl": ..}}``.
    """
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
