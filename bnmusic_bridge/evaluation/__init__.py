"""Evaluation: how well each method blends noise, the way the BNMusic paper measures it
and beyond it (the library behind ``bnmusic eval``).

For every noise clip and every method (the full method and the paper's baselines and
ablation, as generators), the clip is normalised to -18 LUFS (ITU-R BS.1770-4 through
:func:`bnmusic_bridge.loudness.integrated_lufs`, as the paper does), rendered through
:func:`bnmusic_bridge.pipeline.render`, and measured in two scenarios:

* ``normalised`` ("loudness normalised", the paper's Table 1 setting): the music at unity
  gain, i.e. matched to the noise's integrated loudness;
* ``direct``: the music with the lambda lane the pipeline chose (``music_gained``).

Per clip, method and scenario: masking coverage of the high-energy mask, NMR, the music's
loudness as played, the loudness (LUFS, and LU over the noise) the music would need to
mask :data:`NEEDED_LOUDNESS_COVERAGE` of the high-energy bins under each threshold model
(lower is better), the paper's scalar lambda, spectral and rhythmic alignment
(:mod:`bnmusic_bridge.alignment`), and FAD / KL of the noise + music mixtures against
reference music when an audio embedding model is available on this machine (otherwise
the report says why not). The report (Markdown, CSV, JSON, PNG) follows the layout of
the paper's Table 1 (methods as rows, per scenario) and its ablation table, overall and
per noise category.

Modules, each one job:

* :mod:`.data`: finding and categorising noise clips, prompts, loading at -18 LUFS;
* :mod:`.metrics`: the measurements of one render (:class:`ClipMetrics`);
* :mod:`.embeddings`: the optional FAD/KL embedding backends and maths;
* :mod:`.methods`: the methods, the configuration, each method's request;
* :mod:`.run`: :func:`evaluate`, every method on every clip;
* :mod:`.tables`, :mod:`.plots`, :mod:`.report`: the report's tables, PNGs and files.

Typical use::

    clips = discover_noises(["noise/"])
    result = evaluate(clips, EvalConfig(methods=("bnmusic", "noise-only")))
    write_report(result, "report/")
"""

from __future__ import annotations

from .data import (
    CATEGORY_MODES,
    TARGET_LUFS,
    LoadedClip,
    NoiseClip,
    discover_noises,
    load_clip,
    normalise_loudness,
    read_prompts,
)
from .embeddings import (
    ENV_EMBEDDING_MODEL,
    AudioEmbedder,
    Embedding,
    TransformersAudioClassifier,
    fad,
    find_embedding_model,
    frechet_distance,
    mean_kl,
)
from .methods import DEFAULT_METHODS, METHODS, EvalConfig, MethodSpec, method_request, method_spec
from .metrics import (
    NEEDED_LOUDNESS_COVERAGE,
    SCENARIOS,
    ClipMetrics,
    loudness_for_coverage,
    measure_result,
)
from .report import REPORT_FILES, check_report_free, markdown_report, report_paths, write_report
from .run import ClipInfo, EvalResult, SkippedMethod, evaluate
from .tables import PairedRow, TableRow, ablation_table, markdown_table, paired_table, table1

__all__ = [
    "CATEGORY_MODES",
    "DEFAULT_METHODS",
    "ENV_EMBEDDING_MODEL",
    "METHODS",
    "NEEDED_LOUDNESS_COVERAGE",
    "REPORT_FILES",
    "SCENARIOS",
    "TARGET_LUFS",
    "AudioEmbedder",
    "ClipInfo",
    "ClipMetrics",
    "Embedding",
    "EvalConfig",
    "EvalResult",
    "LoadedClip",
    "MethodSpec",
    "NoiseClip",
    "PairedRow",
    "SkippedMethod",
    "TableRow",
    "TransformersAudioClassifier",
    "ablation_table",
    "check_report_free",
    "discover_noises",
    "evaluate",
    "fad",
    "find_embedding_model",
    "frechet_distance",
    "load_clip",
    "loudness_for_coverage",
    "markdown_report",
    "markdown_table",
    "mean_kl",
    "measure_result",
    "method_request",
    "method_spec",
    "normalise_loudness",
    "paired_table",
    "read_prompts",
    "report_paths",
    "table1",
    "write_report",
]
