"""Render a library of noise stems on a Ray cluster, audio by value (no shared folders).

    pip install "bnmusic-bridge[ray]"
    python examples/batch_ray.py STEMS... --out OUT_DIR [--preset NAME] [--address HOST:6379]

The same as ``bnmusic batch STEMS... --out OUT_DIR --preset NAME --backend ray``, spelled
out with the batch's building blocks: :func:`~bnmusic_bridge.batch.plan_batch` expands the
inputs and skips stems an earlier run finished; for each due stem this machine reads the
file (:func:`~bnmusic_bridge.batch.task.load_task`), a Ray actor renders the audio it is
sent (:class:`~bnmusic_bridge.batch.ray_backend.StemWorker`, which keeps its generator
loaded from stem to stem), and this machine writes the outputs
(:func:`~bnmusic_bridge.batch.task.finish_task`). See docs/batch.md.
"""

import argparse
import sys

from bnmusic_bridge.batch import plan_batch
from bnmusic_bridge.batch.ray_backend import connect, fetch, gpus_for, start_workers
from bnmusic_bridge.batch.task import TaskResult, finish_task, load_task
from bnmusic_bridge.presets import load_preset

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("stems", nargs="+", help="noise files, folders or glob patterns")
parser.add_argument("--out", required=True, help="output folder (on this machine)")
parser.add_argument("--preset", default="lofi-commute")
parser.add_argument("--address", default=None, help="Ray address (default: $RAY_ADDRESS or local)")
parser.add_argument("--workers", type=int, default=2, help="Ray actors (stems in flight)")
args = parser.parse_args()

preset = load_preset(args.preset)
plan = plan_batch(args.stems, args.out, preset.request, preset.export)
print(f"{len(plan.tasks)} to render, {len(plan.skipped)} done before, {len(plan.failed)} refused")
if not plan.tasks:
    sys.exit(1 if plan.failed else 0)
ray = connect(args.address)  # a clear error naming the address if it does not answer
workers = start_workers(ray, args.workers, gpus_for(preset.request), setup=())
failed = list(plan.failed)
pending = {}
queue = list(plan.tasks)
idle = list(workers)
while queue or pending:
    while queue and idle:
        task = queue.pop(0)
        loaded = load_task(task)  # hashed and decoded here: the worker sees no disk
        if isinstance(loaded, TaskResult):
            failed.append(loaded)
            continue
        worker = idle.pop()
        pending[worker.render.remote(loaded.stem, task.request, loaded.load_s)] = (
            task,
            loaded,
            worker,
        )
    if not pending:
        continue
    done, _ = ray.wait(list(pending), num_returns=1)
    task, loaded, worker = pending.pop(done[0])
    idle.append(worker)
    result = finish_task(task, loaded, fetch(ray, done[0]))  # written here, atomically
    print(
        f"{result.status:8s} {result.stem_name}: coverage {result.coverage}  {result.error or ''}"
    )
    if result.status == "failed":
        failed.append(result)
for result in failed:
    print(f"failed: {result.input_path}: {result.error}", file=sys.stderr)
sys.exit(1 if failed else 0)
