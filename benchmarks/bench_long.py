"""Long stems: wall time, real-time factor and peak memory of whole renders by length.

Each render is the CLI's (``python -m bnmusic_bridge render STEM --out DIR``, default
settings, the picture and every default output included) in a fresh process, timed from
outside; its peak resident memory is the child's own ``ru_maxrss`` (``os.wait4``). The
stems are the real recordings in ``shared/data/noise`` joined and looped
(``_long_stems.write_long_stem``) to 10 s, 60 s, 10 min and 60 min, mono 44.1 kHz.
Both threshold models are measured (``spreading``, the default, and ``smr``).

One untimed warm-up render (10 s) comes first (bytecode, file cache). Short stems are
rendered ``--repeats`` times (median, with min and max); 10 min and longer once. The
JSON (``results/long.json``) is rewritten after every render, so a long run that is cut
short keeps its finished rows. Ratios are against the 60 s row of the same model in the
same run: ``time_per_minute_ratio`` (goal: within 1.2 of it from 1 to 60 minutes) and
``peak_rss_ratio``; goals: peak RSS under 1.5 GB at every length, the 60-minute render
faster than 10x real time (real-time factor under 0.1).

Usage::

    python benchmarks/bench_long.py                      # 10 s, 60 s, 10 min
    python benchmarks/bench_long.py --lengths 10,60,600,3600
    python benchmarks/bench_long.py --lengths 3600 --append   # add rows to long.json
    python benchmarks/bench_long.py --lengths "" --append     # re-summarise only

Under contention (a shared machine) wall time measures the neighbours too: the JSON
also gives each render's CPU time (user + system of the child) and per-minute CPU
ratios.
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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _common import RESULTS, write_result  # noqa: E402
from _long_stems import write_long_stem  # noqa: E402

GOAL_PEAK_RSS_MB = 1500.0
GOAL_PER_MINUTE_SPREAD = 0.2
GOAL_HOUR_RTF = 0.1


def render_once(stem: Path, model: str, out: Path, src: Path = ROOT) -> dict[str, Any]:
    """One CLI render in a fresh process (the package from ``src``): wall time (s), the
    child's peak RSS (MB) and CPU time (s), and the report's stage timings."""
    cmd = [sys.executable, "-m", "bnmusic_bridge", "render", str(stem), "--out", str(out)]
    cmd += ["--force", "-q", "--threshold-model", model]
    env = {**os.environ, "PYTHONPATH": str(src)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=src, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    row: dict[str, Any] = {
        "wall_s": round(wall, 3),
        "peak_rss_mb": round(usage.ru_maxrss / 1024.0, 1),  # Linux: kB
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "exit_status": proc.returncode,
    }
    if proc.returncode != 0:
        row["error"] = err.decode(errors="replace")[-2000:]
        return row
    report = json.loads((out / f"{stem.stem}.report.json").read_text())
    row["stage_timings_s"] = report.get("timings_s")
    return row


def summarise(rows: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """Median wall and CPU time of a length's renders (with min and max), real-time
    factor, time per minute of audio and the highest peak RSS."""
    good = [r for r in rows if r["exit_status"] == 0]
    if not good:
        return {"failed": True, "error": rows[-1].get("error", "")[-500:] if rows else ""}
    walls = [r["wall_s"] for r in good]
    cpus = [r["cpu_s"] for r in good]
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    return {
        "renders": len(good),
        "wall_s": wall,
        "wall_s_min": min(walls),
        "wall_s_max": max(walls),
        "cpu_s": cpu,
        "cpu_s_min": min(cpus),
        "cpu_s_max": max(cpus),
        "real_time_factor": round(wall / seconds, 4),
        "cpu_real_time_factor": round(cpu / seconds, 4),
        "time_per_minute_s": round(wall / (seconds / 60.0), 3),
        "cpu_per_minute_s": round(cpu / (seconds / 60.0), 3),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in good),
    }


def add_ratios(rows: dict[str, dict[str, Any]]) -> None:
    """Ratios against the 60 s row of the same model (same run). With a 10 s row, also
    the marginal CPU per minute, ``(cpu - cpu_10s) / (length - 10 s)``: the render's
    cost without its fixed start-up (imports, the picture), which the plain per-minute
    figure spreads over short stems."""
    short = rows.get("10")
    if short and not short.get("failed"):
        for key, row in rows.items():
            if float(key) > 10.0 and not row.get("failed"):
                extra_min = (float(key) - 10.0) / 60.0
                row["marginal_cpu_per_minute_s"] = round(
                    (row["cpu_s"] - short["cpu_s"]) / extra_min, 3
                )
    base = rows.get("60")
    if not base or base.get("failed"):
        return
    if "marginal_cpu_per_minute_s" in base:
        for row in rows.values():
            if "marginal_cpu_per_minute_s" in row:
                row["marginal_cpu_per_minute_ratio"] = round(
                    row["marginal_cpu_per_minute_s"] / base["marginal_cpu_per_minute_s"], 3
                )
    for row in rows.values():
        if row.get("failed"):
            continue
        row["time_per_minute_ratio"] = round(
            row["time_per_minute_s"] / base["time_per_minute_s"], 3
        )
        row["cpu_per_minute_ratio"] = round(row["cpu_per_minute_s"] / base["cpu_per_minute_s"], 3)
        row["peak_rss_ratio"] = round(row["peak_rss_mb"] / base["peak_rss_mb"], 3)


def build_results(raw: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Summaries per model and length from the raw renders."""
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for key in dict.fromkeys(_key(r) for r in raw):
        mine = [r for r in raw if _key(r) == key]
        rows: dict[str, dict[str, Any]] = {}
        for seconds in sorted({r["seconds"] for r in mine}):
            rows[f"{seconds:g}"] = summarise([r for r in mine if r["seconds"] == seconds], seconds)
        add_ratios(rows)
        results[key] = rows
    # this code against the baseline code, same length and model, same run
    for key, rows in results.items():
        base = results.get(f"{key}@baseline")
        if base is None:
            continue
        for length, row in rows.items():
            other = base.get(length)
            if other and not other.get("failed") and not row.get("failed"):
                row["vs_baseline"] = {
                    "peak_rss_ratio": round(row["peak_rss_mb"] / other["peak_rss_mb"], 3),
                    "cpu_ratio": round(row["cpu_s"] / other["cpu_s"], 3),
                    "wall_ratio": round(row["wall_s"] / other["wall_s"], 3),
                }
    return results


def _key(row: dict[str, Any]) -> str:
    return row["model"] + ("@baseline" if row.get("code") == "baseline" else "")


def goals(results: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model, rows in results.items():
        if model.endswith("@baseline"):
            continue
        ok = [r for r in rows.values() if not r.get("failed")]
        minute_rows = [r for k, r in rows.items() if float(k) >= 60 and not r.get("failed")]

        def spread(key: str, minute_rows: list[dict[str, Any]] = minute_rows) -> Any:
            ratios = [r[key] for r in minute_rows if key in r]
            if not ratios:
                return None, None
            return [min(ratios), max(ratios)], all(
                abs(x - 1.0) <= GOAL_PER_MINUTE_SPREAD for x in ratios
            )

        wall_range, wall_ok = spread("time_per_minute_ratio")
        cpu_range, cpu_ok = spread("cpu_per_minute_ratio")
        marginal_range, marginal_ok = spread("marginal_cpu_per_minute_ratio")
        hour = rows.get("3600")
        out[model] = {
            "peak_rss_under_1500_mb": all(r["peak_rss_mb"] < GOAL_PEAK_RSS_MB for r in ok),
            "max_peak_rss_mb": max((r["peak_rss_mb"] for r in ok), default=None),
            "time_per_minute_ratio_range": wall_range,
            "time_per_minute_within_20_percent": wall_ok,
            "cpu_per_minute_ratio_range": cpu_range,
            "cpu_per_minute_within_20_percent": cpu_ok,
            "marginal_cpu_per_minute_ratio_range": marginal_range,
            "marginal_cpu_per_minute_within_20_percent": marginal_ok,
            "hour_rtf_under_0.1": hour["real_time_factor"] < GOAL_HOUR_RTF
            if hour and not hour.get("failed")
            else None,
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", default="10,60,600", help="stem lengths in seconds")
    parser.add_argument("--models", default="spreading,smr")
    parser.add_argument("--repeats", type=int, default=3, help="renders of stems under 10 min")
    parser.add_argument("--name", default="long", help="results/NAME.json")
    parser.add_argument("--scratch", default=None, help="folder for stems and outputs")
    parser.add_argument(
        "--append",
        action="store_true",
        help="keep the renders already in results/NAME.json (e.g. add the 60-minute rows)",
    )
    parser.add_argument(
        "--baseline-src",
        default=None,
        help="a checkout of the code before (e.g. `git archive main`): every render is "
        "made with it too, rows keyed MODEL@baseline, ratios in vs_baseline",
    )
    args = parser.parse_args()
    lengths = [float(x) for x in args.lengths.split(",") if x]
    codes = [("this", ROOT)]
    if args.baseline_src:
        codes.append(("baseline", Path(args.baseline_src).resolve()))
    models = args.models.split(",")
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="bench_long_"))
    scratch.mkdir(parents=True, exist_ok=True)
    stems = {}
    for seconds in sorted(set(lengths) | {10.0}) if lengths else []:
        path = scratch / f"joined_{int(seconds)}s.wav"
        if not path.exists():
            write_long_stem(path, seconds)
        stems[seconds] = path
    raw: list[dict[str, Any]] = []
    if args.append and (RESULTS / f"{args.name}.json").exists():
        raw = json.loads((RESULTS / f"{args.name}.json").read_text()).get("renders", [])
    data: dict[str, Any] = {
        "what": "whole CLI renders of joined real recordings, default settings, fresh process each",
        "lengths_s": sorted({r["seconds"] for r in raw} | set(lengths)),
        "models": models,
        "repeats_under_10_min": args.repeats,
        "goals": {
            "peak_rss_mb_under": GOAL_PEAK_RSS_MB,
            "time_per_minute_within": GOAL_PER_MINUTE_SPREAD,
            "hour_real_time_factor_under": GOAL_HOUR_RTF,
        },
        "renders": raw,
    }
    if lengths:
        # warm-up (not recorded): bytecode, the file cache, the generator's tables
        render_once(stems[10.0], models[0], scratch / "warmup")
    for seconds in lengths:
        for model in models:
            repeats = args.repeats if seconds < 600 else 1
            for k in range(repeats):
                for code, src in codes:
                    row = render_once(stems[seconds], model, scratch / f"out_{model}", src)
                    row.update({"seconds": seconds, "model": model, "repeat": k, "code": code})
                    raw.append(row)
                    shown = {k2: v for k2, v in row.items() if k2 != "stage_timings_s"}
                    print(json.dumps(shown), flush=True)
                    data["results"] = build_results(raw)
                    data["goal_check"] = goals(data["results"])
                    write_result(args.name, data)
    data["results"] = build_results(raw)
    data["goal_check"] = goals(data["results"])
    write_result(args.name, data)
    path = RESULTS / f"{args.name}.json"
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
