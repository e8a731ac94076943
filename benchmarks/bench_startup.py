"""A short stem end to end, as the CLI runs it, against its pipeline time (issue 18).

Renders a 10 s stem (``examples/noise/train.wav`` tiled) with ``python -m bnmusic_bridge
render STEM --out DIR --force --quiet`` in a fresh subprocess each time (interpreter,
imports, render, outputs and picture, exit), default settings, and compares its wall time
with, in the same run:

* the pipeline time the report gives for that very render (its stage timings without
  ``startup``, the one-off imports: what the issue calls "the pipeline");
* a warm pipeline: ``render_file`` on the same stem in this process, after a warm-up
  render (no import or first-use cost at all).

Also, each repeat, a fresh interpreter that only imports what every render imports
(``imports-only``): that plus the pipeline is the floor of the CLI's wall time.

Arms, interleaved repeat by repeat so a change in the machine's load hits them alike:
``cli`` (defaults), ``cli-no-plot`` (``--no-plot``: what the picture costs) and, with
``--before DIR``, ``before``: the same command run from another checkout (e.g. the main
branch before this change). Every figure is a median over the repeats with min and max.

    python benchmarks/bench_startup.py [--repeats 5] [--seconds 10] [--before /work/main]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "n": len(values),
    }


def _make_stem(path: Path, seconds: float) -> None:
    import soundfile as sf

    audio, rate = sf.read(REPO / "examples" / "noise" / "train.wav", always_2d=True)
    n = int(seconds * rate)
    reps = int(np.ceil(n / audio.shape[0]))
    sf.write(path, np.tile(audio, (reps, 1))[:n], rate, subtype="PCM_24")


def _cli_run(checkout: Path, stem: Path, out: Path, extra: list[str]) -> dict[str, Any]:
    """One fresh ``python -m bnmusic_bridge render`` from ``checkout`` (its cwd shadows
    any installed copy); wall time and the report's timings."""
    cmd = [sys.executable, "-m", "bnmusic_bridge", "render", str(stem), "--out", str(out)]
    cmd += ["--force", "--quiet", *extra]
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    timings = json.loads((out / f"{stem.stem}.report.json").read_text())["timings_s"]
    startup = float(timings.get("startup", 0.0))
    return {
        "wall_s": wall,
        "report_total_s": float(timings["total"]),
        "report_startup_s": startup,
        # Without "startup" (this change's stage) the imports sit inside the stages.
        "report_pipeline_s": float(timings["total"]) - startup,
        "timings_s": timings,
    }


def _imports_run(checkout: Path) -> float:
    """Wall time of a fresh interpreter that only imports what every render imports
    (``pipeline.warm_up``) and exits: the floor no restructuring of the render removes."""
    # os._exit, as the CLI ends: no interpreter teardown in the figure.
    code = "from bnmusic_bridge.pipeline import warm_up; warm_up(); import os; os._exit(0)"
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=checkout, env=env, check=True)
    return time.perf_counter() - t0


def _commit(checkout: Path) -> str | None:
    proc = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    return proc.stdout.strip() or None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=10.0, help="stem length")
    ap.add_argument("--before", type=Path, help="another checkout to run the same command from")
    ap.add_argument("--name", default="startup", help="result file name (results/NAME.json)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_startup_") as tmp:
        tmp_path = Path(tmp)
        stem = tmp_path / "stem10.wav"
        _make_stem(stem, args.seconds)
        arms: dict[str, tuple[Path, list[str]]] = {
            "cli": (REPO, []),
            "cli-no-plot": (REPO, ["--no-plot"]),
        }
        if args.before is not None:
            arms["before"] = (args.before.resolve(), [])
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in arms}
        warm: list[float] = []
        imports: list[float] = []
        gaps: list[float] = []
        gap_where: list[str] = []

        sys.path.insert(0, str(REPO))
        from bnmusic_bridge.pipeline import render_file
        from bnmusic_bridge.request import RenderRequest
        from bnmusic_bridge.threads import default_threads, set_threads

        # The warm baseline runs with the CLI's default thread count, as the CLI does.
        threads = set_threads(default_threads())
        render_file(stem, RenderRequest())  # warm-up: imports and first-use caches

        for k in range(args.repeats):
            for name, (checkout, extra) in arms.items():
                out = tmp_path / f"out-{name}"
                runs[name].append(_cli_run(checkout, stem, out, extra))
                print(k, name, round(runs[name][-1]["wall_s"], 2), flush=True)
            imports.append(_imports_run(REPO))
            print(k, "imports only", round(imports[-1], 2), flush=True)
            events: list[tuple[float, str]] = []
            t0 = time.perf_counter()
            render_file(
                stem,
                RenderRequest(),
                progress=lambda s, f, ev=events: ev.append((time.perf_counter(), s)),
            )
            warm.append(time.perf_counter() - t0)
            # The longest wait between two progress events (where a cancel is noticed),
            # after startup.
            gap, where = max(
                (b[0] - a[0], f"{a[1]} -> {b[1]}")
                for a, b in zip(events, events[1:], strict=False)
                if b[1] != "startup"
            )
            gaps.append(gap)
            gap_where.append(where)
            print(k, "warm pipeline", round(warm[-1], 2), flush=True)

    def ratios(name: str, key: str) -> list[float]:
        return [r["wall_s"] / r[key] for r in runs[name]]

    summary: dict[str, Any] = {}
    warm_median = statistics.median(warm)
    for name in arms:
        rs = runs[name]
        summary[name] = {
            "wall_s": _spread([r["wall_s"] for r in rs]),
            "report_pipeline_s": _spread([r["report_pipeline_s"] for r in rs]),
            "report_startup_s": _spread([r["report_startup_s"] for r in rs]),
            "ratio_wall_over_report_pipeline": _spread(ratios(name, "report_pipeline_s")),
            "ratio_wall_over_warm_pipeline": _spread([r["wall_s"] / warm_median for r in rs]),
        }
    # The least a fresh process can take: its imports (a separate process) plus the
    # pipeline; the ratio that floor allows.
    pipeline = [r["report_pipeline_s"] for r in runs["cli"]]
    summary["imports_only_s"] = _spread(imports)
    summary["floor_ratio_imports_plus_pipeline_over_pipeline"] = _spread(
        [(i + p) / p for i, p in zip(imports, pipeline, strict=True)]
    )
    # What the CLI spends beyond that floor (picture, writing, parsing, exit), per repeat.
    summary["cli_wall_over_floor_s"] = _spread(
        [
            r["wall_s"] - i - r["report_pipeline_s"]
            for r, i in zip(runs["cli"], imports, strict=True)
        ]
    )
    if "before" in arms:
        summary["ratio_before_over_cli_wall"] = _spread(
            [b["wall_s"] / a["wall_s"] for a, b in zip(runs["cli"], runs["before"], strict=True)]
        )
    path = write_result(
        args.name,
        {
            "what": f"a {args.seconds:g} s stem (examples/noise/train.wav tiled) rendered end to "
            "end by a fresh `python -m bnmusic_bridge render --force --quiet` (default settings, "
            "procedural generator), against its pipeline time",
            "baselines": {
                "report_pipeline_s": "the same render's report: stage timings without 'startup' "
                "(for the 'before' arm, which has no 'startup' stage, its imports are inside)",
                "warm_pipeline_s": "render_file on the same stem in the benchmark process after a "
                "warm-up render (median of the repeats)",
            },
            "goal": "cli wall within 2x of its pipeline time",
            "threads": threads,
            "before": str(args.before) if args.before else None,
            "before_commit": _commit(args.before) if args.before else None,
            "commit": _commit(REPO),
            "warm_pipeline_s": _spread(warm),
            "imports_only": "a fresh `python -c` that imports what every render imports "
            "(pipeline.warm_up) and exits, run each repeat",
            "longest_progress_gap_s": {
                "what": "the longest time between two progress events of the warm render "
                "(a cancel waits at most this long), startup left out",
                **_spread(gaps),
                "between": gap_where,
            },
            "summary": summary,
            "runs": runs,
        },
    )
    print(json.dumps(summary, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
