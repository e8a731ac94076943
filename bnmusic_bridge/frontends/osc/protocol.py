"""The ``/bnmusic/`` OSC address space: decoding, argument checks, reply encoding.

Nothing here touches a socket (python-osc's lesson: routing apart from sockets). The
dispatcher (:mod:`.dispatch`) feeds raw packets to :func:`decode_packet`, looks the
address up in :data:`ADDRESSES`, checks the arguments with :func:`check_args`, and the
handlers answer with the ``encode_*`` helpers. Every refusal is an :class:`OscError`
whose ``code`` goes into a ``/bnmusic/error`` reply (:func:`encode_error`); nothing is
dropped silently.

Argument values on the wire: OSC type tags ``i`` (int32), ``h`` (int64), ``f`` (float32),
``d`` (float64), ``s``/``S`` (string), ``T``/``F`` (true/false), ``N`` (nil), ``b`` (blob),
``t`` (time tag), ``c`` (char), ``r`` (RGBA), ``m`` (MIDI), ``I`` (impulse). Arrays
(``[``/``]``) are refused. Numbers are accepted in any numeric tag where the parameter
allows it (DAWs often send every number as float32), see :func:`coerce`.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.parsing import osc_types

from bnmusic_bridge.errors import BNMusicError

API_VERSION = "1.4"
"""Version of the address space in docs/osc.md. Minor: additions; major: breaking."""
PREFIX = "/bnmusic/"
MAX_PACKET_BYTES = 8192
"""Largest packet the server reads (bytes). Paths and parameters fit easily; audio never
travels inside packets."""
MAX_BUNDLE_DEPTH = 4
MAX_MESSAGES_PER_PACKET = 32
MAX_JOB_ID_CHARS = 64
MAX_LIST_ENTRIES = 100
"""Longest list of (name, value) pairs in one reply (status/all, presets)."""
MAX_ERROR_MESSAGE_CHARS = 1000
"""Longest message text in a ``/bnmusic/error`` reply (characters)."""

_BUNDLE_TAG = b"#bundle\x00"
_IMMEDIATELY = struct.pack(">Q", 1)
_NTP_UNIX_OFFSET_S = 2_208_988_800


class OscError(BNMusicError):
    """A message was refused. ``code`` is one of :data:`ERROR_CODES`; ``where`` is the
    address (or job id) the error reply names."""

    code = "bad_arguments"

    def __init__(self, code: str, message: str, where: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.where = where


ERROR_CODES = {
    "bad_packet": "the packet is not valid OSC (garbage, truncated, misaligned, bad SLIP)",
    "packet_too_large": f"the packet is larger than {MAX_PACKET_BYTES} bytes",
    "unknown_address": "no such address (patterns/wildcards are not supported)",
    "bad_arguments": "wrong type tags, missing or extra arguments, bad values",
    "bad_parameter": "a render parameter is unknown or out of range",
    "path_outside_root": "the path leaves the server's --root folders",
    "path_not_found": "the input file does not exist or is not a regular file",
    "path_unreadable": "the input file or output folder cannot be read / written",
    "unauthorized": "this server needs /bnmusic/auth with its shared secret first (or the secret was wrong)",
    "not_owner": "the job belongs to another client (jobs answer only to the sender that queued them)",
    "forbidden": "the server's operator did not allow this (a model generator, monitor subscriptions)",
    "quota_exceeded": "too many new output folders (per client), or too many new levels at once",
    "timeout": "the server closed a TCP connection that stayed idle (or did not authenticate in time)",
    "busy": "the job queue is full; retry later",
    "duplicate_job": "a job with this id was queued before (ids are unique for the server's lifetime)",
    "unknown_job": "no job with this id is known",
    "unknown_preset": "no preset with this name",
    "shutting_down": "the server is stopping and takes no new jobs",
    "bad_audio": "the input is not readable audio, silent, too short, ...",
    "output_exists": "no fresh output name could be found",
    "output_failed": "the outputs could not be written (a full disk, ...); the message says which set survived",
    "model_not_found": "the generator's weights are not on this machine",
    "generator_failed": "the generator failed (including out of memory)",
    "cluster_unreachable": "(--backend ray) the Ray cluster does not answer; the message names its address",
    "cancelled": "the job was cancelled (by /bnmusic/cancel or server shutdown)",
    "internal": "an unexpected error in the server (a bug); the server keeps running",
    "error": "any other bnmusic error",
}


# --------------------------------------------------------------------------------------
# Decoding


@dataclass(frozen=True)
class OscArg:
    """One argument as received: its type tag and Python value."""

    tag: str
    value: Any


@dataclass(frozen=True)
class Message:
    """A decoded OSC message.

    Attributes:
        address: the OSC address.
        args: arguments in order.
        tail: the raw bytes from the type-tag string to the end (used to echo ``ping``
            arguments byte for byte).
    """

    address: str
    args: tuple[OscArg, ...]
    tail: bytes

    @property
    def tags(self) -> str:
        return "".join(a.tag for a in self.args)


_NO_DATA_TAGS = {"T": True, "F": False, "N": None, "I": math.inf}


def decode_packet(data: bytes) -> list[Message]:
    """Decode one UDP datagram (or SLIP frame) into its messages, bundles flattened.

    Bundle time tags are ignored on input: every message runs when it arrives.

    Raises:
        OscError: ``packet_too_large``, or ``bad_packet`` for anything that is not valid
            OSC (``where`` holds the address when it could be read).
    """
    if len(data) > MAX_PACKET_BYTES:
        raise OscError(
            "packet_too_large", f"packet of {len(data)} bytes; at most {MAX_PACKET_BYTES} are read"
        )
    out: list[Message] = []
    _decode_into(bytes(data), out, depth=0)
    return out


def _decode_into(data: bytes, out: list[Message], depth: int) -> None:
    if not data:
        raise OscError("bad_packet", "empty packet")
    if len(data) % 4:
        raise OscError("bad_packet", f"packet length {len(data)} is not a multiple of 4 bytes")
    if data.startswith(_BUNDLE_TAG):
        if depth >= MAX_BUNDLE_DEPTH:
            raise OscError("bad_packet", f"bundles nested deeper than {MAX_BUNDLE_DEPTH}")
        if len(data) < 16:
            raise OscError("bad_packet", "bundle shorter than its 16-byte header")
        index = 16
        while index < len(data):
            if index + 4 > len(data):
                raise OscError("bad_packet", "bundle element size is truncated")
            (size,) = struct.unpack(">i", data[index : index + 4])
            index += 4
            if size <= 0 or size % 4 or index + size > len(data):
                raise OscError("bad_packet", f"bundle element size {size} is invalid")
            _decode_into(data[index : index + size], out, depth + 1)
            index += size
        return
    if data[:1] != b"/":
        raise OscError("bad_packet", "packet is neither an OSC message ('/...') nor a '#bundle'")
    if len(out) >= MAX_MESSAGES_PER_PACKET:
        raise OscError("bad_packet", f"more than {MAX_MESSAGES_PER_PACKET} messages in one packet")
    out.append(decode_message(data))


def decode_message(data: bytes) -> Message:
    """Decode one OSC message (address, type tags, arguments) strictly."""
    try:
        address, index = osc_types.get_string(data, 0)
    except (osc_types.ParseError, UnicodeDecodeError) as e:
        raise OscError("bad_packet", f"unreadable address ({e})") from e
    if not address.startswith("/") or not address.isprintable() or " " in address:
        raise OscError("bad_packet", f"invalid OSC address {address[:80]!r}")
    tail = data[index:]
    if index >= len(data):
        return Message(address, (), b"")
    try:
        tags, index = osc_types.get_string(data, index)
    except (osc_types.ParseError, UnicodeDecodeError) as e:
        raise OscError(
            "bad_packet", f"{address}: unreadable type-tag string ({e})", where=address
        ) from e
    if not tags.startswith(","):
        raise OscError(
            "bad_packet",
            f"{address}: type-tag string {tags[:40]!r} must start with ','",
            where=address,
        )
    args: list[OscArg] = []
    try:
        for tag in tags[1:]:
            value, index = _read_arg(tag, data, index, address)
            args.append(OscArg(tag, value))
    except (osc_types.ParseError, struct.error, IndexError, UnicodeDecodeError, ValueError) as e:
        raise OscError(
            "bad_packet",
            f"{address}: arguments do not match type tags {tags!r} ({e})",
            where=address,
        ) from e
    if index != len(data):
        raise OscError(
            "bad_packet",
            f"{address}: {len(data) - index} bytes left over after the arguments of type tags {tags!r}",
            where=address,
        )
    return Message(address, tuple(args), tail)


def _read_arg(tag: str, data: bytes, index: int, address: str) -> tuple[Any, int]:
    if tag in _NO_DATA_TAGS:
        return _NO_DATA_TAGS[tag], index
    if tag in ("i", "c"):
        value, index = osc_types.get_int(data, index)
        return (chr(value) if tag == "c" and 0 <= value < 0x110000 else value), index
    if tag == "h":
        return osc_types.get_int64(data, index)
    if tag == "f":
        return osc_types.get_float(data, index)
    if tag == "d":
        return osc_types.get_double(data, index)
    if tag in ("s", "S"):
        return osc_types.get_string(data, index)
    if tag == "b":
        if index + 4 > len(data):
            raise osc_types.ParseError("blob size is truncated")
        (size,) = struct.unpack(">i", data[index : index + 4])
        end = index + 4 + size
        if size < 0 or end > len(data):
            raise osc_types.ParseError(f"blob size {size} exceeds the packet")
        return data[index + 4 : end], index + 4 + size + (-size % 4)
    if tag in ("t", "r", "m"):
        width = 8 if tag == "t" else 4
        if index + width > len(data):
            raise osc_types.ParseError(f"'{tag}' argument is truncated")
        return data[index : index + width], index + width
    if tag in "[]":
        raise OscError(
            "bad_arguments", f"{address}: OSC arrays ('[', ']') are not supported", where=address
        )
    raise OscError("bad_packet", f"{address}: unknown type tag {tag!r}", where=address)


# --------------------------------------------------------------------------------------
# Encoding


@dataclass(frozen=True)
class Typed:
    """An argument with an explicit type tag (``Typed("f", 0.5)``)."""

    tag: str
    value: Any


def _tagged(value: Any) -> tuple[str, Any]:
    if isinstance(value, (Typed, OscArg)):
        return value.tag, value.value
    if isinstance(value, bool):
        return ("T" if value else "F"), value
    if isinstance(value, str):
        return "s", value
    if isinstance(value, bytes):
        return "b", value
    if isinstance(value, int):
        return ("i" if -(2**31) <= value < 2**31 else "h"), value
    if isinstance(value, float):
        return "f", value
    if value is None:
        return "N", None
    raise TypeError(f"cannot encode {type(value).__name__} {value!r} as an OSC argument")


def encode_message(address: str, *args: Any) -> bytes:
    """An OSC message as bytes. Python ``str``/``bytes``/``int``/``float``/``bool``/``None``
    map to ``s``/``b``/``i`` (``h`` past 32 bits)/``f``/``T``-``F``/``N``; wrap in :class:`Typed` (or
    pass an :class:`OscArg`) to choose the tag."""
    builder = OscMessageBuilder(address=address)
    for arg in args:
        tag, value = _tagged(arg)
        if tag == "S":
            tag = "s"
        if tag == "f" and not math.isfinite(value):
            # Non-finite floats are legal OSC but confuse many DAW parsers.
            value = float("nan") if math.isnan(value) else math.copysign(3.4e38, value)
        if tag in ("c", "I", "t", "r", "m"):
            raise TypeError(f"encode_message does not write type tag {tag!r}")
        builder.add_arg(value, tag)
    return builder.build().dgram


def encode_error(where: Any, code: str, message: str) -> bytes:
    """``/bnmusic/error where code message``: ``where`` is a job id (echoed with its
    type tag), an address or ``#packet``; ``code`` one of :data:`ERROR_CODES`."""
    return encode_message(PREFIX + "error", where, code, message[:MAX_ERROR_MESSAGE_CHARS])


def echo_message(address: str, received: Message) -> bytes:
    """``received``'s arguments, byte for byte, under a new ``address`` (ping -> pong)."""
    return osc_types.write_string(address) + (received.tail or osc_types.write_string(","))


def ntp_timetag(unix_time_s: float | None) -> bytes:
    """An OSC time tag (NTP 32.32 fixed point) for a Unix time; None -> "immediately"."""
    if unix_time_s is None:
        return _IMMEDIATELY
    ntp = unix_time_s + _NTP_UNIX_OFFSET_S
    seconds = int(ntp)
    fraction = int((ntp - seconds) * 2**32) & 0xFFFFFFFF
    return struct.pack(">II", seconds, fraction)


def timetag_to_unix(tag: bytes) -> float | None:
    """Inverse of :func:`ntp_timetag` (None for "immediately")."""
    if tag == _IMMEDIATELY:
        return None
    seconds, fraction = struct.unpack(">II", tag)
    return seconds - _NTP_UNIX_OFFSET_S + fraction / 2**32


def encode_bundle(timetag: bytes, elements: Iterable[bytes]) -> bytes:
    """An OSC bundle: ``#bundle``, the 8-byte time tag, then size-prefixed elements
    (messages or bundles, as bytes)."""
    parts = [_BUNDLE_TAG, timetag]
    for element in elements:
        parts.append(struct.pack(">i", len(element)))
        parts.append(element)
    return b"".join(parts)


def read_bundle_timetags(data: bytes) -> list[tuple[float | None, Message]]:
    """Every message of a packet with the time tag of the bundle that holds it (Unix
    seconds; None for "immediately" or a bare message). For clients and tests."""
    out: list[tuple[float | None, Message]] = []

    def walk(chunk: bytes, tag: float | None) -> None:
        if chunk.startswith(_BUNDLE_TAG):
            inner = timetag_to_unix(chunk[8:16])
            index = 16
            while index < len(chunk):
                (size,) = struct.unpack(">i", chunk[index : index + 4])
                walk(chunk[index + 4 : index + 4 + size], inner)
                index += 4 + size
        else:
            out.append((tag, decode_message(chunk)))

    walk(data, None)
    return out


# --------------------------------------------------------------------------------------
# The address table and argument checks


@dataclass(frozen=True)
class Param:
    """One positional argument: ``kind`` is "str", "int", "float", "bool" or "job_id"."""

    name: str
    kind: str
    optional: bool = False


@dataclass(frozen=True)
class AddressSpec:
    """An address the server answers.

    Attributes:
        address: the full OSC address.
        params: positional arguments (optional ones last).
        rest: None (no more arguments), "any" (anything, e.g. ping) or "pairs"
            (key/value pairs, e.g. render_ex's overrides).
        meaning: one line for docs/osc.md.
        replies: what comes back.
    """

    address: str
    params: tuple[Param, ...]
    rest: str | None
    meaning: str
    replies: str

    def signature(self) -> str:
        parts = [f"[{p.name}]" if p.optional else p.name for p in self.params]
        if self.rest == "pairs":
            parts.append("[key value]...")
        elif self.rest == "any":
            parts.append("[any]...")
        return " ".join(parts)


def _spec(
    address: str, params: Sequence[Param], rest: str | None, meaning: str, replies: str
) -> AddressSpec:
    return AddressSpec(PREFIX + address, tuple(params), rest, meaning, replies)


_JOB = Param("job_id", "job_id")
ADDRESSES: dict[str, AddressSpec] = {
    s.address: s
    for s in (
        _spec(
            "ping",
            (),
            "any",
            "liveness check",
            "/bnmusic/pong with the same arguments, byte for byte",
        ),
        _spec(
            "auth",
            (Param("secret", "str"),),
            None,
            "authenticate this sender (its UDP address and port, or its TCP connection) with the server's shared secret",
            "/bnmusic/auth/reply s:ok",
        ),
        _spec(
            "version",
            (),
            None,
            "API and package version",
            "/bnmusic/version/reply s:api_version s:package_version",
        ),
        _spec(
            "render",
            (
                _JOB,
                Param("noise_path", "str"),
                Param("preset", "str", True),
                Param("prompt", "str", True),
                Param("seed", "int", True),
            ),
            None,
            "queue a render of a noise stem (outputs next to it, or in the server's --out)",
            "/bnmusic/ack at once; later progress, lane, meter, then /bnmusic/done or /bnmusic/error",
        ),
        _spec(
            "render_ex",
            (_JOB, Param("noise_path", "str"), Param("out_dir", "str")),
            "pairs",
            "render with an output folder and parameter overrides (key value pairs)",
            "as /bnmusic/render",
        ),
        _spec(
            "cancel",
            (_JOB,),
            None,
            "cancel a queued or running job",
            "/bnmusic/cancel/reply job_id previous_state; the job ends with /bnmusic/error job_id cancelled",
        ),
        _spec(
            "status",
            (Param("job_id", "job_id", True),),
            None,
            "state of one job, or of all",
            "/bnmusic/status/job (one) or /bnmusic/status/all (all)",
        ),
        _spec(
            "presets",
            (),
            None,
            "list the presets",
            "/bnmusic/presets/reply i:count [s:name s:description]...",
        ),
        _spec(
            "subscribe",
            (Param("host", "str"), Param("port", "int"), Param("scope", "str", True)),
            None,
            "send your replies and pushes to host:port instead of to you (scope 'sender', default), or a copy of every reply and push to anyone (scope 'all', a monitor)",
            "/bnmusic/subscribe/reply host port scope, sent to the new target",
        ),
        _spec(
            "unsubscribe",
            (Param("host", "str", True), Param("port", "int", True)),
            None,
            "drop your subscription (or the one naming host:port)",
            "/bnmusic/unsubscribe/reply i:removed",
        ),
    )
}


def coerce(arg: OscArg, kind: str) -> Any:
    """Convert an argument to ``kind`` or raise ValueError saying what was expected.

    - "str": ``s``/``S``.
    - "int": ``i``/``h``; ``f``/``d`` only when integral (DAWs send floats).
    - "float": any of ``i h f d``; must be finite.
    - "bool": ``T``/``F``, numbers 0/1, strings true/false/yes/no/on/off/1/0.
    - "job_id": ``s``/``S`` (1 to 64 printable characters) or ``i``/``h``; the
      :class:`OscArg` itself is returned so replies echo it with the same tag.
    - "float?": like "float", or ``N`` / the string "none" for no value.
    """
    tag, value = arg.tag, arg.value
    if kind == "str":
        if tag in ("s", "S"):
            return value
        raise ValueError("a string (type tag s)")
    if kind == "int":
        if tag in ("i", "h"):
            return int(value)
        if tag in ("f", "d") and math.isfinite(value) and float(value).is_integer():
            return int(value)
        raise ValueError("an integer (type tag i, h, or an integral f)")
    if kind in ("float", "float?"):
        if kind == "float?" and (tag == "N" or (tag in ("s", "S") and value.lower() == "none")):
            return None
        if tag in ("i", "h", "f", "d") and math.isfinite(value):
            # An 'f' argument is float32: 0.9 arrives as 0.8999999761581421. Its shortest
            # decimal form is what the client meant (and what errors should quote).
            return float(f"{value:.7g}") if tag == "f" else float(value)
        raise ValueError(
            "a finite number (type tag f, d, i or h)" + (" or nil" if kind == "float?" else "")
        )
    if kind == "bool":
        if tag in ("T", "F"):
            return bool(value)
        if tag in ("i", "h", "f", "d") and value in (0, 1):
            return bool(value)
        if tag in ("s", "S") and value.lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.lower()]
        raise ValueError("true/false (type tag T/F, 0/1 or the string true/false)")
    if kind == "job_id":
        if tag in ("s", "S") and 0 < len(value) <= MAX_JOB_ID_CHARS and value.isprintable():
            return arg
        if tag in ("i", "h"):
            return arg
        raise ValueError(
            f"a job id (a string of 1 to {MAX_JOB_ID_CHARS} printable characters, or an integer)"
        )
    raise AssertionError(f"unknown parameter kind {kind!r}")


_BOOL_WORDS = {
    "true": True,
    "false": False,
    "yes": True,
    "no": False,
    "on": True,
    "off": False,
    "1": True,
    "0": False,
}


def check_args(spec: AddressSpec, message: Message) -> tuple[dict[str, Any], list[OscArg]]:
    """Check ``message``'s arguments against ``spec``.

    Returns:
        (named values of the positional parameters given, the remaining arguments).

    Raises:
        OscError: ``bad_arguments`` naming the argument, its type tag and what was
            expected (missing, extra or wrongly typed).
    """
    args = message.args
    required = sum(not p.optional for p in spec.params)
    usage = f"{spec.address} {spec.signature()}".rstrip()
    if len(args) < required:
        missing = spec.params[len(args)].name
        raise OscError(
            "bad_arguments",
            f"{spec.address}: missing argument '{missing}' (got {len(args)}, need {required}); usage: {usage}",
        )
    if spec.rest is None and len(args) > len(spec.params):
        raise OscError(
            "bad_arguments",
            f"{spec.address}: {len(args)} arguments, at most {len(spec.params)}; usage: {usage}",
        )
    values: dict[str, Any] = {}
    for i, (param, arg) in enumerate(zip(spec.params, args, strict=False)):
        try:
            values[param.name] = coerce(arg, param.kind)
        except ValueError as e:
            raise OscError(
                "bad_arguments",
                f"{spec.address}: argument {i + 1} '{param.name}' has type tag '{arg.tag}'"
                f" ({_show(arg.value)}); expected {e}",
            ) from None
    rest = list(args[len(spec.params) :])
    if spec.rest == "pairs" and len(rest) % 2:
        raise OscError(
            "bad_arguments",
            f"{spec.address}: overrides must come in key value pairs; got {len(rest)} values",
        )
    return values, rest


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def job_key(job_id: OscArg) -> str:
    """The text a job id is known by (``"7"`` and ``7`` name the same job)."""
    return str(job_id.value)


# --------------------------------------------------------------------------------------
# render_ex overrides

SERVER_OWNED_FIELDS = ("model", "device", "dtype", "local_files_only")
"""RenderRequest fields a client may not change: the server owns the model."""
EXPORT_KEYS = {"bit_depth": "int", "file_type": "str", "lane_formats": "str", "plot": "bool"}
PARAM_PREFIX = "param."


@dataclass(frozen=True)
class Overrides:
    """The key/value pairs of ``/bnmusic/render_ex``, sorted into where they go.

    Attributes:
        request: RenderRequest field changes (typed).
        generator_params: generator parameters (``param.NAME`` keys).
        export: ExportOptions changes (bit_depth, file_type, lane_formats, plot).
        preset: preset name, or None for the server's.
    """

    request: Mapping[str, Any]
    generator_params: Mapping[str, Any]
    export: Mapping[str, Any]
    preset: str | None


def request_field_kinds() -> dict[str, str]:
    """Client-settable RenderRequest fields and their kinds ("str", "int", "float",
    "bool", "float?"), read from the dataclass so new fields appear by themselves."""
    from bnmusic_bridge.request import RenderRequest

    simple = {
        "str": "str",
        "int": "int",
        "float": "float",
        "bool": "bool",
        "float | None": "float?",
    }
    kinds = {}
    for f in dataclasses.fields(RenderRequest):
        kind = simple.get(str(f.type))
        if kind is not None and f.name not in SERVER_OWNED_FIELDS:
            kinds[f.name] = kind
    return kinds


def parse_overrides(pairs: Sequence[OscArg], address: str = PREFIX + "render_ex") -> Overrides:
    """Sort ``key value`` pairs into request, generator, export and preset changes.

    Raises:
        OscError: ``bad_arguments`` (a key that is not a string, a repeated key, a value
            of the wrong type) or ``bad_parameter`` (an unknown or server-owned key).
    """
    kinds = request_field_kinds()
    request: dict[str, Any] = {}
    params: dict[str, Any] = {}
    export: dict[str, Any] = {}
    preset: str | None = None
    seen: set[str] = set()
    for i in range(0, len(pairs), 2):
        key_arg, value_arg = pairs[i], pairs[i + 1]
        if key_arg.tag not in ("s", "S"):
            raise OscError(
                "bad_arguments",
                f"{address}: override key at argument {i + 4} has type tag '{key_arg.tag}'; keys are strings",
            )
        key = key_arg.value
        if key in seen:
            raise OscError("bad_arguments", f"{address}: override '{key}' is given twice")
        seen.add(key)
        try:
            if key in kinds:
                request[key] = coerce(value_arg, kinds[key])
            elif key.startswith(PARAM_PREFIX) and len(key) > len(PARAM_PREFIX):
                if value_arg.tag not in ("i", "h", "f", "d", "s", "S", "T", "F"):
                    raise ValueError("a number, string or true/false")
                params[key[len(PARAM_PREFIX) :]] = value_arg.value
            elif key in EXPORT_KEYS:
                export[key] = coerce(value_arg, EXPORT_KEYS[key])
            elif key == "preset":
                preset = coerce(value_arg, "str") or None
            elif key in SERVER_OWNED_FIELDS:
                raise OscError(
                    "bad_parameter",
                    f"{address}: '{key}' belongs to the server (bnmusic serve --{key.replace('_', '-')}); "
                    "clients cannot change it",
                )
            elif key in ("effects", "generator_params"):
                raise OscError(
                    "bad_parameter",
                    f"{address}: '{key}' cannot be set over OSC; use a preset "
                    f"({'param.NAME value' if key == 'generator_params' else 'effects come from presets'})",
                )
            else:
                known = sorted([*kinds, *EXPORT_KEYS, "preset", PARAM_PREFIX + "NAME"])
                raise OscError(
                    "bad_parameter",
                    f"{address}: unknown override '{key}'; known: {', '.join(known)}",
                )
        except ValueError as e:
            raise OscError(
                "bad_arguments",
                f"{address}: override '{key}' has type tag '{value_arg.tag}' ({_show(value_arg.value)}); expected {e}",
            ) from None
    if "lane_formats" in export:
        export["lane_formats"] = tuple(
            f.strip() for f in str(export["lane_formats"]).split(",") if f.strip()
        )
    return Overrides(request, params, export, preset)
