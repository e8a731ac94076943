"""From a received packet to its handlers, and every refusal to an error reply.

The dispatcher knows nothing of sockets (python-osc's lesson): the transport hands it
packets and their senders; it decodes them (:mod:`.protocol`), looks each address up in
the handler table (:data:`.handlers.HANDLERS`), checks the arguments against the
address's :class:`~.protocol.AddressSpec` and calls the handler. Every refusal, and
every bug in a handler, becomes one ``/bnmusic/error`` reply; nothing is dropped
silently and nothing takes the server down.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from bnmusic_bridge.errors import BNMusicError

from . import protocol as P
from .handlers import Call, Context, Handler
from .transport import Endpoint

log = logging.getLogger("bnmusic.osc")

PACKET_WHERE = "#packet"
"""The ``where`` of an error about a packet that could not be read."""
LOGGED_ARGS = 6
"""Arguments of a request that ``-v`` logs."""
AUTH_ADDRESS = P.PREFIX + "auth"
"""The one address a sender may use before it has authenticated."""


class Dispatcher:
    """Runs the handler for each message of each packet.

    Args:
        handlers: address -> handler, exactly one for each of :data:`~.protocol.ADDRESSES`.
        context: what the handlers get.
    """

    def __init__(self, handlers: Mapping[str, Handler], context: Context) -> None:
        if set(handlers) != set(P.ADDRESSES):
            raise ValueError(
                f"the handler table and the address table differ: {sorted(set(handlers) ^ set(P.ADDRESSES))}"
            )
        self.handlers = handlers
        self.context = context

    def handle_packet(self, data: bytes, origin: Endpoint) -> None:
        """Decode one packet and answer every message in it. Never raises."""
        try:
            messages = P.decode_packet(data)
        except P.OscError as e:
            self.refuse_packet(e, origin)
            return
        self.context.out.stats.count_in(len(messages))
        for message in messages:
            self.handle_message(message, origin)

    def refuse_packet(self, error: P.OscError, origin: Endpoint) -> None:
        """Answer a packet that could not be read (or a refused TCP frame)."""
        self.context.out.stats.count_in()
        self.context.out.reply_error(origin, error.where or PACKET_WHERE, error.code, str(error))

    def handle_message(self, message: P.Message, origin: Endpoint) -> None:
        """Dispatch one message; every refusal becomes a ``/bnmusic/error`` reply."""
        spec = P.ADDRESSES.get(message.address)
        if log.isEnabledFor(logging.INFO) and message.address != P.PREFIX + "ping":
            # -v: every request but pings (a DAW may ping many times a second)
            shown = message.args[:LOGGED_ARGS] if message.address != AUTH_ADDRESS else ()
            args = " ".join(repr(a.value) for a in shown)  # never log the secret
            log.info("%s %s from %s", message.address, args, origin.kind)
        out = self.context.out
        try:
            if spec is None:
                known = ", ".join(sorted(P.ADDRESSES))
                raise P.OscError(
                    "unknown_address", f"no address {message.address!r}; known: {known}"
                )
            if spec.address != AUTH_ADDRESS and not self.context.gate.allowed(origin):
                raise P.OscError(
                    "unauthorized",
                    "this server needs /bnmusic/auth with its shared secret first",
                )
            values, rest = P.check_args(spec, message)
            self.handlers[spec.address](self.context, Call(message, origin, values, rest))
        except BNMusicError as e:
            code = getattr(e, "code", "error")
            where = getattr(e, "where", None) or job_arg(message) or message.address
            out.reply_error(origin, where, code, str(e))
        except Exception as e:  # noqa: BLE001 - a bug must not take the server down
            log.exception("handler for %s failed", message.address)
            out.reply_error(origin, message.address, "internal", f"{type(e).__name__}: {e}")


def job_arg(message: P.Message) -> P.OscArg | None:
    """The job id a message names (its first argument, where the address takes one), so
    an error about it names the job."""
    spec = P.ADDRESSES.get(message.address)
    if spec is None or not spec.params or spec.params[0].kind != "job_id" or not message.args:
        return None
    try:
        return P.coerce(message.args[0], "job_id")
    except ValueError:
        return None
