"""One progress figure for a whole render: the pipeline's ``progress(stage, fraction)``
events turned into the share of the render done (0..1) and an estimate of the time left.

The pipeline reports each stage's own fraction (``analyse`` 0..1, then ``generate``
0..1, ...). A display that showed those would reset at every stage; :class:`RenderProgress`
weighs each stage by its expected share of the render's time (:data:`STAGE_WEIGHTS`) so
the figure only grows, and estimates the time left from the pace of the stages so far.
The CLI's bar and the OSC server's ``/bnmusic/progress`` messages both use it.

Light module: no numpy, nothing heavy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

STAGE_ORDER = (
    "startup",
    "analyse",
    "generate",
    "decode",
    "align",
    "effects",
    "amplify",
    "output",
    "write",
)
"""The stages in the order a render passes them: ``startup`` (one-off imports), the
pipeline's stages (the pipeline decodes and joins each window inside ``generate``; a
``decode`` stage is still weighed for callers that report one), and ``write`` (stems, lanes, picture and report; added by the front
ends around :func:`~bnmusic_bridge.export.write_outputs`)."""

STAGE_WEIGHTS: dict[str, float] = {
    "startup": 1.5,
    "analyse": 1.2,
    "generate": 0.8,
    "decode": 0.05,
    "align": 0.8,
    "effects": 0.3,
    "amplify": 0.8,
    "output": 0.1,
    "write": 0.8,
}
"""Expected seconds of each stage relative to the others: the embedded generator on a 10 s
stem on a 2-core machine (report timings of ``bench_startup``, rounded). Only the ratios
matter; a stage that is quicker or slower than expected only makes the bar's pace uneven,
the time-left estimate follows the real pace."""

MODEL_GENERATE_WEIGHT = 40.0
"""``generate``'s weight for a diffusion model (Riffusion): on a CPU it is most of the
render (tens of seconds per 5 s window against about a second for everything else)."""

MODEL_GENERATORS = ("riffusion", "riffusion-a2a", "outpaint-only")
"""Generators whose ``generate`` stage runs a diffusion model (as the pipeline's list)."""

MIN_DONE_FOR_ESTIMATE = 0.03
"""Share of the (non-startup) work that must be done before a time left is estimated."""
MIN_ELAPSED_FOR_ESTIMATE_S = 0.3


@dataclass(frozen=True)
class ProgressState:
    """Where a render stands.

    Attributes:
        stage: the stage now running.
        stage_fraction: its own progress, 0..1.
        overall: the share of the whole render done, 0..1; never decreases.
        elapsed_s: seconds since the first event.
        eta_s: estimated seconds left, or None while too little is done to tell.
    """

    stage: str
    stage_fraction: float
    overall: float
    elapsed_s: float
    eta_s: float | None


def stage_weights(
    request: Any = None, *, startup: bool = True, write: bool = True
) -> dict[str, float]:
    """The weights for a render of ``request`` (a RenderRequest, or None for the defaults).

    Args:
        request: its generator (a diffusion model makes ``generate`` dominate) and its
            effects (``effects`` is left out without them) are read.
        startup: whether the process still has to import torch and the rest (a warm
            OSC worker or batch process has not).
        write: whether ``write`` follows the render (the front ends' outputs).
    """
    weights = dict(STAGE_WEIGHTS)
    if request is not None:
        if getattr(request, "generator", None) in MODEL_GENERATORS:
            weights["generate"] = MODEL_GENERATE_WEIGHT
        if not getattr(request, "effects", None):
            del weights["effects"]
    if not startup:
        weights["startup"] = 0.0
    if not write:
        del weights["write"]
    return weights


class RenderProgress:
    """Turns ``(stage, fraction)`` events into a :class:`ProgressState`.

    Args:
        weights: expected relative time per stage (default :data:`STAGE_WEIGHTS`);
            stages not in it count for nothing (their events still update ``stage``).
        clock: seconds, monotonic (tests pass a fake one).
    """

    def __init__(
        self,
        weights: dict[str, float] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        w = dict(STAGE_WEIGHTS if weights is None else weights)
        order = [s for s in STAGE_ORDER if s in w] + [s for s in w if s not in STAGE_ORDER]
        total = sum(max(0.0, w[s]) for s in order) or 1.0
        self._order = order
        self._share = {s: max(0.0, w[s]) / total for s in order}
        self._before = {}  # share of the stages before each one
        acc = 0.0
        for s in order:
            self._before[s] = acc
            acc += self._share[s]
        self._clock = clock
        self._t0: float | None = None
        self._work_t0: float | None = None  # first event after startup
        self._overall = 0.0
        self._stage = ""
        self._fraction = 0.0

    def _done_share(self, stage: str, fraction: float) -> float | None:
        if stage not in self._share:
            return None
        return self._before[stage] + self._share[stage] * min(max(fraction, 0.0), 1.0)

    def update(self, stage: str, fraction: float) -> ProgressState:
        """Record an event; returns the state after it."""
        now = self._clock()
        if self._t0 is None:
            self._t0 = now
        if self._work_t0 is None and stage != "startup":
            self._work_t0 = now
        self._stage, self._fraction = stage, float(min(max(fraction, 0.0), 1.0))
        done = self._done_share(stage, self._fraction)
        if done is not None:
            self._overall = max(self._overall, done)
        return self.state(now)

    def state(self, now: float | None = None) -> ProgressState:
        """The state as of ``now`` (default: the clock's time)."""
        now = self._clock() if now is None else now
        elapsed = 0.0 if self._t0 is None else now - self._t0
        return ProgressState(
            stage=self._stage,
            stage_fraction=self._fraction,
            overall=self._overall,
            elapsed_s=elapsed,
            eta_s=self._eta(now),
        )

    def _eta(self, now: float) -> float | None:
        # Pace of the work after startup (imports do not scale with the stem), applied
        # to what is left.
        if self._work_t0 is None:
            return None
        startup = self._share.get("startup", 0.0)
        work_total = 1.0 - startup
        work_done = self._overall - startup
        spent = now - self._work_t0
        if work_total <= 0 or work_done < MIN_DONE_FOR_ESTIMATE * work_total:
            return None
        if spent < MIN_ELAPSED_FOR_ESTIMATE_S:
            return None
        return max(0.0, spent / work_done * (1.0 - self._overall))


def format_eta(eta_s: float | None) -> str:
    """``"12 s left"``, ``"2 min 5 s left"`` or ``""`` when unknown."""
    if eta_s is None:
        return ""
    s = int(round(eta_s))
    if s < 60:
        return f"{s} s left"
    return f"{s // 60} min {s % 60:02d} s left"


def sub_progress(
    progress: Callable[[str, float], None] | None, stage: str, start: float, end: float
) -> Callable[[float], None] | None:
    """A ``progress(fraction)`` for a step that runs from ``start`` to ``end`` of
    ``stage`` (None when ``progress`` is None)."""
    if progress is None:
        return None
    span = end - start

    def report(fraction: float) -> None:
        progress(stage, start + span * min(max(fraction, 0.0), 1.0))

    return report
