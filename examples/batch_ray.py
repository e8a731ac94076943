"""Render a library of noise stems on a Ray cluster: one independent task per stem.

    pip install "ray[default]"
    python examples/batch_ray.py STEMS... --out OUT_DIR [--preset NAME] [--address auto]
        [--gpus-per-stem 1]

The same as ``bnmusic batch STEMS... --out OUT_DIR --preset NAME --backend ray``, spelled
out: :func:`bnmusic_bridge.batch.plan_batch` expands the inputs and skips stems an
earlier run finished; each :class:`~bnmusic_bridge.batch.StemTask` names its input file,
output folder and parameters, and :func:`~bnmusic_bridge.batch.render_task` (a pure
function) renders it wherever Ray schedules it. Inputs and OUT_DIR must be on storage
every node sees at the same path (NFS, a mounted bucket). See docs/batch.md.
"""

import argparse
import sys

try:
    import ray
except ImportError:
    sys.exit('this example needs Ray: pip install "ray[default]"')

from bnmusic_bridge.batch import plan_batch, render_task
from bnmusic_bridge.presets import load_preset

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("stems", nargs="+", help="noise files, folders or glob patterns")
parser.add_argument("--out", required=True, help="output folder (shared storage)")
parser.add_argument("--preset", default="lofi-commute")
parser.add_argument("--address", default=None, help="Ray address (default: $RAY_ADDRESS or local)")
parser.add_argument(
    "--gpus-per-stem", type=float, default=0.0, help="1 for the riffusion generator"
)
args = parser.parse_args()

preset = load_preset(args.preset)
plan = plan_batch(args.stems, args.out, preset.request, preset.export)
print(f"{len(plan.tasks)} to render, {len(plan.skipped)} done before, {len(plan.failed)} refused")
ray.init(address=args.address)
# Ray reuses worker processes, so a model-based generator loads its weights once per worker.
remote_task = ray.remote(num_cpus=1, num_gpus=args.gpus_per_stem)(render_task)
pending = {remote_task.remote(task): task for task in plan.tasks}
failed = list(plan.failed)
while pending:
    done, _ = ray.wait(list(pending), num_returns=1)
    result = ray.get(done[0])
    del pending[done[0]]
    print(
        f"{result.status:8s} {result.stem_name}: coverage {result.coverage}  {result.error or ''}"
    )
    if result.status == "failed":
        failed.append(result)
for result in failed:
    print(f"failed: {result.input_path}: {result.error}", file=sys.stderr)
sys.exit(1 if failed else 0)
