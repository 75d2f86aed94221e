"""One-call frame parse and segment emit, both implementations.

Frames are built here with ``struct`` and a checksum written for the test
(never with the code under test); emit is checked by parsing its output and
by the same independent checksum; the two implementations are compared on
valid frames, mutated and truncated frames and garbage: they must return
equal values or raise the same reason with the same message.
"""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import implementations, load_implementation
from pystack.errors import REASONS, MalformedPacket

headers_impl = implementations("headers", "pystack.wire._headers_py")

SETTINGS = settings(max_examples=80, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")
IP_A = 0x0A000001  # 10.0.0.1
IP_B = 0x0A000002  # 10.0.0.2


def both():
    return (load_implementation("py", "headers", "pystack.wire._headers_py"),
            load_implementation("c", "headers", "pystack.wire._headers_py"))


# -- an independent frame builder ------------------------------------------------

def inet_checksum(data: bytes) -> int:
    """RFC 1071, the slow obvious way."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for (word,) in struct.iter_unpack("!H", data):
        total += word
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def pseudo(src: int, dst: int, proto: int, length: int) -> bytes:
    return struct.pack("!IIBBH", src, dst, 0, proto, length)


def ipv4(payload: bytes, proto: int, *, src=IP_A, dst=IP_B, tos=0, ident=0x1234, frag=0x4000,
         ttl=64, options=b"", version=4, ihl=None, total_len=None, check=None) -> bytes:
    ihl = (20 + len(options)) // 4 if ihl is None else ihl
    total_len = 20 + len(options) + len(payload) if total_len is None else total_len
    header = struct.pack("!BBHHHBBHII", (version << 4) | ihl, tos, total_len, ident, frag, ttl,
                         proto, 0, src, dst) + options
    if check is None:
        check = inet_checksum(header)
    return header[:10] + struct.pack("!H", check) + header[12:] + payload


def tcp(payload: bytes = b"", *, sport=40000, dport=80, seq=1, ack=2, flags=0x18, window=1000,
        urgent=0, options=b"", doff=None, src=IP_A, dst=IP_B, check=None, reserved=0) -> bytes:
    options += b"\0" * (-len(options) % 4)  # EOL padding
    doff = (20 + len(options)) // 4 if doff is None else doff
    header = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, (doff << 4) | reserved, flags,
                         window, 0, urgent) + options
    segment = header + payload
    if check is None:
        check = inet_checksum(pseudo(src, dst, 6, len(segment)) + segment)
    return segment[:16] + struct.pack("!H", check) + segment[18:]


def udp(payload: bytes = b"", *, sport=5353, dport=53, length=None, src=IP_A, dst=IP_B,
        check=None) -> bytes:
    length = 8 + len(payload) if length is None else length
    datagram = struct.pack("!HHHH", sport, dport, length, 0) + payload
    if check is None:
        check = inet_checksum(pseudo(src, dst, 17, length) + datagram[:length]) or 0xFFFF
    return datagram[:6] + struct.pack("!H", check) + datagram[8:]


def eth(payload: bytes, ethertype=0x0800, dst=MAC_B, src=MAC_A) -> bytes:
    return dst + src + struct.pack("!H", ethertype) + payload


def tcp_frame(payload=b"", options=b"", **kw) -> bytes:
    return eth(ipv4(tcp(payload, options=options, **kw), 6))


TS_OPTION = b"\x01\x01\x08\x0a" + struct.pack("!II", 0xDEADBEEF, 0x01020304)


def outcome(impl, buf, *args, **kw):
    """("ok", as_dict) or ("error", reason, detail): what the two must agree on."""
    try:
        return ("ok", impl.parse_frame(buf, *args, **kw).as_dict())
    except MalformedPacket as exc:
        assert exc.reason in REASONS
        return ("error", exc.reason, exc.detail)


# -- parsing hand-built frames -----------------------------------------------------

def test_fields_are_the_same_in_both():
    py, c = both()
    assert py.FIELDS == c.FIELDS
    assert len(set(py.FIELDS)) == len(py.FIELDS) == 32


def test_same_public_names_in_both():
    py, c = both()

    def public(obj):
        return {name for name in dir(obj) if not name.startswith("_")} - {"annotations", "struct"}

    assert public(py) == public(c)
    assert public(py.Frame) == public(c.Frame) == set(py.FIELDS) | {"as_dict"}
    assert py.Frame().as_dict() == c.Frame().as_dict()  # nothing parsed: layers 0


def test_full_tcp_frame(headers_impl):
    options = (b"\x02\x04\x05\xb4"            # MSS 1460
               b"\x01\x03\x03\x07"            # NOP, window scale 7
               b"\x04\x02"                    # SACK permitted
               b"\x08\x0a" + struct.pack("!II", 7, 8)
               + b"\x05\x12" + struct.pack("!IIII", 100, 200, 300, 400)   # SACK, 2 blocks
               + b"\x00\x00")                # EOL + padding
    assert len(options) == 40
    payload = bytes(range(200))
    frame = eth(ipv4(tcp(payload, options=options, sport=1234, dport=443, seq=0xFFFFFFFF,
                         ack=0x80000000, flags=0xD2, window=0xABCD, urgent=9, reserved=0x0F),
                     6, tos=0x10, ident=0x4321, frag=0x4000, ttl=3))
    f = headers_impl.parse_frame(frame)
    assert f.as_dict() == {
        "layers": 3, "eth_dst": MAC_B, "eth_src": MAC_A, "ethertype": 0x0800,
        "ip_offset": 14, "ip_header_len": 20, "ip_total_len": 20 + 60 + 200, "ip_tos": 0x10,
        "ip_id": 0x4321, "ip_frag": 0x4000, "ip_ttl": 3, "ip_proto": 6, "ip_src": IP_A,
        "ip_dst": IP_B, "l4_offset": 34, "sport": 1234, "dport": 443, "seq": 0xFFFFFFFF,
        "ack": 0x80000000, "tcp_flags": 0xD2, "window": 0xABCD, "urgent": 9,
        "tcp_header_len": 60, "mss": 1460, "wscale": 7, "sack_permitted": True,
        "ts_val": 7, "ts_ecr": 8, "sack": ((100, 200), (300, 400)), "udp_len": 0,
        "payload_offset": 94, "payload_len": 200,
    }
    assert frame[f.payload_offset:f.payload_offset + f.payload_len] == payload
    assert list(f.as_dict()) == list(headers_impl.FIELDS)
    assert type(f.sack_permitted) is bool


def test_tcp_without_options_has_absent_values(headers_impl):
    f = headers_impl.parse_frame(tcp_frame(b"x"))
    assert (f.mss, f.wscale, f.ts_val, f.ts_ecr, f.sack, f.sack_permitted) == (-1, -1, -1, 0, (), False)
    assert (f.tcp_header_len, f.payload_len, f.udp_len) == (20, 1, 0)


def test_udp_frame(headers_impl):
    frame = eth(ipv4(udp(b"hello", sport=1, dport=65535), 17))
    d = headers_impl.parse_frame(frame).as_dict()
    assert (d["layers"], d["sport"], d["dport"], d["udp_len"]) == (3, 1, 65535, 13)
    assert (d["l4_offset"], d["payload_offset"], d["payload_len"]) == (34, 42, 5)
    assert (d["seq"], d["ack"], d["tcp_flags"], d["window"], d["tcp_header_len"]) == (0,) * 5
    assert (d["mss"], d["wscale"], d["ts_val"], d["sack"], d["sack_permitted"]) == (-1, -1, -1, (), False)


def test_udp_zero_checksum_means_none(headers_impl):
    frame = eth(ipv4(udp(b"data", check=0), 17))
    assert headers_impl.parse_frame(frame).payload_len == 4
    bad = eth(ipv4(udp(b"data", check=0x1234), 17))
    with pytest.raises(MalformedPacket) as info:
        headers_impl.parse_frame(bad)
    assert info.value.reason == "udp.bad_checksum"


def test_udp_length_shorter_than_ip_payload(headers_impl):
    # The UDP length decides where the datagram ends (RFC 768); the rest is ignored.
    datagram = udp(b"abcdef", length=8 + 3) + b"\xee\xee"
    f = headers_impl.parse_frame(eth(ipv4(datagram, 17)))
    assert (f.udp_len, f.payload_len) == (11, 3)


def test_ethernet_padding_is_ignored(headers_impl):
    frame = tcp_frame(b"ab") + b"\0" * 6  # padded to the 60-byte minimum
    assert len(frame) == 62
    f = headers_impl.parse_frame(frame)
    assert (f.ip_total_len, f.payload_len) == (42, 2)


def test_not_ipv4_is_layer_1(headers_impl):
    frame = eth(b"\x00\x01" + bytes(26), ethertype=0x0806)
    d = headers_impl.parse_frame(frame).as_dict()
    assert (d["layers"], d["ethertype"], d["payload_offset"], d["payload_len"]) == (1, 0x0806, 14, 28)
    assert all(d[name] == 0 for name in d if name.startswith("ip_"))
    assert (d["l4_offset"], d["sport"], d["dport"]) == (0, 0, 0)
    # Even 14 bytes with no payload at all is a valid layer-1 frame.
    assert headers_impl.parse_frame(eth(b"", ethertype=0x86DD)).payload_len == 0


@pytest.mark.parametrize("frag, proto", [
    (0x2000, 6),    # MF set: the first fragment
    (0x0001, 17),   # a later fragment (offset 8 bytes)
    (0x4000, 1),    # ICMP
    (0x0000, 47),   # GRE
])
def test_fragments_and_other_protocols_are_layer_2(headers_impl, frag, proto):
    payload = bytes(range(30))  # not a valid TCP/UDP header, and not read as one
    frame = eth(ipv4(payload, proto, frag=frag, options=b"\x01\x01\x01\x00"))
    f = headers_impl.parse_frame(frame)
    assert (f.layers, f.ip_frag, f.ip_proto, f.ip_header_len) == (2, frag, proto, 24)
    assert (f.payload_offset, f.payload_len, f.l4_offset, f.sport) == (38, 30, 0, 0)


def test_ip_options_move_the_tcp_header(headers_impl):
    frame = eth(ipv4(tcp(b"zz"), 6, options=b"\x94\x04\x00\x00"))  # router alert
    f = headers_impl.parse_frame(frame)
    assert (f.ip_header_len, f.l4_offset, f.payload_offset) == (24, 38, 58)


def test_offset_and_length_inside_a_larger_buffer(headers_impl):
    frame = tcp_frame(b"payload", options=TS_OPTION)
    buf = bytearray(b"\xaa" * 37) + frame + b"\xbb" * 50
    f = headers_impl.parse_frame(buf, 37, len(frame))
    assert (f.ip_offset, f.l4_offset, f.payload_offset, f.payload_len) == (51, 71, 103, 7)
    assert f.ts_val == 0xDEADBEEF
    for view in (memoryview(buf), np.frombuffer(bytes(buf), dtype=np.uint8), bytes(buf)):
        assert headers_impl.parse_frame(view, 37, len(frame)).as_dict() == f.as_dict()
    # A frame cut off by ``length`` is truncated, whatever follows it.
    with pytest.raises(MalformedPacket):
        headers_impl.parse_frame(buf, 37, len(frame) - 1)


def test_verify_false_skips_checksums(headers_impl):
    frame = eth(ipv4(tcp(b"x", check=0xBAD), 6, check=0xBAD))
    with pytest.raises(MalformedPacket) as info:
        headers_impl.parse_frame(frame)
    assert info.value.reason == "ipv4.bad_checksum"
    assert headers_impl.parse_frame(frame, verify=False).layers == 3


@pytest.mark.parametrize("offset, length", [(-1, -1), (101, -1), (0, -2), (0, 1000),
                                            (10, 91), (2**70, -1), (0, 2**70)])
def test_bad_offset_or_length_is_caller_misuse(headers_impl, offset, length):
    with pytest.raises(ValueError):
        headers_impl.parse_frame(bytes(100), offset, length)


def test_parse_refuses_non_buffers(headers_impl):
    with pytest.raises(TypeError):
        headers_impl.parse_frame("text")
    with pytest.raises(TypeError):
        headers_impl.parse_frame(memoryview(bytes(200))[::2])
    with pytest.raises(TypeError):
        headers_impl.parse_frame(bytes(100), 1.0)


# -- options ----------------------------------------------------------------------

def parse_options(impl, options: bytes):
    return impl.parse_frame(tcp_frame(b"", options=options))


def test_options_eol_ends_the_list(headers_impl):
    f = parse_options(headers_impl, b"\x00\x02\x04\x05\xb4\x99\x99\x99")  # MSS after EOL: ignored
    assert f.mss == -1


def test_options_unknown_kinds_are_skipped(headers_impl):
    f = parse_options(headers_impl, b"\x1e\x06abcd" + b"\x02\x04\x02\x18" + b"\xfe\x02")
    assert f.mss == 0x0218


def test_options_last_one_wins_and_wscale_is_reported_as_read(headers_impl):
    f = parse_options(headers_impl, b"\x03\x03\x02\x03\x03\x0f\x02\x04\x00\x01\x02\x04\x00\x02")
    assert (f.wscale, f.mss) == (15, 2)


@pytest.mark.parametrize("nops", [0, 1, 2, 3])
def test_options_at_any_alignment(headers_impl, nops):
    # RFC 9293 MUST-64: options may begin on any octet.
    options = b"\x01" * nops + TS_OPTION[2:] + b"\x02\x04\x05\x78" + b"\x05\x0a" + bytes(range(8))
    f = parse_options(headers_impl, options)
    assert (f.ts_val, f.ts_ecr, f.mss) == (0xDEADBEEF, 0x01020304, 0x578)
    assert f.sack == ((0x00010203, 0x04050607),)


BAD_OPTIONS = [
    pytest.param(b"\x02", id="length-byte-missing"),
    pytest.param(b"\x1e", id="unknown-kind-length-missing"),
    pytest.param(b"\x1e\x01", id="length-1"),
    pytest.param(b"\x1e\x00", id="length-0"),
    pytest.param(b"\x1e\x09abc", id="past-the-area"),
    pytest.param(b"\x02\x03\x05", id="mss-3"),
    pytest.param(b"\x02\x05\x05\xb4\x00", id="mss-5"),
    pytest.param(b"\x03\x02", id="wscale-2"),
    pytest.param(b"\x03\x04\x07\x00", id="wscale-4"),
    pytest.param(b"\x04\x03\x00", id="sack-permitted-3"),
    pytest.param(b"\x05\x02", id="sack-empty"),
    pytest.param(b"\x05\x09" + bytes(7), id="sack-9"),
    pytest.param(b"\x05\x0b" + bytes(9), id="sack-11"),
    pytest.param(b"\x08\x08" + bytes(6), id="timestamps-8"),
    pytest.param(b"\x08\x0b" + bytes(9), id="timestamps-11"),
]


@pytest.mark.parametrize("nops", [0, 1, 2, 3])
@pytest.mark.parametrize("bad", BAD_OPTIONS)
def test_bad_option_lengths(bad, nops):
    py, c = both()
    options = b"\x01" * nops + bad
    frame = tcp_frame(b"data", options=options)
    results = [outcome(impl, frame) for impl in (py, c)]
    assert results[0] == results[1]
    assert results[0][:2] == ("error", "tcp.bad_option_length"), results[0]


def test_bad_option_detail_names_the_option():
    py, c = both()
    frame = tcp_frame(b"", options=b"\x01\x02\x03\x05")
    for impl in (py, c):
        with pytest.raises(MalformedPacket) as info:
            impl.parse_frame(frame)
        assert info.value.detail == "option kind 2 at option byte 1: length 3, MSS must be 4"


# -- every malformed case ------------------------------------------------------------

GOOD_TCP = tcp_frame(b"hello", options=TS_OPTION)


def _cases():
    ip_tcp = ipv4(tcp(b"hello"), 6)
    yield "ethernet.truncated", GOOD_TCP[:13]
    yield "ethernet.truncated", b""
    yield "ipv4.truncated", GOOD_TCP[:14 + 19]
    yield "ipv4.truncated", eth(b"")
    yield "ipv4.bad_version", eth(ipv4(tcp(), 6, version=6))
    yield "ipv4.bad_ihl", eth(ipv4(tcp(), 6, ihl=4))
    yield "ipv4.bad_ihl", eth(ipv4(b"", 6, ihl=15, total_len=60) + bytes(20))  # 60 > 40 there
    yield "ipv4.bad_total_length", eth(ipv4(tcp(), 6, total_len=19))
    yield "ipv4.bad_total_length", eth(ipv4(tcp(), 6, total_len=41))
    yield "ipv4.bad_checksum", eth(ip_tcp[:10] + bytes([ip_tcp[10] ^ 1]) + ip_tcp[11:])
    yield "tcp.truncated", eth(ipv4(tcp()[:19], 6))
    yield "tcp.truncated", eth(ipv4(b"", 6))
    yield "tcp.bad_data_offset", eth(ipv4(tcp(doff=4), 6))
    yield "tcp.bad_data_offset", eth(ipv4(tcp(doff=6), 6))  # 24 bytes, segment of 20
    yield "tcp.bad_checksum", eth(ipv4(tcp(b"x", check=1), 6))
    yield "tcp.bad_checksum", eth(ipv4(tcp(b"hello", src=IP_B), 6))  # pseudo-header counts
    yield "tcp.bad_option_length", eth(ipv4(tcp(options=b"\x02\x04\x05\x00\x08\x06\x00\x00"), 6))
    yield "udp.truncated", eth(ipv4(udp()[:7], 17))
    yield "udp.bad_length", eth(ipv4(udp(b"abc", length=7), 17))
    yield "udp.bad_length", eth(ipv4(udp(b"abc", length=12), 17))
    yield "udp.bad_checksum", eth(ipv4(udp(b"abc", check=0xFFFE), 17))


@pytest.mark.parametrize("reason, frame", list(_cases()))
def test_malformed(reason, frame):
    py, c = both()
    results = [outcome(impl, frame) for impl in (py, c)]
    assert results[0] == results[1]
    assert results[0][:2] == ("error", reason), results[0]
    assert isinstance(pytest.raises(MalformedPacket, py.parse_frame, frame).value,
                      REASONS[reason])


def test_validation_order_lengths_before_checksum():
    # A bad IHL wins over a bad checksum; a bad data offset over a bad TCP checksum.
    py, c = both()
    frame = eth(ipv4(tcp(), 6, ihl=4, check=0x0BAD))
    assert {outcome(impl, frame)[1] for impl in (py, c)} == {"ipv4.bad_ihl"}
    frame = eth(ipv4(tcp(doff=3, check=1), 6))
    assert {outcome(impl, frame)[1] for impl in (py, c)} == {"tcp.bad_data_offset"}
    # ... and the TCP checksum is checked before the options are read.
    frame = eth(ipv4(tcp(options=b"\x02\x03\x00\x00", check=1), 6))
    assert {outcome(impl, frame)[1] for impl in (py, c)} == {"tcp.bad_checksum"}


# -- the two implementations agree on anything ------------------------------------------

def _valid_frames():
    return [
        GOOD_TCP,
        tcp_frame(bytes(100), options=b"\x02\x04\x05\xb4\x04\x02\x05\x0a" + bytes(8) + b"\x03\x03\x07\x00"),
        eth(ipv4(udp(b"datagram"), 17)),
        eth(ipv4(udp(b"nocheck", check=0), 17)),
        eth(ipv4(b"icmp-ish", 1)),
        eth(ipv4(tcp(b"frag"), 6, frag=0x2000)),
        eth(b"arp" * 10, ethertype=0x0806),
        eth(ipv4(tcp(b"opts"), 6, options=b"\x01\x01\x01\x01")) + b"\0" * 4,
    ]


@settings(max_examples=400, deadline=None)
@given(base=st.sampled_from(_valid_frames()), data=st.data())
def test_c_equals_py_on_mutated_frames(base, data):
    py, c = both()
    frame = bytearray(base)
    for _ in range(data.draw(st.integers(0, 4))):
        pos = data.draw(st.integers(0, len(frame) - 1))
        frame[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(frame)))
    frame = bytes(frame[:cut]) if data.draw(st.booleans()) else bytes(frame)
    verify = data.draw(st.booleans())
    assert outcome(py, frame, verify=verify) == outcome(c, frame, verify=verify)


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=120), ipv4_prefix=st.booleans(), verify=st.booleans())
def test_c_equals_py_on_garbage(garbage, ipv4_prefix, verify):
    py, c = both()
    # Garbage is more interesting when it gets past the first checks.
    frame = (MAC_A + MAC_B + b"\x08\x00" + garbage) if ipv4_prefix else garbage
    assert outcome(py, frame, verify=verify) == outcome(c, frame, verify=verify)


def test_only_malformed_packet_escapes_on_random_input(headers_impl):
    rng = random.Random(1234)
    templates = _valid_frames()
    for _ in range(3000):
        frame = bytearray(rng.choice(templates))
        for _ in range(rng.randrange(1, 6)):
            frame[rng.randrange(len(frame))] = rng.randrange(256)
        frame = frame[:rng.randrange(len(frame) + 1)]
        try:
            headers_impl.parse_frame(frame, verify=rng.random() < 0.3)
        except MalformedPacket as exc:
            assert exc.reason in REASONS


# -- emit ----------------------------------------------------------------------------

def check_emitted_tcp(frame: bytes, options: bytes, payload: bytes):
    """Check an emitted TCP frame with the test's own checksum and struct reads."""
    assert frame[12:14] == b"\x08\x00"
    ip = frame[14:34]
    assert ip[0] == 0x45 and inet_checksum(ip) == 0
    total_len, = struct.unpack_from("!H", ip, 2)
    assert total_len == len(frame) - 14
    src, dst = struct.unpack_from("!II", ip, 12)
    segment = frame[34:]
    assert inet_checksum(pseudo(src, dst, 6, len(segment)) + segment) == 0
    doff = segment[12] >> 4
    padded = options + b"\0" * (-len(options) % 4)
    assert segment[20:doff * 4] == padded
    assert segment[doff * 4:] == payload


tcp_args = st.fixed_dictionaries({
    "eth_dst": st.binary(min_size=6, max_size=6),
    "eth_src": st.binary(min_size=6, max_size=6),
    "ip_src": st.integers(0, 2**32 - 1),
    "ip_dst": st.integers(0, 2**32 - 1),
    "sport": st.integers(0, 0xFFFF),
    "dport": st.integers(0, 0xFFFF),
    "seq": st.integers(0, 2**32 - 1),
    "ack": st.integers(0, 2**32 - 1),
    "flags": st.integers(0, 0xFF),
    "window": st.integers(0, 0xFFFF),
    "ip_id": st.integers(0, 0xFFFF),
    "ttl": st.integers(0, 0xFF),
    "tos": st.integers(0, 0xFF),
    "dont_fragment": st.booleans(),
    "urgent": st.integers(0, 0xFFFF),
})


@st.composite
def tcp_options(draw):
    """A valid option list (in random order, at random alignments) and what it says."""
    items, expect = [], {}
    if draw(st.booleans()):
        mss = draw(st.integers(0, 0xFFFF))
        items.append(b"\x02\x04" + struct.pack("!H", mss))
        expect["mss"] = mss
    if draw(st.booleans()):
        shift = draw(st.integers(0, 255))
        items.append(b"\x03\x03" + bytes([shift]))
        expect["wscale"] = shift
    if draw(st.booleans()):
        items.append(b"\x04\x02")
        expect["sack_permitted"] = True
    if draw(st.booleans()):
        tsv, tse = draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1))
        items.append(b"\x08\x0a" + struct.pack("!II", tsv, tse))
        expect["ts_val"], expect["ts_ecr"] = tsv, tse
    if draw(st.booleans()):
        items.append(b"\xfd\x04" + draw(st.binary(min_size=2, max_size=2)))  # experimental
    items = draw(st.permutations(items))
    out = b""
    for item in items:
        out += b"\x01" * draw(st.integers(0, 3)) + item
    room = 40 - len(out)
    if room >= 10 and draw(st.booleans()):
        n = draw(st.integers(1, min(4, (room - 2) // 8)))
        blocks = tuple((draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1)))
                       for _ in range(n))
        out += bytes([5, 2 + 8 * n]) + b"".join(struct.pack("!II", *b) for b in blocks)
        expect["sack"] = blocks
    assume(len(out) <= 40)
    return out, expect


@SETTINGS
@given(args=tcp_args, opts=tcp_options(), payload=st.binary(max_size=1600),
       offset=st.integers(0, 9), slack=st.integers(0, 9), as_view=st.booleans())
def test_emit_tcp_round_trip(headers_impl, args, opts, payload, offset, slack, as_view):
    options, expect = opts
    thlen = 20 + len(options) + (-len(options) % 4)
    size = offset + 34 + thlen + len(payload) + slack
    buf = bytearray(b"\xcc" * size)
    target = memoryview(buf) if as_view else buf
    n = headers_impl.emit_tcp(target, offset, options=options, payload=payload, **args)
    assert n == 34 + thlen + len(payload)
    assert buf[:offset] == b"\xcc" * offset and buf[offset + n:] == b"\xcc" * slack
    frame = bytes(buf[offset:offset + n])
    check_emitted_tcp(frame, options, payload)
    f = headers_impl.parse_frame(buf, offset, n)
    want = {
        "layers": 3, "eth_dst": args["eth_dst"], "eth_src": args["eth_src"], "ethertype": 0x0800,
        "ip_offset": offset + 14, "ip_header_len": 20, "ip_total_len": n - 14,
        "ip_tos": args["tos"], "ip_id": args["ip_id"],
        "ip_frag": 0x4000 if args["dont_fragment"] else 0, "ip_ttl": args["ttl"], "ip_proto": 6,
        "ip_src": args["ip_src"], "ip_dst": args["ip_dst"], "l4_offset": offset + 34,
        "sport": args["sport"], "dport": args["dport"], "seq": args["seq"], "ack": args["ack"],
        "tcp_flags": args["flags"], "window": args["window"], "urgent": args["urgent"],
        "tcp_header_len": thlen, "mss": -1, "wscale": -1, "sack_permitted": False,
        "ts_val": -1, "ts_ecr": 0, "sack": (), "udp_len": 0,
        "payload_offset": offset + 34 + thlen, "payload_len": len(payload),
    }
    want.update(expect)
    assert f.as_dict() == want


@settings(max_examples=60, deadline=None)
@given(args=tcp_args, opts=tcp_options(), payload=st.binary(max_size=300),
       offset=st.integers(0, 5), staged=st.booleans())
def test_emit_tcp_c_equals_py(args, opts, payload, offset, staged):
    py, c = both()
    frames = []
    for impl in (py, c):
        buf = bytearray(b"\x5a" * (offset + 100 + len(payload)))
        if staged:
            start = offset + 34 + 20 + len(opts[0]) + (-len(opts[0]) % 4)
            buf[start:start + len(payload)] = payload
            n = impl.emit_tcp(buf, offset, options=opts[0], payload_len=len(payload), **args)
        else:
            n = impl.emit_tcp(buf, offset, options=opts[0], payload=payload, **args)
        frames.append((n, bytes(buf)))
    assert frames[0] == frames[1]


def test_emit_tcp_zero_copy_staging(headers_impl):
    buf = bytearray(2000)
    payload = bytes(range(256)) * 4
    start = 34 + 32  # headers with the 12-byte timestamp option
    buf[start:start + len(payload)] = payload
    n = headers_impl.emit_tcp(buf, 0, MAC_B, MAC_A, IP_A, IP_B, 1, 2, 3, 4, 0x10, 5,
                              options=TS_OPTION, payload_len=len(payload))
    assert n == start + len(payload)
    check_emitted_tcp(bytes(buf[:n]), TS_OPTION, payload)


def test_emit_payload_may_be_a_view_of_the_buffer(headers_impl):
    buf = bytearray(300)
    buf[200:250] = b"z" * 50
    n = headers_impl.emit_tcp(buf, 0, MAC_B, MAC_A, IP_A, IP_B, 1, 2, 3, 4, 0x10, 5,
                              payload=memoryview(buf)[200:250])
    check_emitted_tcp(bytes(buf[:n]), b"", b"z" * 50)


@SETTINGS
@given(payload=st.binary(max_size=1500), offset=st.integers(0, 7), df=st.booleans(),
       ports=st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)))
def test_emit_udp_round_trip(headers_impl, payload, offset, df, ports):
    buf = bytearray(offset + 42 + len(payload))
    n = headers_impl.emit_udp(buf, offset, MAC_B, MAC_A, IP_A, IP_B, *ports, payload=payload,
                              ip_id=7, ttl=9, tos=3, dont_fragment=df)
    assert n == 42 + len(payload) == len(buf) - offset
    frame = bytes(buf[offset:])
    assert inet_checksum(frame[14:34]) == 0
    check, = struct.unpack_from("!H", frame, 40)
    assert check != 0
    assert inet_checksum(pseudo(IP_A, IP_B, 17, 8 + len(payload)) + frame[34:]) == 0
    f = headers_impl.parse_frame(buf, offset)
    assert (f.layers, f.sport, f.dport, f.udp_len) == (3, *ports, 8 + len(payload))
    assert (f.ip_id, f.ip_ttl, f.ip_tos, f.ip_frag) == (7, 9, 3, 0x4000 if df else 0)
    assert frame[f.payload_offset - offset:] == payload


def test_emit_udp_computed_zero_is_sent_as_ffff(headers_impl):
    # Find the 2-byte payload that makes the computed checksum 0 (RFC 768).
    buf = bytearray(44)
    headers_impl.emit_udp(buf, 0, MAC_B, MAC_A, IP_A, IP_B, 7, 9, payload=b"\0\0")
    field = bytes(buf[40:42])  # == ~(sum of the rest), so using it as payload sums to 0xFFFF
    headers_impl.emit_udp(buf, 0, MAC_B, MAC_A, IP_A, IP_B, 7, 9, payload=field)
    assert buf[40:42] == b"\xff\xff"
    assert headers_impl.parse_frame(buf).payload_len == 2


def test_emit_udp_staging_and_c_equals_py():
    py, c = both()
    out = []
    for impl in (py, c):
        buf = bytearray(100)
        buf[42:52] = b"0123456789"
        n = impl.emit_udp(buf, 0, MAC_B, MAC_A, IP_A, IP_B, 1000, 2000, payload_len=10)
        out.append(bytes(buf[:n]))
    assert out[0] == out[1]
    assert out[0][42:] == b"0123456789"


MISUSE = [
    pytest.param({"buf": bytearray(53)}, ValueError, id="buffer-too-small"),
    pytest.param({"offset": 200}, ValueError, id="offset-past-buffer"),
    pytest.param({"offset": 150}, ValueError, id="frame-past-buffer"),
    pytest.param({"offset": -1}, ValueError, id="negative-offset"),
    pytest.param({"options": bytes(41)}, ValueError, id="options-too-long"),
    pytest.param({"sport": 65536}, ValueError, id="sport"),
    pytest.param({"dport": -1}, ValueError, id="dport"),
    pytest.param({"seq": 2**32}, ValueError, id="seq"),
    pytest.param({"ack": 2**80}, ValueError, id="ack-huge"),
    pytest.param({"flags": 256}, ValueError, id="flags"),
    pytest.param({"window": 65536}, ValueError, id="window"),
    pytest.param({"ip_src": -5}, ValueError, id="ip_src"),
    pytest.param({"ttl": 256}, ValueError, id="ttl"),
    pytest.param({"tos": 300}, ValueError, id="tos"),
    pytest.param({"ip_id": 70000}, ValueError, id="ip_id"),
    pytest.param({"urgent": 65536}, ValueError, id="urgent"),
    pytest.param({"eth_dst": b"\x01" * 5}, ValueError, id="mac-short"),
    pytest.param({"eth_src": bytearray(7)}, ValueError, id="mac-long"),
    pytest.param({"payload": b"abc", "payload_len": 4}, ValueError, id="payload-len-mismatch"),
    pytest.param({"payload_len": 147}, ValueError, id="staged-past-buffer"),
    pytest.param({"payload_len": 70000}, ValueError, id="payload-len-range"),
    pytest.param({"payload": bytes(65500), "buf": bytearray(70000)}, ValueError, id="ip-too-long"),
    pytest.param({"buf": bytes(200)}, TypeError, id="read-only-buffer"),
    pytest.param({"seq": 1.5}, TypeError, id="float-field"),
    pytest.param({"eth_dst": "ab:cd"}, TypeError, id="mac-not-bytes"),
    pytest.param({"options": [1, 2]}, TypeError, id="options-not-bytes"),
]


@pytest.mark.parametrize("change, error", MISUSE)
def test_emit_tcp_misuse(change, error):
    py, c = both()
    messages = []
    for impl in (py, c):
        kw = dict(buf=bytearray(200), offset=0, eth_dst=MAC_B, eth_src=MAC_A, ip_src=IP_A,
                  ip_dst=IP_B, sport=1, dport=2, seq=3, ack=4, flags=0x10, window=5)
        kw.update(change)
        if isinstance(kw["buf"], bytearray):
            kw["buf"] = bytearray(kw["buf"])  # a fresh one per implementation
        with pytest.raises(error) as info:
            impl.emit_tcp(**kw)
        messages.append(str(info.value))
    if error is ValueError:
        assert messages[0] == messages[1]


@pytest.mark.parametrize("change", [{"sport": 65536}, {"payload": bytes(65508)},
                                    {"offset": 190}, {"ttl": -1}, {"eth_src": b""}])
def test_emit_udp_misuse(change):
    py, c = both()
    messages = []
    for impl in (py, c):
        kw = dict(buf=bytearray(200), offset=0, eth_dst=MAC_B, eth_src=MAC_A, ip_src=IP_A,
                  ip_dst=IP_B, sport=1, dport=2)
        if "payload" in change:
            kw["buf"] = bytearray(70000)
        kw.update(change)
        with pytest.raises(ValueError) as info:
            impl.emit_udp(**kw)
        messages.append(str(info.value))
    assert messages[0] == messages[1]


def test_facade_reexports_the_chosen_implementation():
    from pystack import _accel
    from pystack.wire import headers

    assert headers.IMPLEMENTATION == _accel.IMPLEMENTATION
    impl = _accel.select("headers", load_implementation("py", "headers", "pystack.wire._headers_py"))
    assert headers.parse_frame is impl.parse_frame
    assert headers.FIELDS == impl.FIELDS
