"""Whole-pipeline real-time factor with the embedded generator on the CPU.

Renders the shipped train recording tiled to 60 s and 180 s through
``bnmusic_bridge.render`` (procedural generator, default request) and reports seconds
per stage and the real-time factor (stem seconds per processing second; higher is
faster), with torch on 1 thread and on all cores in the same run, and peak memory.

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--durations", default="60,180", help="stem lengths in seconds")
    args = ap.parse_args()
    import torch

    from bnmusic_bridge import RenderRequest, render
    from bnmusic_bridge.audio import read_stem

    stem = read_stem(REPO / "examples" / "noise" / "train.wav")
    runs = []
    all_threads = torch.get_num_threads()
    for seconds in (float(s) for s in args.durations.split(",")):
        n = int(seconds * stem.sample_rate_hz)
        reps = int(np.ceil(n / stem.num_samples))
        noise = np.tile(stem.audio, (1, reps))[:, :n]
        for threads in (1, all_threads):
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
    path = write_result(
        "pipeline",
        {
            "what": "bnmusic_bridge.render, procedural generator, default request, examples/noise/train.wav tiled",
            "baseline": "the same render with torch limited to 1 thread (ratio = all-core RTF / 1-thread RTF)",
            "runs": runs,
            "ratios_all_cores_over_1_thread": {
                str(r1["stem_s"]): round(r2["real_time_factor"] / r1["real_time_factor"], 2)
                for r1, r2 in zip(runs[0::2], runs[1::2], strict=True)
            },
            "peak_rss_mib": round(peak_mib, 1),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
