"""Whole-pipeline real-time factor with the embedded generator on the CPU.

Renders the shipped train recording tiled to 60 s and 180 s through
``bnmusic_bridge.render`` (procedural generator, default request) and reports seconds
per stage and the real-time factor (stem seconds per processing second; higher is
faster), with torch on 1 thread, on the default (``bnmusic_bridge.threads``) and on all
cores in the same run, after a warm-up render (so one-off imports land in no arm), and
peak memory.

    python benchmarks/bench_pipeline.py [--durations 60,180]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's package, not an installed copy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--durations", default="60,180", help="stem lengths in seconds")
    args = ap.parse_args()
    import torch

    from bnmusic_bridge import RenderRequest, render
    from bnmusic_bridge.audio import read_stem
    from bnmusic_bridge.threads import default_threads

    stem = read_stem(REPO / "examples" / "noise" / "train.wav")
    runs = []
    all_threads = torch.get_num_threads()
    # Warm-up before any timing: one-off imports and first-use caches would otherwise
    # land in the first arm.
    t0 = time.perf_counter()
    render(stem.audio, stem.sample_rate_hz, RenderRequest(seed=1))
    warm_up_s = time.perf_counter() - t0
    arms = sorted({1, default_threads(), all_threads})
    for seconds in (float(s) for s in args.durations.split(",")):
        n = int(seconds * stem.sample_rate_hz)
        reps = int(np.ceil(n / stem.num_samples))
        noise = np.tile(stem.audio, (1, reps))[:, :n]
        for threads in arms:
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            res = render(noise, stem.sample_rate_hz, RenderRequest(seed=1))
            wall = time.perf_counter() - t0
            runs.append(
                {
                    "stem_s": seconds,
                    "torch_threads": threads,
                    "wall_s": round(wall, 3),
                    "real_time_factor": round(seconds / wall, 2),
                    "stages_s": {k: round(v, 3) for k, v in res.timings_s.items()},
                    "windows": res.details.generation_windows,
                    "coverage": round(res.coverage, 4),
                }
            )
            print(runs[-1])
    torch.set_num_threads(all_threads)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    def rtf(seconds: float, threads: int) -> float:
        return next(
            r["real_time_factor"]
            for r in runs
            if r["stem_s"] == seconds and r["torch_threads"] == threads
        )

    lengths = sorted({r["stem_s"] for r in runs})
    path = write_result(
        "pipeline",
        {
            "what": "bnmusic_bridge.render, procedural generator, default request, examples/noise/train.wav tiled",
            "baseline": "the same render with torch limited to 1 thread, same run "
            "(ratio = RTF at N threads / RTF at 1 thread)",
            "warm_up_s": round(warm_up_s, 3),
            "thread_arms": {
                "default": default_threads(),
                "all_cores": all_threads,
            },
            "runs": runs,
            "ratios_over_1_thread": {
                str(s): {str(t): round(rtf(s, t) / rtf(s, 1), 2) for t in arms} for s in lengths
            },
            "peak_rss_mib": round(peak_mib, 1),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
