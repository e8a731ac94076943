"""Who may talk to the server: the shared secret (``/bnmusic/auth``).

With a secret configured (``bnmusic serve --secret-file``; required beyond loopback),
every sender must send ``/bnmusic/auth secret`` before anything else; other messages
get ``unauthorized``. A sender is a TCP connection (authenticated until it closes) or a
UDP address and port (authenticated until it has been silent for :data:`AUTH_IDLE_S`).
A host that fails :data:`MAX_FAILURES` times within :data:`FAILURE_WINDOW_S` is refused
further attempts for that long. The secret travels in clear text: OSC has no
encryption (see docs/osc.md, "Security").
"""

from __future__ import annotations

import collections
import hmac
import threading
import time
from collections.abc import Callable
from typing import Any

from .protocol import OscError
from .transport import Endpoint

MIN_SECRET_CHARS = 16
AUTH_IDLE_S = 900.0
"""A UDP sender stays authenticated while it sends at least once in this many seconds."""
MAX_AUTHENTICATED = 1024
"""Senders remembered at once; the least recently seen is dropped first."""
MAX_FAILURES = 5
FAILURE_WINDOW_S = 60.0
TCP_AUTH_GRACE_S = 10.0
"""A TCP connection that has not authenticated within this many seconds is closed."""


def check_secret(secret: str) -> str:
    """``secret`` stripped, refused when too short to resist guessing.

    Raises:
        OscError: ``bad_arguments``.
    """
    text = secret.strip()
    if len(text) < MIN_SECRET_CHARS or "\x00" in text:
        raise OscError(
            "bad_arguments",
            f"the shared secret must be at least {MIN_SECRET_CHARS} characters (no NUL)",
        )
    return text


class Gatekeeper:
    """Authenticated senders and failed attempts.

    Args:
        secret: the shared secret, or None for an open server (loopback only).
        clock: seconds, monotonic (tests pass their own).
    """

    def __init__(self, secret: str | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._secret = check_secret(secret).encode("utf-8") if secret is not None else None
        self._clock = clock
        self._lock = threading.Lock()
        self._senders: collections.OrderedDict[Any, float] = collections.OrderedDict()
        self._failures: dict[str, list[float]] = {}

    @property
    def required(self) -> bool:
        return self._secret is not None

    def allowed(self, origin: Endpoint) -> bool:
        """Whether ``origin`` may send requests (and note that it was seen)."""
        if self._secret is None:
            return True
        now = self._clock()
        with self._lock:
            seen = self._senders.get(origin.sender)
            if seen is None:
                return False
            if origin.kind == "udp" and now - seen > AUTH_IDLE_S:
                del self._senders[origin.sender]
                return False
            self._senders[origin.sender] = now
            self._senders.move_to_end(origin.sender)
            return True

    def authenticate(self, origin: Endpoint, secret: str) -> None:
        """Accept ``origin`` if ``secret`` is the server's.

        Raises:
            OscError: ``unauthorized`` (wrong secret, or too many failures lately).
        """
        if self._secret is None:
            return
        now = self._clock()
        with self._lock:
            recent = [t for t in self._failures.get(origin.host, []) if now - t < FAILURE_WINDOW_S]
            if len(recent) >= MAX_FAILURES:
                self._failures[origin.host] = recent
                raise OscError(
                    "unauthorized",
                    f"too many failed attempts from {origin.host}; wait {FAILURE_WINDOW_S:.0f} s",
                )
            if not hmac.compare_digest(secret.encode("utf-8", "surrogatepass"), self._secret):
                recent.append(now)
                self._failures[origin.host] = recent
                raise OscError("unauthorized", "wrong secret")
            self._failures.pop(origin.host, None)
            self._senders[origin.sender] = now
            self._senders.move_to_end(origin.sender)
            while len(self._senders) > MAX_AUTHENTICATED:
                self._senders.popitem(last=False)

    def is_authenticated(self, origin: Endpoint) -> bool:
        """Whether ``origin`` has authenticated (no bookkeeping)."""
        if self._secret is None:
            return True
        with self._lock:
            return origin.sender in self._senders

    def forget(self, origin: Endpoint) -> None:
        """Drop ``origin`` (its TCP connection closed)."""
        with self._lock:
            self._senders.pop(origin.sender, None)
