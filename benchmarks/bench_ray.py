"""The same 20-stem batch on the local process pool and on a local Ray instance, side by
side; and a model's load cost on Ray: once per actor, not once per stem.

    python benchmarks/bench_ray.py [--repeats 3] [--stems 20] [--seconds 1.5]

Stems: two excerpts of ``--seconds`` from each real recording in ../shared/data/noise
(mono, 44.1 kHz). Both backends run ``run_batch`` with 2 workers on the same request
(embedded procedural generator, no plot, JSON lane), into a fresh folder each repeat.

Measured per backend and repeat:

- wall time of ``run_batch`` (Ray: after ``ray.init``, whose start-up is reported once);
- per stem: wall x workers / stems (worker-seconds per stem) and the overhead of Ray
  over the pool, (Ray wall - pool wall) / stems;
- peak memory, sampled every 0.2 s as the proportional set size (PSS, so the object
  store's shared pages are not counted once per process) of the driver, of the workers
  (pool processes; Ray's ``ray::`` worker processes) and of every process the driver
  started (Ray: with GCS, raylet and the other system processes).

Model load (``--model-stems``): the tiny random Stable Diffusion pipeline of
tests/tiny_sd.py as the ``riffusion`` generator (CPU, 64 px, 2 steps), the stems on 2
:class:`~bnmusic_bridge.batch.ray_backend.StemWorker` actors and, for contrast, as plain
Ray tasks with ``max_calls=1`` (what Ray gives a task that asks for a GPU: a fresh worker
process per call). Each reports how many generators its processes created (loads) and
the seconds they took (imports and weights).

Writes benchmarks/results/ray.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import soundfile

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]  # this checkout's package
from _common import write_result  # noqa: E402

NOISE = REPO.parent / "shared" / "data" / "noise"
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


# --------------------------------------------------------------------------------------
# Memory: PSS of the driver and its descendants, sampled on a thread


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def _pss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class MemorySampler:
    """Peak PSS (MB) of the driver, of the worker processes and of all descendants."""

    def __init__(self, is_worker: Any, period_s: float = 0.2) -> None:
        self.is_worker = is_worker
        self.period_s = period_s
        self.peak = {"driver_mb": 0.0, "workers_mb": 0.0, "all_processes_mb": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        me = os.getpid()
        kids = _children_map()
        todo, seen = list(kids.get(me, [])), []
        while todo:
            pid = todo.pop()
            seen.append(pid)
            todo.extend(kids.get(pid, []))
        driver = _pss_mb(me)
        per = {pid: _pss_mb(pid) for pid in seen}
        workers = sum(v for pid, v in per.items() if self.is_worker(_cmdline(pid)))
        for key, value in (
            ("driver_mb", driver),
            ("workers_mb", workers),
            ("all_processes_mb", driver + sum(per.values())),
        ):
            self.peak[key] = max(self.peak[key], value)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.period_s)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = {k: round(v, 1) for k, v in self.peak.items()}


def is_pool_worker(cmd: str) -> bool:
    return "multiprocessing" in cmd and "resource_tracker" not in cmd


RAY_AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")
"""Ray system processes that are named like workers."""


def is_ray_worker(cmd: str) -> bool:
    return cmd.startswith("ray::") and not cmd.startswith(RAY_AGENTS)


# --------------------------------------------------------------------------------------


def make_stems(folder: Path, count: int, seconds: float) -> list[Path]:
    """``count`` stems: excerpts of the real recordings, two per file (0.5 s and 3 s in)."""
    files = sorted(NOISE.glob("*.wav"))
    if not files:
        sys.exit(f"no recordings in {NOISE}")
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(count):
        src = files[k % len(files)]
        audio, rate = soundfile.read(src, dtype="float32", always_2d=True)
        start = int((0.5 if k < len(files) else 3.0) * rate)
        piece = audio[start : start + int(seconds * rate)]
        path = folder / f"{k:02d}_{src.stem}.wav"
        soundfile.write(path, piece, rate, subtype="PCM_16")
        out.append(path)
    return out


def spread(values: list[float]) -> dict[str, Any]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "runs": [round(v, 3) for v in values],
    }


def one_batch(stems, work: Path, name: str, request, export, **kw) -> dict[str, Any]:
    """One ``run_batch`` with 2 workers into a fresh folder: wall, per-stem time, peaks."""
    from bnmusic_bridge.batch import run_batch

    checker = is_ray_worker if kw.get("backend") == "ray" else is_pool_worker
    out = work / name
    with MemorySampler(checker) as mem:
        t0 = time.perf_counter()
        summary = run_batch(stems, out, request, export, jobs=2, **kw)
        wall = time.perf_counter() - t0
    assert summary.count("rendered") == len(stems), [r.error for r in summary.failures]
    shutil.rmtree(out)
    return {
        "wall_s": wall,
        "stem_s": statistics.mean(r.seconds for r in summary.results),
        "peak": mem.peak,
    }


def summarise(runs: list[dict[str, Any]], stems: int) -> dict[str, Any]:
    walls = [r["wall_s"] for r in runs]
    return {
        "wall_s": spread(walls),
        "worker_s_per_stem": spread([w * 2 / stems for w in walls]),
        "driver_s_per_stem_read_to_written": spread([r["stem_s"] for r in runs]),
        "peak_memory_pss_mb": {
            key: spread([r["peak"][key] for r in runs]) for key in runs[0]["peak"]
        },
    }


def model_loads(stems, work: Path) -> dict[str, Any]:
    """The tiny SD pipeline on 2 StemWorker actors vs plain tasks with max_calls=1."""
    import ray

    sys.path.insert(0, str(REPO / "tests"))
    from tiny_sd import save_tiny_sd_pipeline

    from bnmusic_bridge.batch import plan_batch
    from bnmusic_bridge.batch.ray_backend import StemWorker, run_on_ray
    from bnmusic_bridge.batch.task import LoadedStem, finish_task, load_task
    from bnmusic_bridge.export import ExportOptions
    from bnmusic_bridge.request import RenderRequest

    model = save_tiny_sd_pipeline(work / "tiny_sd")
    request = RenderRequest(
        generator="riffusion",
        model=str(model),
        device="cpu",
        local_files_only=True,
        generator_params={
            "resolution": 64,
            "outpaint_steps": 2,
            "inpaint_steps": 2,
            "inpaint_strength": 1.0,
            "outpaint_guidance": 0.0,
            "inpaint_guidance": 0.0,
        },
    )
    export = ExportOptions(plot=False, lane_formats=("json",))
    result: dict[str, Any] = {"stems": len(stems), "generator": "riffusion (tiny random SD, CPU)"}

    # Actors: the batch backend itself (num_gpus forced to 0: this machine has no GPU).
    plan = plan_batch(stems, work / "actors", request, export)
    stats: list[Any] = []
    done: list[Any] = []
    with MemorySampler(is_ray_worker) as mem:
        t0 = time.perf_counter()
        run_on_ray(plan.tasks, done.append, 2, None, 0.0, stats=stats)
        wall = time.perf_counter() - t0
    assert all(r.status == "rendered" for r in done), [r.error for r in done if not r.ok]
    result["actors"] = {
        "workers": len(stats),
        "generator_loads": sum(s.generator_loads for s in stats),
        "load_s_total": round(sum(s.load_s for s in stats), 2),
        "load_s_per_load": round(
            sum(s.load_s for s in stats) / max(1, sum(s.generator_loads for s in stats)), 2
        ),
        "stems_per_worker": [s.stems for s in stats],
        "wall_s": round(wall, 2),
        "peak_memory_pss_mb": mem.peak,
    }

    # Plain tasks, one fresh worker process per stem (Ray's max_calls=1 for GPU tasks).
    def render_in_fresh_process(stem: Any, req: Any, load_s: float) -> Any:
        worker = StemWorker()
        out = worker.render(stem, req, load_s)
        return out, worker.stats()

    task_fn = ray.remote(num_cpus=1, max_calls=1)(render_in_fresh_process)
    plan = plan_batch(stems, work / "tasks", request, export)
    loaded: list[tuple[Any, LoadedStem]] = []
    for t in plan.tasks:
        ls = load_task(t)
        assert isinstance(ls, LoadedStem), ls
        loaded.append((t, ls))
    with MemorySampler(is_ray_worker) as mem:
        t0 = time.perf_counter()
        refs = [task_fn.remote(ls.stem, t.request, ls.load_s) for t, ls in loaded]
        outs = ray.get(refs)
        wall = time.perf_counter() - t0
    task_stats = [s for _, s in outs]
    for (t, ls), (rendered, _) in zip(loaded, outs, strict=True):
        assert finish_task(t, ls, rendered).status == "rendered"
    loads = sum(s.generator_loads for s in task_stats)
    result["tasks_max_calls_1"] = {
        "processes": len({s.pid for s in task_stats}),
        "generator_loads": loads,
        "load_s_total": round(sum(s.load_s for s in task_stats), 2),
        "load_s_per_load": round(sum(s.load_s for s in task_stats) / max(1, loads), 2),
        "wall_s": round(wall, 2),
        "peak_memory_pss_mb": mem.peak,
    }
    return result


def payload_sizes(stem: Path, work: Path, request: Any, export: Any) -> dict[str, Any]:
    """Pickled bytes of what crosses the network for one stem: the decoded audio and
    request out, the render result back (and the input file, for scale)."""
    import pickle

    from bnmusic_bridge.batch import StemTask
    from bnmusic_bridge.batch.task import LoadedStem, load_task, render_loaded

    task = StemTask("s", str(stem), str(work / "sizes"), request, export)
    loaded = load_task(task)
    assert isinstance(loaded, LoadedStem), loaded
    result = render_loaded(loaded.stem, request, loaded.load_s)
    return {
        "input_file_bytes": stem.stat().st_size,
        "sent_audio_and_request_bytes": len(pickle.dumps((loaded.stem, request))),
        "returned_result_bytes": len(pickle.dumps(result)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stems", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--model-stems", type=int, default=20)
    args = ap.parse_args()

    import ray

    from bnmusic_bridge.export import ExportOptions
    from bnmusic_bridge.request import RenderRequest

    request = RenderRequest(prompt="lo-fi", seed=3)
    export = ExportOptions(plot=False, lane_formats=("json",))
    work = Path(tempfile.mkdtemp(prefix="bench_ray"))
    try:
        stems = make_stems(work / "stems", args.stems, args.seconds)
        sizes = payload_sizes(stems[0], work, request, export)
        t0 = time.perf_counter()
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=300 * 1024 * 1024,
            _temp_dir=tempfile.mkdtemp(prefix="bnray", dir="/tmp"),
        )
        start_s = time.perf_counter() - t0
        # Interleaved, pool then Ray, so a change in the machine's load hits both.
        pool_runs, ray_runs = [], []
        for r in range(args.repeats):
            pool_runs.append(one_batch(stems, work, f"pool{r}", request, export))
            ray_runs.append(one_batch(stems, work, f"ray{r}", request, export, backend="ray"))
        pool, on_ray = summarise(pool_runs, len(stems)), summarise(ray_runs, len(stems))
        ratio = [r["wall_s"] / p["wall_s"] for r, p in zip(ray_runs, pool_runs, strict=True)]
        overhead = [
            (r["wall_s"] - p["wall_s"]) / len(stems)
            for r, p in zip(ray_runs, pool_runs, strict=True)
        ]
        loads = model_loads(make_stems(work / "model_stems", args.model_stems, args.seconds), work)
        ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    path = write_result(
        "ray",
        {
            "benchmark": "benchmarks/bench_ray.py",
            "what": f"{args.stems} stems of {args.seconds} s (excerpts of ../shared/data/noise), "
            "procedural generator, no plot, JSON lane; run_batch with 2 workers: local process "
            "pool vs a local Ray instance (2 CPUs); repeats interleaved and paired pool/ray; "
            "every run_batch starts its own pool processes or Ray actors",
            "repeats": args.repeats,
            "ray_start_s": round(start_s, 2),
            "bytes_per_stem_over_the_object_store": sizes,
            "local_pool": pool,
            "ray": on_ray,
            "ray_over_pool_wall_ratio": spread(ratio),
            "ray_overhead_s_per_stem": spread(overhead),
            "model_load": loads,
            "notes": "PSS: proportional set size from /proc/<pid>/smaps_rollup, sampled every "
            "0.2 s; 'workers' = pool worker processes or Ray's worker processes (ray::IDLE, ray::StemWorker, ...; not its agents); "
            "'all_processes' adds the driver and every process it started (Ray: GCS, raylet, "
            "agents). Ray start-up (ray.init) is not in the Ray wall times. Load = a generator "
            "created in a process (imports of torch/diffusers and the weights), as counted "
            "by StemWorker.",
        },
    )
    print(path.read_text())


if __name__ == "__main__":
    main()
