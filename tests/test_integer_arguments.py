"""Integer arguments of every fast-path module, both implementations.

The rule both twins keep at every public entry point: an integer argument
takes anything ``operator.index`` takes -- ``int``, ``bool``, numpy integers
(``FrameBatch.offsets``/``lengths`` items are numpy integers) -- and uses it
as that int; anything else (a float, None, a str) raises TypeError.  A C
conversion that truncated a float (fd 1.9 -> 1) or took None as empty data
would silently do something else than asked.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import load_implementation

PURE = {
    "checksum": "pystack.wire._checksum_py",
    "headers": "pystack.wire._headers_py",
    "assembler": "pystack.storage._assembler_py",
    "tapio": "pystack.phy._tapio_py",
}

MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")

#: The good value of an ``fd`` argument: an fd open on /dev/null (see ``run``).
FD = object()


def _emit_tcp(m, **change):
    kw = dict(buf=bytearray(100), offset=0, eth_dst=MAC_B, eth_src=MAC_A, ip_src=1, ip_dst=2,
              sport=1, dport=2, seq=3, ack=4, flags=0x10, window=5)
    kw.update(change)
    n = m.emit_tcp(**kw)
    return n, bytes(kw["buf"])


def _emit_udp(m, **change):
    kw = dict(buf=bytearray(100), offset=0, eth_dst=MAC_B, eth_src=MAC_A, ip_src=1, ip_dst=2,
              sport=1, dport=2)
    kw.update(change)
    n = m.emit_udp(**kw)
    return n, bytes(kw["buf"])


def _batch(m, max_frames, frame_size):
    b = m.FrameBatch(max_frames, frame_size)
    return b.max_frames, b.frame_size, type(b.max_frames), type(b.frame_size)


def _assembler(asm):
    return asm.capacity, type(asm.capacity), asm.rcv_nxt, type(asm.rcv_nxt), asm.window, asm.read()


def _inserted(m, seq):
    asm = m.Assembler(16, 5)
    advanced = asm.insert(seq, b"abc")
    return advanced, asm.rcv_nxt, asm.sack_blocks(), asm.read()


def _held(m):
    asm = m.Assembler(16)
    asm.insert(0, b"abcd")
    asm.insert(6, b"gh")
    return asm


# (module, argument, call(module, value), a good value for the argument)
CASES = [
    ("checksum", "ones_sum initial", lambda m, x: m.ones_sum(b"abc", x), 7),
    ("checksum", "checksum initial", lambda m, x: m.checksum(b"abc", x), 7),
    ("checksum", "pseudo_header_sum src", lambda m, x: m.pseudo_header_sum(x, 2, 6, 20), 0x0A000001),
    ("checksum", "pseudo_header_sum dst", lambda m, x: m.pseudo_header_sum(1, x, 6, 20), 0x0A000002),
    ("checksum", "pseudo_header_sum proto", lambda m, x: m.pseudo_header_sum(1, 2, x, 20), 6),
    ("checksum", "pseudo_header_sum length", lambda m, x: m.pseudo_header_sum(1, 2, 6, x), 20),
    ("checksum", "update16 check", lambda m, x: m.update16(x, 2, 3), 0x1234),
    ("checksum", "update16 old", lambda m, x: m.update16(1, x, 3), 2),
    ("checksum", "update16 new", lambda m, x: m.update16(1, 2, x), 3),
    ("checksum", "update32 check", lambda m, x: m.update32(x, 2, 3), 0x1234),
    ("checksum", "update32 old", lambda m, x: m.update32(1, x, 3), 0x0A000001),
    ("checksum", "update32 new", lambda m, x: m.update32(1, 2, x), 0x0A000002),
    ("headers", "parse_frame offset", lambda m, x: m.parse_frame(bytes(60), x).as_dict(), 1),
    ("headers", "parse_frame length", lambda m, x: m.parse_frame(bytes(60), 0, x).as_dict(), 20),
    *[("headers", f"emit_tcp {name}", lambda m, x, name=name: _emit_tcp(m, **{name: x}), good)
      for name, good in [("offset", 1), ("ip_src", 7), ("ip_dst", 8), ("sport", 80), ("dport", 81),
                         ("seq", 9), ("ack", 10), ("flags", 0x18), ("window", 11),
                         ("payload_len", 3), ("ip_id", 12), ("ttl", 13), ("tos", 14), ("urgent", 15)]],
    *[("headers", f"emit_udp {name}", lambda m, x, name=name: _emit_udp(m, **{name: x}), good)
      for name, good in [("offset", 1), ("ip_src", 7), ("ip_dst", 8), ("sport", 80), ("dport", 81),
                         ("payload_len", 3), ("ip_id", 12), ("ttl", 13), ("tos", 14)]],
    ("assembler", "Assembler capacity", lambda m, x: _assembler(m.Assembler(x)), 8),
    ("assembler", "Assembler rcv_nxt", lambda m, x: _assembler(m.Assembler(8, x)), 99),
    ("assembler", "Assembler max_ranges",
     lambda m, x: (m.Assembler(8, 0, x).insert(2, b"a"), m.Assembler(8, 0, x).range_count), 2),
    ("assembler", "insert seq", _inserted, 5),
    ("assembler", "sack_blocks max_blocks", lambda m, x: _held(m).sack_blocks(x), 1),
    ("assembler", "consume n", lambda m, x: (lambda a: (a.consume(x), a.read()))(_held(m)), 2),
    ("assembler", "read n", lambda m, x: _held(m).read(x), 2),
    ("tapio", "FrameBatch max_frames", lambda m, x: _batch(m, x, 64), 3),
    ("tapio", "FrameBatch frame_size", lambda m, x: _batch(m, 3, x), 64),
    ("tapio", "FrameBatch.frame i", lambda m, x: m.FrameBatch(1, 64).frame(x), 0),
    ("tapio", "FrameBatch.read fd", lambda m, x: m.FrameBatch(1, 64).read(x), FD),
    ("tapio", "write_batch fd", lambda m, x: m.write_batch(x, [b"frame"]), FD),
    ("tapio", "write_batch fd, nothing to write", lambda m, x: m.write_batch(x, []), FD),
]
IDS = [arg for _, arg, _, _ in CASES]


@pytest.fixture(scope="module")
def devnull():
    fd = os.open(os.devnull, os.O_RDWR | os.O_NONBLOCK)
    yield fd
    os.close(fd)


def run(call, module, value):
    """What the call did: ("ok", result) or ("raised", exception type, message)."""
    try:
        return ("ok", call(module, value))
    except Exception as exc:  # compared, never swallowed: the outcomes must be equal
        return ("raised", type(exc), str(exc))


@pytest.mark.parametrize("kind", ["py", "c"])
@pytest.mark.parametrize("bad", [1.5, 1.0, None, "1"], ids=["float", "integral-float", "None", "str"])
@pytest.mark.parametrize("module, arg, call, good", CASES, ids=IDS)
def test_non_integers_raise_type_error(module, arg, call, good, bad, kind):
    impl = load_implementation(kind, module, PURE[module])
    with pytest.raises(TypeError):
        call(impl, bad)


@pytest.mark.parametrize("kind", ["py", "c"])
@pytest.mark.parametrize("module, arg, call, good", CASES, ids=IDS)
def test_numpy_integers_and_bools_are_integers(module, arg, call, good, kind, devnull):
    """np.int64(v), np.int32(v) and (for 0 and 1) bools do exactly what the int v does."""
    impl = load_implementation(kind, module, PURE[module])
    if good is FD:
        good = devnull
    expected = run(call, impl, good)
    for value in (np.int64(good), np.int32(good)):
        assert run(call, impl, value) == expected, type(value)
    if good is not devnull:  # True would be fd 1, stdout
        for flag in (False, True):
            assert run(call, impl, flag) == run(call, impl, int(flag))


@pytest.mark.parametrize("module, arg, call, good", CASES, ids=IDS)
def test_both_implementations_agree(module, arg, call, good, devnull):
    py = load_implementation("py", module, PURE[module])
    c = load_implementation("c", module, PURE[module])
    if good is FD:
        values = [devnull, np.int64(devnull), 2**70, -1]  # True would be fd 1, stdout
    else:
        values = [good, np.int64(good), True, 2**70, -1]
    for value in values:
        outcome_py, outcome_c = run(call, py, value), run(call, c, value)
        if outcome_py[0] == "raised" and outcome_py[1] is TypeError:
            assert outcome_c[:2] == outcome_py[:2], value  # TypeError wording may differ
        else:
            assert outcome_c == outcome_py, value


def test_fd_out_of_c_int_range_is_overflow_error_before_any_io():
    for kind in ("py", "c"):
        tapio = load_implementation(kind, "tapio", PURE["tapio"])
        with pytest.raises(OverflowError, match="does not fit in a C int"):
            tapio.write_batch(2**40, [])
        with pytest.raises(OverflowError, match="does not fit in a C int"):
            tapio.FrameBatch(1, 64).read(-(2**31) - 1)


def test_assembler_insert_refuses_none_data():
    for kind in ("py", "c"):
        asm = load_implementation(kind, "assembler", PURE["assembler"]).Assembler(8)
        with pytest.raises(TypeError):
            asm.insert(0, None)
        assert asm.rcv_nxt == 0 and asm.dsack is None


def test_assembler_bool_capacity_is_normalized():
    for kind in ("py", "c"):
        asm = load_implementation(kind, "assembler", PURE["assembler"]).Assembler(True, False, True)
        assert type(asm.capacity) is int and asm.capacity == 1
        assert type(asm.rcv_nxt) is int and asm.rcv_nxt == 0
