"""Sockets: UDP, OSC over TCP, the connections, and the stream rate limit.

:class:`Transport` binds one UDP socket and, optionally, one TCP listener, and runs the
receiving threads: one UDP receiver, one TCP acceptor and one reader per connection
(framing by :mod:`.framing`: SLIP or liblo's length prefixes, detected per connection).
It knows packets and :class:`Endpoint` values, not addresses: every packet goes to the
``on_packet`` callback (the dispatcher), every refused TCP frame to ``on_bad_frame``,
and a closed connection to ``on_disconnect``. :meth:`Transport.send` sends one packet
to one endpoint; routing (who gets a reply) is :mod:`.routing`'s job.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import protocol as P
from .framing import StreamDecoder

MAX_TCP_CLIENTS = 16
TCP_SEND_TIMEOUT_S = 2.0
"""A TCP client that stops reading for this long is disconnected."""
CLOSE_WHERE = "#connection"
"""The ``where`` of an error about a TCP connection the server closes."""
UDP_RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024
RECEIVE_POLL_S = 0.2
"""How often the receiving threads look up from their sockets to see whether to stop."""
MAX_RECEIVE_BYTES = 65536

CloseCheck = Callable[["Endpoint", float, float], "str | None"]
"""Asked while a TCP connection is quiet, with (endpoint, seconds since it last sent,
seconds since it connected): a reason to close it, or None to keep it."""

Spawn = Callable[[Callable[[], object], str], None]
"""Starts a daemon thread running a function under a name (the server joins them all
when it stops)."""


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost"."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Endpoint:
    """Where a message came from or goes to: UDP ``host:port``, or a TCP connection."""

    kind: str
    host: str
    port: int
    conn_id: int = 0

    def __str__(self) -> str:
        return f"{self.kind}://{self.host}:{self.port}" + (
            f"#{self.conn_id}" if self.kind == "tcp" else ""
        )

    @property
    def sender(self) -> tuple[Any, ...]:
        """What identifies a sender from one message to the next: its TCP connection, or
        its UDP host and port."""
        return ("tcp", self.conn_id) if self.kind == "tcp" else ("udp", self.host, self.port)


class TcpConnection:
    """One accepted TCP client: its socket, its stream decoder and a send lock."""

    def __init__(self, sock: socket.socket, endpoint: Endpoint) -> None:
        self.sock = sock
        self.endpoint = endpoint
        self.decoder = StreamDecoder()
        self.lock = threading.Lock()
        self.alive = True

    def send(self, packet: bytes) -> bool:
        """Send one packet, framed as the client frames its own; False if it failed."""
        with self.lock:
            if not self.alive:
                return False
            try:
                self.sock.sendall(self.decoder.frame(packet))
                return True
            except OSError:
                # A client that stops reading must not stall the pushes of others.
                self.close_locked()
                return False

    def close(self) -> None:
        with self.lock:
            if self.alive:
                self.close_locked()

    def close_locked(self) -> None:
        """Close the socket; the caller holds :attr:`lock`."""
        self.alive = False
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class TokenBucket:
    """A rate limit: :meth:`take` returns at most ``rate_hz`` times per second on
    average, after a first burst of ``burst``."""

    def __init__(self, rate_hz: float, burst: int = 64) -> None:
        self.rate_hz = rate_hz
        self.burst = float(burst)
        self.tokens = float(burst)
        self.t = time.monotonic()

    def take(self, stop: threading.Event) -> None:
        """Wait for a token; returns at once while ``stop`` is set."""
        while True:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate_hz)
            self.t = now
            if self.tokens >= 1.0 or stop.is_set():
                self.tokens -= 1.0
                return
            time.sleep((1.0 - self.tokens) / self.rate_hz)


class Transport:
    """The server's sockets and receiving threads.

    Args:
        host: bind address.
        udp_port: UDP port (0: any free port).
        tcp_port: TCP port (0: any free port; None: no TCP).
        check_every_s: how often a quiet TCP connection is offered to the close check
            (seconds; at most :data:`TCP_SEND_TIMEOUT_S`).
    """

    def __init__(
        self,
        host: str,
        udp_port: int,
        tcp_port: int | None,
        check_every_s: float = TCP_SEND_TIMEOUT_S,
    ) -> None:
        self.host = host
        self.check_every_s = min(TCP_SEND_TIMEOUT_S, max(0.05, check_every_s))
        self._close_check: CloseCheck | None = None
        self.udp_port = udp_port
        self.tcp_port = tcp_port
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._connections: dict[int, TcpConnection] = {}
        self._next_conn = 0
        # Set by start():
        self._spawn: Spawn
        self._on_packet: Callable[[bytes, Endpoint], None]
        self._on_bad_frame: Callable[[P.OscError, Endpoint], None]
        self._on_disconnect: Callable[[Endpoint], None]

    def open(self) -> None:
        """Bind the sockets. Raises OSError if a port is taken."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._udp = socket.socket(family, socket.SOCK_DGRAM)
        # Bursts of requests (the load test: 500 per second) must not overflow the
        # default receive buffer while a render holds the CPU.
        self._udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER_BYTES)
        self._udp.bind((self.host, self.udp_port))
        self._udp.settimeout(RECEIVE_POLL_S)
        if self.tcp_port is not None:
            self._tcp = socket.socket(family, socket.SOCK_STREAM)
            self._tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._tcp.bind((self.host, self.tcp_port))
            self._tcp.listen(MAX_TCP_CLIENTS)
            self._tcp.settimeout(RECEIVE_POLL_S)

    def start(
        self,
        spawn: Spawn,
        on_packet: Callable[[bytes, Endpoint], None],
        on_bad_frame: Callable[[P.OscError, Endpoint], None],
        on_disconnect: Callable[[Endpoint], None],
        close_check: CloseCheck | None = None,
    ) -> None:
        """Start receiving (after :meth:`open`).

        Args:
            spawn: starts the receiving threads.
            on_packet: called with every packet received and its sender; must not raise.
            on_bad_frame: called for a TCP frame the framing refused.
            on_disconnect: called when a TCP connection has closed.
            close_check: decides when a quiet TCP connection is closed (idle, not
                authenticated); None: never.
        """
        self._close_check = close_check
        self._spawn = spawn
        self._on_packet = on_packet
        self._on_bad_frame = on_bad_frame
        self._on_disconnect = on_disconnect
        spawn(self._udp_loop, "bnmusic-osc-udp")
        if self._tcp is not None:
            spawn(self._tcp_accept_loop, "bnmusic-osc-tcp")

    @property
    def udp_address(self) -> tuple[str, int]:
        assert self._udp is not None
        return self._udp.getsockname()[:2]

    @property
    def tcp_address(self) -> tuple[str, int] | None:
        return self._tcp.getsockname()[:2] if self._tcp is not None else None

    def send(self, endpoint: Endpoint, packet: bytes) -> bool:
        """Send one packet to one endpoint; False when it could not be sent."""
        if endpoint.kind == "udp":
            if self._udp is None:
                return False
            try:
                self._udp.sendto(packet, (endpoint.host, endpoint.port))
            except OSError:
                return False
            return True
        connection = self._connections.get(endpoint.conn_id)
        return connection is not None and connection.send(packet)

    def stop_receiving(self) -> None:
        """Tell the receiving threads to end (within :data:`RECEIVE_POLL_S`)."""
        self._stop.set()

    def close(self) -> None:
        """Close every connection and both sockets."""
        for connection in list(self._connections.values()):
            connection.close()
        for s in (self._udp, self._tcp):
            if s is not None:
                s.close()

    # -- receiving threads ---------------------------------------------------------

    def _udp_loop(self) -> None:
        assert self._udp is not None
        while not self._stop.is_set():
            try:
                data, addr = self._udp.recvfrom(MAX_RECEIVE_BYTES)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                # Windows reports an earlier send's ICMP "port unreachable" here.
                continue
            self._on_packet(data, Endpoint("udp", addr[0], addr[1]))

    def _tcp_accept_loop(self) -> None:
        assert self._tcp is not None
        while not self._stop.is_set():
            try:
                sock, addr = self._tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._next_conn += 1
                endpoint = Endpoint("tcp", addr[0], addr[1], self._next_conn)
                full = len(self._connections) >= MAX_TCP_CLIENTS
                connection = TcpConnection(sock, endpoint)
                if not full:
                    self._connections[endpoint.conn_id] = connection
            if full:
                _refuse_connection(connection)
                continue
            sock.settimeout(self.check_every_s)
            self._spawn(
                functools.partial(self._tcp_read_loop, connection),
                f"bnmusic-osc-tcp-{endpoint.conn_id}",
            )

    def _tcp_read_loop(self, connection: TcpConnection) -> None:
        sock = connection.sock
        opened_s = last_s = time.monotonic()
        try:
            while not self._stop.is_set() and connection.alive:
                try:
                    data = sock.recv(MAX_RECEIVE_BYTES)
                except TimeoutError:
                    now = time.monotonic()
                    reason = (
                        self._close_check(connection.endpoint, now - last_s, now - opened_s)
                        if self._close_check is not None
                        else None
                    )
                    if reason:
                        connection.send(P.encode_error(CLOSE_WHERE, "timeout", reason))
                        break
                    continue
                except OSError:
                    break
                if not data:
                    break
                last_s = time.monotonic()
                for item in connection.decoder.feed(data):
                    if isinstance(item, P.OscError):
                        self._on_bad_frame(item, connection.endpoint)
                    else:
                        self._on_packet(item, connection.endpoint)
                if connection.decoder.broken:
                    break
        finally:
            with self._lock:
                self._connections.pop(connection.endpoint.conn_id, None)
            self._on_disconnect(connection.endpoint)
            connection.close()


def _refuse_connection(connection: TcpConnection) -> None:
    """Tell a client over the connection limit why (SLIP framed), then hang up."""
    connection.decoder.mode = "slip"
    connection.send(P.encode_error("#connection", "busy", f"at most {MAX_TCP_CLIENTS} TCP clients"))
    connection.close()
