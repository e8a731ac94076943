"""What each ``/bnmusic/`` address does: one function per address, and :data:`HANDLERS`,
the table the dispatcher (:mod:`.dispatch`) calls them from.

A handler gets the server's :class:`Context` and the :class:`Call` (the message, its
sender and its checked arguments). It answers a query, or checks a render and queues
it; it never waits on a render. Refusals are raised as
:class:`~bnmusic_bridge.errors.BNMusicError` (mostly :class:`~.protocol.OscError`); the
dispatcher turns them into ``/bnmusic/error`` replies.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnmusic_bridge import __version__
from bnmusic_bridge.errors import BNMusicError
from bnmusic_bridge.export import ExportOptions
from bnmusic_bridge.request import RenderRequest, check_request

from . import protocol as P
from .auth import Gatekeeper
from .config import ServerConfig
from .jobs import Job, JobManager
from .paths import FolderQuota, RootSet, confine_request
from .preset_cache import PresetCache
from .routing import Outbox, Subscriptions
from .transport import Endpoint

PRESET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
"""A preset name a client may send: a name, never a path."""
DONE_LANE_FORMATS = ("csv", "json")
"""Lane files every job writes: the done message always names them."""
NO_OVERRIDES = P.Overrides({}, {}, {}, None)


@dataclass(frozen=True)
class Context:
    """What handlers may use.

    Attributes:
        config: the server's configuration (base request and export, limits).
        roots: the folders client paths must stay in.
        jobs: the job queue and table.
        subscriptions: redirects and monitors.
        presets: the cached preset list.
        out: where replies go.
        closing: set once the server stops (no new jobs).
        gate: the shared secret and who has presented it.
        quota: new output folders per client host.
        model_generators: every generator that loads model weights (the pipeline's
            list); clients get one only when the operator allowed it.
    """

    config: ServerConfig
    roots: RootSet
    jobs: JobManager
    subscriptions: Subscriptions
    presets: PresetCache
    out: Outbox
    closing: threading.Event
    gate: Gatekeeper = dataclasses.field(default_factory=lambda: Gatekeeper(None))
    quota: FolderQuota = dataclasses.field(default_factory=lambda: FolderQuota(64))
    model_generators: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Call:
    """One message for one handler.

    Attributes:
        message: the decoded message.
        origin: who sent it.
        values: its positional arguments by parameter name, checked and converted
            (optional ones only when given).
        rest: the arguments after the positional ones (ping's, render_ex's pairs).
    """

    message: P.Message
    origin: Endpoint
    values: dict[str, Any]
    rest: list[P.OscArg]


Handler = Callable[[Context, Call], None]


# --------------------------------------------------------------------------------------
# Queries


def on_ping(ctx: Context, call: Call) -> None:
    ctx.out.reply(call.origin, P.echo_message(P.PREFIX + "pong", call.message))


def on_auth(ctx: Context, call: Call) -> None:
    ctx.gate.authenticate(call.origin, call.values["secret"])
    ctx.out.reply(call.origin, P.encode_message(P.PREFIX + "auth/reply", "ok"))


def on_version(ctx: Context, call: Call) -> None:
    ctx.out.reply(
        call.origin, P.encode_message(P.PREFIX + "version/reply", P.API_VERSION, __version__)
    )


def on_status(ctx: Context, call: Call) -> None:
    job_id = call.values.get("job_id")
    if job_id is not None:
        s = ctx.jobs.status(P.job_key(job_id), call.origin.sender)
        ctx.out.reply(
            call.origin,
            P.encode_message(
                P.PREFIX + "status/job",
                job_id,
                s.state,
                s.stage,
                float(s.fraction),
                s.queue_position,
            ),
        )
        return
    queued, running, finished, active = ctx.jobs.overview(call.origin.sender)
    args: list[Any] = [queued, running, finished, ctx.config.max_queued]
    for s in active[: P.MAX_LIST_ENTRIES]:
        args.extend([s.job_id, s.state])
    ctx.out.reply(call.origin, P.encode_message(P.PREFIX + "status/all", *args))


def on_presets(ctx: Context, call: Call) -> None:
    entries = ctx.presets.entries()
    args: list[Any] = [len(entries)]
    for name, description in entries[: P.MAX_LIST_ENTRIES]:
        args.extend([name, description])
    ctx.out.reply(call.origin, P.encode_message(P.PREFIX + "presets/reply", *args))


# --------------------------------------------------------------------------------------
# Jobs


def on_render(ctx: Context, call: Call) -> None:
    queue_render(ctx, call, extended=False)


def on_render_ex(ctx: Context, call: Call) -> None:
    queue_render(ctx, call, extended=True)


def on_cancel(ctx: Context, call: Call) -> None:
    job_id = call.values["job_id"]
    previous = ctx.jobs.cancel(P.job_key(job_id), call.origin.sender)
    ctx.out.reply(call.origin, P.encode_message(P.PREFIX + "cancel/reply", job_id, previous))


def queue_render(ctx: Context, call: Call, *, extended: bool) -> None:
    """Check a render request, queue the job and ack it; the job starts after the ack.

    Args:
        extended: ``/bnmusic/render_ex`` (an output folder and override pairs).

    Raises:
        BNMusicError: any refusal, its ``where`` set to the job id.
    """
    job_id: P.OscArg = call.values["job_id"]
    try:
        job = build_job(ctx, call, extended=extended)
    except BNMusicError as e:
        e.where = job_id  # type: ignore[attr-defined]
        raise
    ctx.jobs.submit(job)
    ctx.out.reply(job.origin, P.encode_message(P.PREFIX + "ack", job_id))
    job.released.set()


def build_job(ctx: Context, call: Call, *, extended: bool) -> Job:
    """The job a render request asks for, every path, parameter and preset checked."""
    values = call.values
    # 1. Refuse new work while stopping.
    if ctx.closing.is_set():
        raise P.OscError("shutting_down", "the server is shutting down; no new jobs")
    # 2. The input must be a readable file inside the roots.
    noise = ctx.roots.input_file(values["noise_path"])
    # 3. The preset (an argument, or render_ex's "preset" key) gives the base.
    overrides = P.parse_overrides(call.rest) if extended else NO_OVERRIDES
    request, export = job_preset(ctx.config, values.get("preset") or overrides.preset)
    # 4. The request: arguments and overrides on top, checked before the ack.
    request = request.replace(**request_changes(request, values, overrides))
    check_job_request(request, call.message.address)
    check_model_generator(ctx, request)
    # Every path the request names (generator parameters, effect files, ...) is
    # resolved and confined; the job reads the resolved forms.
    request = confine_request(request, ctx.roots)
    # 5. The export options: overrides, never overwriting, CSV and JSON lanes always.
    export = dataclasses.replace(export, **overrides.export, force=False)
    export = dataclasses.replace(
        export, lane_formats=tuple(dict.fromkeys([*DONE_LANE_FORMATS, *export.lane_formats]))
    )
    export.check()
    # 6. The output folder: render_ex's, else the server's --out, else next to the input.
    out_dir = output_dir(ctx, values.get("out_dir") or "", noise)
    ctx.quota.reserve(call.origin.host, ctx.roots.new_folders(out_dir))
    return Job(
        values["job_id"], P.job_key(values["job_id"]), noise, out_dir, request, export, call.origin
    )


def request_changes(
    request: RenderRequest, values: dict[str, Any], overrides: P.Overrides
) -> dict[str, Any]:
    """RenderRequest changes from render's prompt/seed arguments and render_ex's pairs."""
    changes = dict(overrides.request)
    if values.get("prompt"):
        changes["prompt"] = values["prompt"]
    if values.get("seed") is not None:
        changes["seed"] = values["seed"]
    if overrides.generator_params:
        changes["generator_params"] = {
            **dict(request.generator_params),
            **overrides.generator_params,
        }
    return changes


def output_dir(ctx: Context, out_text: str, noise: Path) -> Path:
    """Where a job writes: ``out_text`` if given, else ``--out``, else next to the input
    (each checked against the roots)."""
    if out_text:
        return ctx.roots.output_dir(out_text)
    if ctx.config.out_dir is not None:
        return ctx.roots.output_dir(str(ctx.config.out_dir))
    return ctx.roots.output_dir(str(noise.parent))


def allowed_model_generators(config: ServerConfig) -> frozenset[str]:
    """The model generators clients may choose: the base request's and ``--allow-generator``."""
    return frozenset({config.request.generator, *config.model_generators})


def check_model_generator(ctx: Context, request: RenderRequest) -> None:
    """Refuse a generator that loads model weights unless the operator allowed it (the
    weights then come from the server's own ``--model``, from disk only).

    Raises:
        OscError: ``forbidden``.
    """
    if (
        request.generator in ctx.model_generators
        and request.generator not in allowed_model_generators(ctx.config)
    ):
        raise P.OscError(
            "forbidden",
            f"generator {request.generator!r} loads model weights; this server allows it only "
            f"when started with --generator {request.generator} or --allow-generator "
            f"{request.generator}",
        )


def job_preset(config: ServerConfig, name: str | None) -> tuple[RenderRequest, ExportOptions]:
    """(RenderRequest, ExportOptions) of preset ``name``, or the server's base when
    None; the model fields stay the server's.

    Raises:
        OscError: ``unknown_preset`` (not a name, or no such preset).
    """
    base_request, base_export = config.request, config.export
    if not name:
        return base_request, base_export
    if not PRESET_NAME.match(name) or name.endswith(".toml"):
        raise P.OscError(
            "unknown_preset",
            f"preset {name!r}: give a preset name (letters, digits, _ . -), not a path",
        )
    from bnmusic_bridge.presets import load_preset

    try:
        preset = load_preset(name, presets_dir=config.presets_dir)
    except BNMusicError as e:
        raise P.OscError("unknown_preset", str(e)) from e
    # The model is the server's: presets choose prompts and parameters, not weights.
    owned = {k: getattr(base_request, k) for k in P.SERVER_OWNED_FIELDS}
    return preset.request.replace(**owned), preset.export


def check_job_request(request: RenderRequest, where: str) -> None:
    """Refuse a bad request before the ack: ranges, and the generator's own check of its
    parameters (no weights are loaded)."""
    from bnmusic_bridge.presets import check_generator

    check_request(request)
    check_generator(request.generator, request.generator_params, where)


# --------------------------------------------------------------------------------------
# Subscriptions


def on_subscribe(ctx: Context, call: Call) -> None:
    values, origin = call.values, call.origin
    scope = values.get("scope") or "sender"
    target = ctx.subscriptions.subscribe(
        origin, values["host"] or origin.host, values["port"], scope
    )
    ctx.out.send(
        target, P.encode_message(P.PREFIX + "subscribe/reply", target.host, target.port, scope)
    )


def on_unsubscribe(ctx: Context, call: Call) -> None:
    values, origin = call.values, call.origin
    if "host" in values and "port" in values:
        removed = ctx.subscriptions.unsubscribe(
            origin, values["host"] or origin.host, values["port"]
        )
    else:
        removed = ctx.subscriptions.unsubscribe(origin, None, None)
    ctx.out.reply(origin, P.encode_message(P.PREFIX + "unsubscribe/reply", removed))


HANDLERS: dict[str, Handler] = {
    P.PREFIX + "ping": on_ping,
    P.PREFIX + "auth": on_auth,
    P.PREFIX + "version": on_version,
    P.PREFIX + "render": on_render,
    P.PREFIX + "render_ex": on_render_ex,
    P.PREFIX + "cancel": on_cancel,
    P.PREFIX + "status": on_status,
    P.PREFIX + "presets": on_presets,
    P.PREFIX + "subscribe": on_subscribe,
    P.PREFIX + "unsubscribe": on_unsubscribe,
}
"""Address -> handler, one for each of :data:`~.protocol.ADDRESSES`."""
