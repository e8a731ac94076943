"""Per-stage wall and CPU (user, system) seconds of one CLI render, from this checkout.

Usage (from the repository root)::

    python benchmarks/profile_stages.py STEM.wav OUT_DIR [render options...]

Prints one line per stage: wall s, user s, system s and (user + system) / wall, the
share of a core the stage kept busy (above 1.0: more than one core). CPU seconds are
what a contended machine distorts least, so prototypes are compared on them.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path.cwd()))

from bnmusic_bridge import pipeline  # noqa: E402
from bnmusic_bridge.frontends.cli import main  # noqa: E402

_marks: list[tuple[str, float, float, float]] = []


def _mark(label: str) -> None:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    _marks.append((label, time.perf_counter(), ru.ru_utime, ru.ru_stime))


_start = pipeline._Progress.start
_done = pipeline._Progress.done


def _patched_start(self: pipeline._Progress, stage: str) -> None:
    _mark(stage)
    _start(self, stage)


def _patched_done(self: pipeline._Progress) -> dict[str, float]:
    _mark("<end>")
    return _done(self)


pipeline._Progress.start = _patched_start  # type: ignore[method-assign]
pipeline._Progress.done = _patched_done  # type: ignore[method-assign]


def run(argv: list[str]) -> dict[str, dict[str, float]]:
    stem, out = argv[0], argv[1]
    _mark("<process>")
    code = main(["render", stem, "--out", out, "--force", "-q", *argv[2:]])
    _mark("<write-end>")
    if code:
        raise SystemExit(code)
    rows: dict[str, dict[str, float]] = {}
    for (label, t0, u0, s0), (_, t1, u1, s1) in zip(_marks, _marks[1:], strict=False):
        name = {"<process>": "pre", "<end>": "write"}.get(label, label)
        rows[name] = {"wall": t1 - t0, "user": u1 - u0, "sys": s1 - s0}
    first, last = _marks[0], _marks[-1]
    rows["all"] = {
        "wall": last[1] - first[1],
        "user": last[2] - first[2],
        "sys": last[3] - first[3],
    }
    return rows


if __name__ == "__main__":
    table = run(sys.argv[1:])
    for name, r in table.items():
        cores = (r["user"] + r["sys"]) / r["wall"] if r["wall"] > 0 else 0.0
        print(
            f"{name:10s} wall {r['wall']:7.2f}  user {r['user']:7.2f}  sys {r['sys']:6.2f}  cores {cores:4.2f}"
        )
    print(json.dumps(table))
