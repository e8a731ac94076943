"""Messages the server sends unasked: a job's progress and failure as they happen, and
after each finished job its lambda lane, its coverage meter, its warnings and its done
message.

Progress and failures go out from the job threads at once. Finished jobs queue up for
one pusher thread (:meth:`Pusher.run`), which streams each job's lane (time-tagged
bundles) and meter under one rate limit over all jobs, then sends its done message, in
that order, so a client sees every lane and meter message before ``/bnmusic/done``
(unless it honours ``playback`` time tags).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from bnmusic_bridge.result import SHORTFALL_PREFIX

from . import protocol as P
from .jobs import Job, Outcome
from .routing import Outbox
from .transport import TokenBucket

log = logging.getLogger("bnmusic.osc")

LANE_POINTS_PER_DATAGRAM = 16
DONE_OUTPUTS = ("music", "blended", "lambda_csv", "lambda_json", "report")
"""Outputs the done message names in fixed places (others follow as kind/path pairs)."""


WARNING_KINDS = {SHORTFALL_PREFIX: "shortfall", "prompt: ": "prompt"}
"""``/bnmusic/warning`` kinds by the warning's first words; any other is "render"."""


def warning_kind(text: str) -> str:
    """The kind of a render warning for ``/bnmusic/warning``: "shortfall" (the blend
    fell short of its target), "prompt" (prompt words the generator does not know) or
    "render" (anything else)."""
    for prefix, kind in WARNING_KINDS.items():
        if text.startswith(prefix):
            return kind
    return "render"


class Pusher:
    """The job events of :class:`~.jobs.JobManager` (it implements
    :class:`~.jobs.JobEvents`), sent to each job's sender through ``out``.

    Args:
        out: where pushes go.
        stream_rate_hz: most lane/meter datagrams per second, over all jobs.
        lane_timetags: "playback" or "immediate" (see :class:`~.config.ServerConfig`).
        closing: once set, streams stop waiting on the rate limit.
    """

    def __init__(
        self, out: Outbox, stream_rate_hz: float, lane_timetags: str, closing: threading.Event
    ) -> None:
        self.out = out
        self.stream_rate_hz = stream_rate_hz
        self.lane_timetags = lane_timetags
        self.closing = closing
        self._finished: queue.Queue[tuple[Job, Outcome] | None] = queue.Queue()

    # -- job events (job threads) --------------------------------------------------

    def progress(self, job: Job, stage: str, fraction: float) -> None:
        # job_id, stage, the stage's fraction (as before), then the whole job's share done
        # and the seconds left (-1: not known yet): added at the end so clients that read
        # the first three arguments keep working.
        eta = -1.0 if job.eta_s is None else float(job.eta_s)
        self._push(
            job,
            P.encode_message(
                P.PREFIX + "progress",
                job.job_id,
                stage,
                float(fraction),
                float(job.overall),
                eta,
            ),
        )

    def failed(self, job: Job, code: str, message: str) -> None:
        self._push(job, self.out.error_packet(job.job_id, code, message))

    def done(self, job: Job, outcome: Outcome) -> None:
        self._finished.put((job, outcome))

    # -- the pusher thread -----------------------------------------------------------

    def run(self) -> None:
        """Stream finished jobs until :meth:`close`; then send what is left its done
        message without streams."""
        bucket = TokenBucket(self.stream_rate_hz)
        while True:
            item = self._finished.get()
            if item is None:
                self._drain()
                return
            try:
                self._stream(*item, bucket)
            except Exception:  # noqa: BLE001 - keep pushing for other jobs
                log.exception("streaming job %s failed", item[0].key)
                self._send_done(*item, lane_points=0, meter_points=0)

    def close(self) -> None:
        """Ask :meth:`run` to finish (jobs already queued still get their done message)."""
        self._finished.put(None)

    def _drain(self) -> None:
        while True:
            try:
                rest = self._finished.get_nowait()
            except queue.Empty:
                return
            if rest is not None:
                self._send_done(*rest, lane_points=0, meter_points=0)

    def _push(self, job: Job, packet: bytes) -> None:
        self.out.reply(job.origin, packet)

    def _stream(self, job: Job, outcome: Outcome, bucket: TokenBucket) -> None:
        lane_points = self._stream_lane(job, outcome, bucket)
        meter_points = 0
        for t_s, cov in zip(outcome.meter_times_s, outcome.meter_coverage, strict=True):
            bucket.take(self.closing)
            self._push(
                job, P.encode_message(P.PREFIX + "meter", job.job_id, float(t_s), float(cov))
            )
            meter_points += 1
        for text in outcome.warnings:
            self._push(
                job, P.encode_message(P.PREFIX + "warning", job.job_id, warning_kind(text), text)
            )
        self._send_done(job, outcome, lane_points=lane_points, meter_points=meter_points)

    def _stream_lane(self, job: Job, outcome: Outcome, bucket: TokenBucket) -> int:
        times, gains = outcome.lane_times_s, outcome.lane_gain_db
        origin_s = time.time()
        for start in range(0, len(times), LANE_POINTS_PER_DATAGRAM):
            inner = []
            for t_s, g_db in zip(
                times[start : start + LANE_POINTS_PER_DATAGRAM],
                gains[start : start + LANE_POINTS_PER_DATAGRAM],
                strict=True,
            ):
                tag = P.ntp_timetag(
                    origin_s + float(t_s) if self.lane_timetags == "playback" else None
                )
                inner.append(
                    P.encode_bundle(
                        tag,
                        [P.encode_message(P.PREFIX + "lane", job.job_id, float(t_s), float(g_db))],
                    )
                )
            bucket.take(self.closing)
            self._push(job, P.encode_bundle(P.ntp_timetag(None), inner))
        return len(times)

    def _send_done(
        self, job: Job, outcome: Outcome, *, lane_points: int, meter_points: int
    ) -> None:
        out = outcome.outputs
        extra: list[Any] = []
        for kind in sorted(k for k in out if k not in DONE_OUTPUTS):
            extra.extend([kind, out[kind]])
        self._push(
            job,
            P.encode_message(
                P.PREFIX + "done",
                job.job_id,
                *(out.get(k, "") for k in DONE_OUTPUTS),
                outcome.coverage,
                outcome.nmr_db,
                outcome.lambda_min_db,
                outcome.lambda_max_db,
                lane_points,
                meter_points,
                *extra,
            ),
        )
