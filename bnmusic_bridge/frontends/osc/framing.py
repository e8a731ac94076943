"""OSC over a TCP byte stream: OSC 1.1 SLIP framing and OSC 1.0 length prefixes.

A TCP connection carries no packet boundaries, so each OSC packet is framed: OSC 1.1
wraps it in double-END SLIP (RFC 1055; python-osc's ``TCPClient``), OSC 1.0 prefixes it
with its length as a big-endian int32 (liblo's ``osc.tcp://``). :class:`StreamDecoder`
tells the two apart from a connection's first byte and frames the replies the same way.
Bytes only: no sockets here (:mod:`.transport` owns those).
"""

from __future__ import annotations

import struct

from pythonosc import slip

from .protocol import MAX_PACKET_BYTES, OscError

SLIP_END = 0xC0
_SLIP_ESC = 0xDB
_SLIP_ESC_END = 0xDC
_SLIP_ESC_ESC = 0xDD
MAX_LENGTH_PREFIX_PACKETS = 16
"""A length prefix over this many largest packets cannot be a real one: the stream is
out of step (or not OSC), so the connection is given up."""


def slip_encode(packet: bytes) -> bytes:
    """OSC 1.1 stream framing: double-END SLIP (RFC 1055)."""
    return slip.encode(packet)


class StreamDecoder:
    """Splits a TCP byte stream into OSC packets.

    The framing is detected from the first byte: ``0xC0`` means OSC 1.1 SLIP; anything
    else means OSC 1.0's int32 big-endian length prefix (what liblo sends). Replies use
    the same framing (:meth:`frame`).

    :meth:`feed` returns packets (bytes) and :class:`~.protocol.OscError` values for
    frames that were refused (too large, bad escapes); a refused frame never stops the
    stream, except an impossible length prefix, after which :attr:`broken` is True.

    Args:
        max_bytes: largest packet accepted, in bytes.
    """

    def __init__(self, max_bytes: int = MAX_PACKET_BYTES) -> None:
        self.max_bytes = max_bytes
        self.mode: str | None = None  # "slip" or "length"
        self.broken = False
        self._buf = bytearray()
        self._skipping = False

    def frame(self, packet: bytes) -> bytes:
        """``packet`` framed for this stream (SLIP until the peer chose otherwise)."""
        if self.mode == "length":
            return struct.pack(">i", len(packet)) + packet
        return slip_encode(packet)

    def feed(self, data: bytes) -> list[bytes | OscError]:
        """Add received bytes; returns the packets (and refusals) they complete."""
        if self.broken:
            return []
        self._buf.extend(data)
        if self.mode is None and self._buf:
            self.mode = "slip" if self._buf[0] == SLIP_END else "length"
        return self._feed_slip() if self.mode == "slip" else self._feed_length()

    def _feed_length(self) -> list[bytes | OscError]:
        out: list[bytes | OscError] = []
        while len(self._buf) >= 4:
            (size,) = struct.unpack(">i", self._buf[:4])
            if size <= 0 or size > MAX_LENGTH_PREFIX_PACKETS * self.max_bytes:
                self.broken = True
                self._buf.clear()
                out.append(
                    OscError("bad_packet", f"TCP length prefix {size} is impossible; closing")
                )
                break
            if len(self._buf) < 4 + size:
                break
            packet = bytes(self._buf[4 : 4 + size])
            del self._buf[: 4 + size]
            out.append(packet)
        return out

    def _feed_slip(self) -> list[bytes | OscError]:
        out: list[bytes | OscError] = []
        while True:
            end = self._buf.find(SLIP_END)
            if end < 0:
                # An escaped packet is at most twice its size; past that, drop bytes
                # until the next END and report the frame once.
                if len(self._buf) > 2 * self.max_bytes + 2:
                    self._skipping = True
                    self._buf.clear()
                break
            frame = bytes(self._buf[:end])
            del self._buf[: end + 1]
            if self._skipping:
                self._skipping = False
                out.append(
                    OscError("packet_too_large", f"SLIP frame larger than {self.max_bytes} bytes")
                )
                continue
            if not frame:
                continue  # the double-END framing gives empty frames between packets
            try:
                out.append(_slip_unescape(frame))
            except ValueError as e:
                out.append(OscError("bad_packet", f"bad SLIP frame: {e}"))
        return out


def _slip_unescape(frame: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(frame):
        b = frame[i]
        if b == _SLIP_ESC:
            if i + 1 >= len(frame) or frame[i + 1] not in (_SLIP_ESC_END, _SLIP_ESC_ESC):
                raise ValueError(f"ESC at byte {i} is not followed by ESC_END or ESC_ESC")
            out.append(SLIP_END if frame[i + 1] == _SLIP_ESC_END else _SLIP_ESC)
            i += 2
        else:
            out.append(b)
            i += 1
    return bytes(out)
