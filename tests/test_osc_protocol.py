"""The OSC address space without sockets: raw datagrams in, checks, replies out."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from bnmusic_bridge.frontends.osc import protocol as P
from bnmusic_bridge.frontends.osc.framing import StreamDecoder, slip_encode
from bnmusic_bridge.frontends.osc.handlers import HANDLERS
from bnmusic_bridge.frontends.osc.paths import RootSet
from bnmusic_bridge.frontends.osc.worker import compact_lane, meter_blocks

# /bnmusic/ping ,isf 7 "ab" 0.5 -- written out by hand, as OSC 1.0 lays it out.
PING_BYTES = (
    b"/bnmusic/ping\x00\x00\x00,isf\x00\x00\x00\x00\x00\x00\x00\x07ab\x00\x00\x3f\x00\x00\x00"
)


def test_decode_handwritten_message() -> None:
    [m] = P.decode_packet(PING_BYTES)
    assert m.address == "/bnmusic/ping"
    assert m.tags == "isf"
    assert [a.value for a in m.args] == [7, "ab", 0.5]


def test_pong_echoes_arguments_byte_for_byte() -> None:
    [m] = P.decode_packet(PING_BYTES)
    pong = P.echo_message("/bnmusic/pong", m)
    assert pong == b"/bnmusic/pong\x00\x00\x00" + PING_BYTES[16:]
    # A bare address (no type-tag string, allowed by OSC 1.0) gets an empty one.
    [bare] = P.decode_packet(b"/bnmusic/ping\x00\x00\x00")
    assert P.echo_message("/bnmusic/pong", bare) == b"/bnmusic/pong\x00\x00\x00,\x00\x00\x00"


def test_decode_every_scalar_tag() -> None:
    data = (
        b"/x\x00\x00,hdSTFNIbc\x00\x00"
        + struct.pack(">q", 2**40)
        + struct.pack(">d", -1.25)
        + b"sym\x00"
        + struct.pack(">i", 3)
        + b"abc\x00"
        + struct.pack(">i", ord("Z"))
    )
    [m] = P.decode_packet(data)
    assert [a.value for a in m.args] == [
        2**40,
        -1.25,
        "sym",
        True,
        False,
        None,
        float("inf"),
        b"abc",
        "Z",
    ]


@pytest.mark.parametrize(
    ("data", "code", "fragment"),
    [
        (b"", "bad_packet", "empty"),
        (b"/bnmusic/ping\x00\x00", "bad_packet", "multiple of 4"),
        (b"garbage!", "bad_packet", "neither"),
        (b"/bnmusic/ping\x00\x00\x00isf\x00", "bad_packet", "must start with ','"),
        (b"/bnmusic/ping\x00\x00\x00,i\x00\x00", "bad_packet", "do not match"),  # int missing
        (
            b"/bnmusic/ping\x00\x00\x00,i\x00\x00\x00\x00\x00\x01\x00\x00\x00\x02",
            "bad_packet",
            "left over",
        ),
        (b"/bnmusic/ping\x00\x00\x00,x\x00\x00", "bad_packet", "unknown type tag"),
        (
            b"/bnmusic/ping\x00\x00\x00,[i]\x00\x00\x00\x00\x00\x00\x00\x01",
            "bad_arguments",
            "arrays",
        ),
        (
            b"/bnmusic/ping\x00\x00\x00,b\x00\x00\x00\x00\x00\x40ab\x00\x00",
            "bad_packet",
            "blob size",
        ),
        (b"/bn music\x00\x00\x00", "bad_packet", "invalid OSC address"),
        (
            b"#bundle\x00" + b"\x00" * 8 + struct.pack(">i", 400) + b"/x\x00\x00",
            "bad_packet",
            "element size",
        ),
        (b"/x\x00\x00" + b"\x00" * (P.MAX_PACKET_BYTES), "packet_too_large", "at most"),
    ],
)
def test_malformed_packets_are_refused_with_a_code(data: bytes, code: str, fragment: str) -> None:
    with pytest.raises(P.OscError) as info:
        P.decode_packet(data)
    assert info.value.code == code
    assert fragment in str(info.value)


def test_bundles_nest_and_keep_their_timetags() -> None:
    a = P.encode_message("/bnmusic/lane", "j", 0.5, -3.0)
    b = P.encode_message("/bnmusic/lane", "j", 1.0, -2.0)
    t0 = 1_700_000_000.25
    packet = P.encode_bundle(
        P.ntp_timetag(None),
        [P.encode_bundle(P.ntp_timetag(t0), [a]), P.encode_bundle(P.ntp_timetag(t0 + 0.5), [b])],
    )
    assert [m.address for m in P.decode_packet(packet)] == ["/bnmusic/lane"] * 2
    tagged = P.read_bundle_timetags(packet)
    assert tagged[0][0] == pytest.approx(t0, abs=1e-6)
    assert tagged[1][0] == pytest.approx(t0 + 0.5, abs=1e-6)
    assert [x.value for x in tagged[1][1].args] == ["j", 1.0, -2.0]


def test_bundles_deeper_than_the_limit_are_refused() -> None:
    packet = P.encode_message("/x")
    for _ in range(P.MAX_BUNDLE_DEPTH + 1):
        packet = P.encode_bundle(P.ntp_timetag(None), [packet])
    with pytest.raises(P.OscError, match="nested"):
        P.decode_packet(packet)


def test_timetag_round_trip_and_immediately() -> None:
    assert P.ntp_timetag(None) == b"\x00" * 7 + b"\x01"
    assert P.timetag_to_unix(P.ntp_timetag(None)) is None
    assert P.timetag_to_unix(P.ntp_timetag(1234.5)) == pytest.approx(1234.5, abs=1e-6)


def test_encode_message_typing() -> None:
    data = P.encode_message("/r", "s", 3, 2**40, 0.25, True, None, P.Typed("d", 0.1))
    [m] = P.decode_packet(data)
    assert m.tags == "sihfTNd"
    assert m.args[-1].value == 0.1


# ---- argument checks ---------------------------------------------------------------


def _msg(address: str, *args: object) -> P.Message:
    return P.decode_packet(P.encode_message(address, *args))[0]


def test_render_arguments_checked_by_position() -> None:
    spec = P.ADDRESSES["/bnmusic/render"]
    values, rest = P.check_args(spec, _msg(spec.address, "job1", "a.wav", "", "rain", 7))
    assert values["job_id"] == P.OscArg("s", "job1")
    assert values["seed"] == 7 and values["prompt"] == "rain" and rest == []
    # DAWs send numbers as float32: an integral float is a fine seed, 7.5 is not.
    values, _ = P.check_args(spec, _msg(spec.address, 5, "a.wav", "", "", 7.0))
    assert values["seed"] == 7 and values["job_id"] == P.OscArg("i", 5)
    with pytest.raises(P.OscError, match=r"argument 5 'seed' has type tag 'f' \(7.5\)"):
        P.check_args(spec, _msg(spec.address, "j", "a.wav", "", "", 7.5))


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((), "missing argument 'job_id'"),
        (("j",), "missing argument 'noise_path'"),
        (("j", "a.wav", "p", "q", 1, "extra"), "6 arguments, at most 5"),
        (("j", 3), "argument 2 'noise_path' has type tag 'i'"),
        ((2.5, "a.wav"), "argument 1 'job_id' has type tag 'f'"),
        (("", "a.wav"), "argument 1 'job_id'"),
        (("x" * 65, "a.wav"), "argument 1 'job_id'"),
    ],
)
def test_bad_render_arguments(args: tuple, fragment: str) -> None:
    spec = P.ADDRESSES["/bnmusic/render"]
    with pytest.raises(P.OscError) as info:
        P.check_args(spec, _msg(spec.address, *args))
    assert info.value.code == "bad_arguments"
    assert fragment in str(info.value)


def test_overrides_are_typed_from_the_request_fields() -> None:
    pairs = list(
        _msg(
            "/bnmusic/render_ex",
            "smr_db",
            18,
            "seed",
            3.0,
            "threshold_model",
            "spreading",
            "max_loudness_lu",
            None,
            "param.style",
            "jazz",
            "plot",
            0,
            "lane_formats",
            "csv, midi",
            "preset",
            "lofi-commute",
        ).args
    )
    o = P.parse_overrides(pairs)
    assert o.request == {
        "smr_db": 18.0,
        "seed": 3,
        "threshold_model": "spreading",
        "max_loudness_lu": None,
    }
    assert isinstance(o.request["smr_db"], float) and isinstance(o.request["seed"], int)
    assert o.generator_params == {"style": "jazz"}
    assert o.export == {"plot": False, "lane_formats": ("csv", "midi")}
    assert o.preset == "lofi-commute"


@pytest.mark.parametrize(
    ("pairs", "code", "fragment"),
    [
        (("model", "x"), "bad_parameter", "belongs to the server"),
        (("device", "cuda"), "bad_parameter", "belongs to the server"),
        (("effects", "x"), "bad_parameter", "cannot be set over OSC"),
        (("smr", 3.0), "bad_parameter", "unknown override 'smr'"),
        (("smr_db", "loud"), "bad_arguments", "override 'smr_db' has type tag 's'"),
        (("seed", 1.5), "bad_arguments", "override 'seed'"),
        (("seed", 1, "seed", 2), "bad_arguments", "given twice"),
        ((3, 1.0), "bad_arguments", "keys are strings"),
    ],
)
def test_bad_overrides(pairs: tuple, code: str, fragment: str) -> None:
    with pytest.raises(P.OscError) as info:
        P.parse_overrides(list(_msg("/x", *pairs).args))
    assert info.value.code == code
    assert fragment in str(info.value)


def test_settable_fields_follow_the_request_dataclass() -> None:
    kinds = P.request_field_kinds()
    assert kinds["smr_db"] == "float" and kinds["seed"] == "int" and kinds["prompt"] == "str"
    assert kinds["max_loudness_lu"] == "float?"
    assert not set(P.SERVER_OWNED_FIELDS) & set(kinds)
    assert "effects" not in kinds and "generator_params" not in kinds


def test_every_address_is_under_the_prefix_and_documented() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "osc.md").read_text(encoding="utf-8")
    for address in P.ADDRESSES:
        assert address.startswith(P.PREFIX)
        assert f"`{address}`" in doc, f"{address} missing from docs/osc.md"
    for code in P.ERROR_CODES:
        assert f"`{code}`" in doc, f"error code {code} missing from docs/osc.md"


def test_every_address_has_one_handler() -> None:
    assert list(HANDLERS) == list(P.ADDRESSES)
    assert len(set(HANDLERS.values())) == len(HANDLERS)


# ---- TCP framing -------------------------------------------------------------------


def test_slip_stream_split_anywhere_and_escaped() -> None:
    tricky = P.encode_message("/bnmusic/ping", b"\xc0\xdb\xc0")  # blob with END and ESC bytes
    plain = P.encode_message("/bnmusic/ping", 1)
    stream = slip_encode(tricky) + slip_encode(plain)
    dec = StreamDecoder()
    got: list = []
    for i in range(0, len(stream), 3):  # byte dribbles, as TCP may deliver them
        got.extend(dec.feed(stream[i : i + 3]))
    assert dec.mode == "slip"
    assert got == [tricky, plain]


def test_slip_bad_escape_and_oversized_frame_do_not_break_the_stream() -> None:
    dec = StreamDecoder(max_bytes=64)
    out = dec.feed(b"\xc0/x\xdb\x01\xc0")
    assert isinstance(out[0], P.OscError) and out[0].code == "bad_packet"
    out = dec.feed(b"\xc0" + b"a" * 200)
    out += dec.feed(b"\xc0" + P.encode_message("/ok") + b"\xc0")
    assert isinstance(out[0], P.OscError) and out[0].code == "packet_too_large"
    assert out[1] == P.encode_message("/ok")


def test_length_prefixed_stream_as_liblo_sends_it() -> None:
    msg = P.encode_message("/bnmusic/ping", "x", 3)
    dec = StreamDecoder()
    framed = struct.pack(">i", len(msg)) + msg
    assert dec.feed(framed[:5]) == []
    assert dec.feed(framed[5:] + framed) == [msg, msg]
    assert dec.mode == "length"
    assert dec.frame(b"abcd") == b"\x00\x00\x00\x04abcd"
    bad = StreamDecoder()
    [err] = bad.feed(b"\x7f\xff\xff\xff")
    assert isinstance(err, P.OscError) and bad.broken


# ---- paths -------------------------------------------------------------------------


@pytest.fixture
def roots(tmp_path):  # type: ignore[no-untyped-def]
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.wav").write_bytes(b"RIFF")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.wav").write_bytes(b"RIFF")
    os.symlink(outside / "secret.wav", root / "link.wav")
    os.symlink(outside, root / "linkdir")
    os.symlink(root / "sub" / "a.wav", root / "inner_link.wav")
    return RootSet([root]), root, outside


def test_paths_inside_the_root_resolve(roots) -> None:  # type: ignore[no-untyped-def]
    rs, root, _ = roots
    assert rs.input_file(str(root / "sub" / "a.wav")) == root.resolve() / "sub" / "a.wav"
    assert (
        rs.input_file("sub/a.wav") == root.resolve() / "sub" / "a.wav"
    )  # relative to the first root
    assert rs.input_file("inner_link.wav") == root.resolve() / "sub" / "a.wav"
    assert rs.output_dir("new/deeper") == root.resolve() / "new" / "deeper"


@pytest.mark.parametrize(
    "text",
    [
        "../outside/secret.wav",
        "sub/../../outside/secret.wav",
        "link.wav",
        "linkdir/secret.wav",
        "/etc/hostname",
    ],
)
def test_paths_leaving_the_root_are_refused(roots, text: str) -> None:  # type: ignore[no-untyped-def]
    rs, _, outside = roots
    text = text.replace("/etc/hostname", str(outside / "secret.wav"))
    with pytest.raises(P.OscError) as info:
        rs.input_file(text)
    assert info.value.code == "path_outside_root"


def test_missing_folder_and_unwritable_paths(roots) -> None:  # type: ignore[no-untyped-def]
    rs, root, _ = roots
    with pytest.raises(P.OscError) as info:
        rs.input_file("sub/nothing.wav")
    assert info.value.code == "path_not_found"
    with pytest.raises(P.OscError) as info:
        rs.input_file("sub")
    assert info.value.code == "path_not_found"
    with pytest.raises(P.OscError) as info:
        rs.output_dir("sub/a.wav/x")
    assert info.value.code == "path_unreadable"
    with pytest.raises(P.OscError) as info:
        rs.output_dir("linkdir")
    assert info.value.code == "path_outside_root"


@pytest.mark.skipif(
    os.name != "posix" or os.geteuid() == 0, reason="root reads files whatever their mode"
)
def test_unreadable_file_is_refused(roots) -> None:  # type: ignore[no-untyped-def]
    rs, root, _ = roots
    p = root / "sub" / "a.wav"
    p.chmod(0)
    try:
        with pytest.raises(P.OscError) as info:
            rs.input_file(str(p))
        assert info.value.code == "path_unreadable"
    finally:
        p.chmod(0o644)


# ---- lane and meter streams ----------------------------------------------------------


def test_compact_lane_keeps_moves_over_the_tolerance() -> None:
    t = np.arange(0, 10, 0.01)
    g = np.where(t < 5, -6.0, 3.0) + 0.01 * np.sin(t)  # a step, with wiggles below 0.1 dB
    tc, gc = compact_lane(t, g, 0.1)
    assert tc[0] == 0.0 and tc[-1] == pytest.approx(t[-1])
    assert 3 <= tc.size <= 10
    # Straight lines through the kept points stay within the tolerance everywhere.
    assert np.max(np.abs(np.interp(t, tc, gc) - g)) <= 0.1 + 1e-9


def test_meter_blocks_average_and_skip_empty_blocks() -> None:
    cov = np.full(100, np.nan)  # 1 s at 100 frames per second
    cov[:10] = 0.5
    cov[10:15] = 1.0
    cov[90:] = 0.2
    t, c = meter_blocks(cov, 100.0, 10.0)
    assert t.tolist() == pytest.approx([0.0, 0.1, 0.9])
    assert c.tolist() == pytest.approx([0.5, 1.0, 0.2])
    assert meter_blocks(cov, 100.0, 0.0)[0].size == 0
