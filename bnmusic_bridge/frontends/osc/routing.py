"""Where replies and pushes go: subscriptions, the outbox, and the server's counters.

A reply or push goes to the endpoint the request came from, unless that sender
subscribed another UDP target (``/bnmusic/subscribe host port``); targets subscribed
with scope ``all`` receive a copy of every reply and push the server sends (a monitor,
which is how fire-and-forget senders such as liblo's ``oscsend`` see results).
Subscription hosts must be the subscriber's own address, so the server cannot be used
to send traffic elsewhere.
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from . import protocol as P
from .transport import Endpoint, Transport, is_loopback

log = logging.getLogger("bnmusic.osc")

MAX_SUBSCRIPTIONS = 32
"""Most subscriptions of each scope."""
SCOPES = ("sender", "all")


@dataclass
class Stats:
    """Counters for tests, benchmarks and the log (changed under :attr:`lock`)."""

    packets_in: int = 0
    messages_in: int = 0
    replies_out: int = 0
    errors_out: int = 0
    send_failures: int = 0
    by_code: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def count_in(self, messages: int = 0) -> None:
        """One packet received, holding ``messages`` messages (0: refused)."""
        with self.lock:
            self.packets_in += 1
            self.messages_in += messages

    def count_sent(self, ok: bool) -> None:
        with self.lock:
            if ok:
                self.replies_out += 1
            else:
                self.send_failures += 1

    def count_error(self, code: str) -> None:
        with self.lock:
            self.errors_out += 1
            self.by_code[code] = self.by_code.get(code, 0) + 1


class Subscriptions:
    """Redirects (scope ``sender``: one sender's replies go to another UDP port) and
    monitors (scope ``all``: a copy of everything), at most :data:`MAX_SUBSCRIPTIONS`
    of each.

    Args:
        allow_monitors: accept scope ``all`` (a monitor sees every client's jobs, so
            the operator must allow it: ``bnmusic serve --monitors``).
    """

    def __init__(self, allow_monitors: bool = False) -> None:
        self.allow_monitors = allow_monitors
        self._lock = threading.Lock()
        self._redirects: dict[Any, Endpoint] = {}
        self._monitors: dict[Endpoint, Any] = {}

    def subscribe(self, origin: Endpoint, host: str, port: int, scope: str) -> Endpoint:
        """Subscribe ``host:port`` (UDP) for ``origin``; returns the target.

        Raises:
            OscError: ``bad_arguments`` (scope, port, or a host that is not the
                subscriber's own), ``forbidden`` (a monitor, when monitors are off),
                ``busy`` (too many subscriptions).
        """
        if scope not in SCOPES:
            raise P.OscError("bad_arguments", f"scope {scope!r}: use 'sender' or 'all'")
        if scope == "all" and not self.allow_monitors:
            raise P.OscError(
                "forbidden",
                "monitor subscriptions (scope 'all') are off on this server: a monitor sees "
                "every client's jobs (the operator turns them on with bnmusic serve --monitors)",
            )
        if not 1 <= port <= 65535:
            raise P.OscError("bad_arguments", f"port {port} is not a port number (1 to 65535)")
        target = Endpoint("udp", own_host(host, origin), port)
        with self._lock:
            if scope == "all":
                if target not in self._monitors and len(self._monitors) >= MAX_SUBSCRIPTIONS:
                    raise P.OscError("busy", f"at most {MAX_SUBSCRIPTIONS} 'all' subscriptions")
                self._monitors[target] = origin.sender
            else:
                key = origin.sender
                if key not in self._redirects and len(self._redirects) >= MAX_SUBSCRIPTIONS:
                    raise P.OscError("busy", f"at most {MAX_SUBSCRIPTIONS} subscriptions")
                self._redirects[key] = target
        return target

    def unsubscribe(self, origin: Endpoint, host: str | None, port: int | None) -> int:
        """Drop every subscription naming ``host:port`` (both given), else ``origin``'s
        redirect; returns how many were dropped.

        Raises:
            OscError: ``bad_arguments`` (a host that is not the subscriber's own).
        """
        removed = 0
        with self._lock:
            if host is not None and port is not None:
                target = Endpoint("udp", own_host(host, origin), port)
                for key in [k for k, v in self._redirects.items() if v == target]:
                    del self._redirects[key]
                    removed += 1
                if self._monitors.pop(target, None) is not None:
                    removed += 1
            elif self._redirects.pop(origin.sender, None) is not None:
                removed = 1
        return removed

    def forget(self, origin: Endpoint) -> None:
        """Drop ``origin``'s redirect (its TCP connection closed)."""
        with self._lock:
            self._redirects.pop(origin.sender, None)

    def targets(self, origin: Endpoint) -> list[Endpoint]:
        """The sender (or its redirect), then every monitor once."""
        with self._lock:
            first = self._redirects.get(origin.sender, origin)
            if not self._monitors:
                return [first]
            return [first, *(m for m in self._monitors if m != first)]


def own_host(host: str, origin: Endpoint) -> str:
    """``host`` as an IP address, refused unless it is the subscriber's own.

    Raises:
        OscError: ``bad_arguments`` (does not resolve, or another host).
    """
    try:
        family = socket.AF_INET6 if ":" in origin.host else socket.AF_INET
        resolved = str(socket.getaddrinfo(host, None, family, socket.SOCK_DGRAM)[0][4][0])
    except (OSError, IndexError) as e:
        raise P.OscError("bad_arguments", f"subscribe host {host!r} does not resolve ({e})") from e
    same = resolved == origin.host or (is_loopback(resolved) and is_loopback(origin.host))
    if not same:
        raise P.OscError(
            "bad_arguments",
            f"subscribe host {host!r} ({resolved}) is not your own address ({origin.host}); "
            "a subscription may only name the subscriber's host",
        )
    return resolved


class Outbox:
    """Every reply and push leaves through here: routed by the subscriptions, sent by
    the transport, counted in the stats."""

    def __init__(self, transport: Transport, subscriptions: Subscriptions, stats: Stats) -> None:
        self.transport = transport
        self.subscriptions = subscriptions
        self.stats = stats

    def send(self, endpoint: Endpoint, packet: bytes) -> None:
        """Send to ``endpoint`` only (no routing)."""
        self.stats.count_sent(self.transport.send(endpoint, packet))

    def reply(self, origin: Endpoint, packet: bytes) -> None:
        """Send to ``origin`` (or its redirect) and to every monitor."""
        for target in self.subscriptions.targets(origin):
            self.send(target, packet)

    def error_packet(self, where: Any, code: str, message: str) -> bytes:
        """A ``/bnmusic/error`` packet, counted (``-vv`` logs it)."""
        self.stats.count_error(code)
        log.debug("error %s %s: %s", where, code, message)
        return P.encode_error(where, code, message)

    def reply_error(self, origin: Endpoint, where: Any, code: str, message: str) -> None:
        self.reply(origin, self.error_packet(where, code, message))
