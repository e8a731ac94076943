"""``bnmusic eval``: render noise clips with each method and write the evaluation report
(:mod:`bnmusic_bridge.evaluation`)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from bnmusic_bridge.errors import BNMusicError
from bnmusic_bridge.evaluation import (
    CATEGORY_MODES,
    DEFAULT_METHODS,
    NEEDED_LOUDNESS_COVERAGE,
    TARGET_LUFS,
    EvalConfig,
    EvalResult,
    NoiseClip,
    check_report_free,
    discover_noises,
    evaluate,
    markdown_table,
    method_spec,
    read_prompts,
    table1,
    write_report,
)
from bnmusic_bridge.frontends.args import EXIT_OK, add_render_args, build_request
from bnmusic_bridge.request import expand_path


def register(subparsers: Any) -> None:
    """Add the ``eval`` command to the ``bnmusic`` parser."""
    p = subparsers.add_parser(
        "eval",
        help="measure how well methods blend noise (the paper's Table 1 and ablation, and more)",
        description=(
            f"Normalise every noise to {TARGET_LUFS:g} LUFS, render it with each method, and "
            "report masking coverage, NMR, the loudness needed for "
            f"{NEEDED_LOUDNESS_COVERAGE * 100:g} % coverage, lambda, spectral and rhythmic "
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
        "--prompts", type=expand_path, help="text file, one prompt per line, cycled over the clips"
    )
    p.add_argument("--music-dir", type=expand_path, help="folder of music files for random-music")
    p.add_argument(
        "--track",
        type=expand_path,
        help="your own music file: adds the rows track-raw (looped as it is) and track-aligned "
        "(fitted to the noise's tempo and beat, then the alignment step)",
    )
    p.add_argument("--reference-dir", type=expand_path, help="folder of reference music for FAD/KL")
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
        help=f"noise normalisation, LUFS (default {TARGET_LUFS:g})",
    )
    p.add_argument(
        "--eval-coverage",
        type=float,
        default=NEEDED_LOUDNESS_COVERAGE,
        help="share of high-energy bins the loudness-for-coverage metric asks for (default "
        f"{NEEDED_LOUDNESS_COVERAGE:g}; --target-coverage is the render's coverage objective)",
    )
    p.add_argument("--out", type=expand_path, required=True, help="report folder")
    p.add_argument("--force", action="store_true", help="overwrite an existing report")
    p.add_argument("--no-plot", action="store_true", help="skip the PNGs")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    add_render_args(p)
    p.set_defaults(func=cmd_eval)


def eval_config(args: argparse.Namespace) -> EvalConfig:
    """The evaluation the flags ask for (methods checked, prompts read)."""
    request = build_request(args)
    methods = tuple(m.strip() for m in str(args.methods).split(",") if m.strip())
    for m in methods:
        method_spec(m)
    return EvalConfig(
        methods=methods,
        request=request,
        prompts=read_prompts(args.prompts) if args.prompts else (),
        music_dir=args.music_dir,
        track=args.track,
        reference_dir=args.reference_dir,
        embedding_model=args.embedding_model,
        target_lufs=args.target_lufs,
        target_coverage=args.eval_coverage,
    )


def run_with_progress(clips: list[NoiseClip], config: EvalConfig, quiet: bool) -> EvalResult:
    """:func:`~bnmusic_bridge.evaluation.evaluate` with a tqdm bar on stderr (one step per
    clip x method; hidden with ``quiet``)."""
    from tqdm import tqdm

    bar = tqdm(
        total=len(clips) * len(config.methods),
        desc="eval",
        unit="render",
        file=sys.stderr,
        disable=True if quiet else None,
    )

    def step(clip: NoiseClip, method: str) -> None:
        bar.set_postfix_str(f"{clip.name[:24]} / {method}")
        bar.update(1)

    try:
        return evaluate(clips, config, on_step=step)
    finally:
        bar.close()


def print_summary(result: EvalResult, written: list[Path]) -> None:
    """Skips and failures on stderr; the FAD/KL note, Table 1 (loudness normalised) and
    the files written on stdout."""
    for s in result.skipped:
        print(f"skipped {s.method}: {s.reason}", file=sys.stderr)
    for c, m, e in result.failures:
        print(f"failed {m} on {c}: {e}", file=sys.stderr)
    print(result.distribution_note)
    print(markdown_table(table1(result, "normalised")))
    for p in written:
        print(f"  {p}")


def cmd_eval(args: argparse.Namespace) -> int:
    """Run ``bnmusic eval`` (see :func:`register`)."""
    # 1. The evaluation and its clips
    config = eval_config(args)
    clips = discover_noises(args.noises, args.categories)
    plots = not args.no_plot
    # 2. Refuse to overwrite a report before rendering anything
    if not args.force:
        check_report_free(args.out, plots)
    # 3. Render and measure
    result = run_with_progress(clips, config, args.quiet)
    if not result.rows:
        problems = [f"{s.method}: {s.reason}" for s in result.skipped] + [
            f"{c}/{m}: {e}" for c, m, e in result.failures
        ]
        raise BNMusicError("nothing was measured: " + "; ".join(problems))
    # 4. Write the report. The raw argv is not in ``args``; when this process was started
    # as `bnmusic eval ...` the command is quoted into the report as it was typed.
    command = "bnmusic " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["eval"] else ""
    written = write_report(result, args.out, force=args.force, plots=plots, command=command)
    if not args.quiet:
        print_summary(result, written)
    return EXIT_OK
