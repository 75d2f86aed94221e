"""The Internet checksum: known vectors, both implementations against an obvious oracle.

Every test runs on the pure twin (``py``) and the Cython module (``c``); the
hypothesis tests also compare the two directly, including 0 versus 0xFFFF.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import implementations, load_implementation

checksum_impl = implementations("checksum", "pystack.wire._checksum_py")

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def oracle_sum(data: bytes, initial: int = 0) -> int:
    """RFC 1071 by the book: big-endian words, end-around carry, odd byte padded."""
    data = bytes(data)
    if len(data) % 2:
        data += b"\0"
    total = initial
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def both():
    return (load_implementation("py", "checksum", "pystack.wire._checksum_py"),
            load_implementation("c", "checksum", "pystack.wire._checksum_py"))


# -- known vectors -----------------------------------------------------------

# RFC 1071 §3: the bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2.
RFC1071_EXAMPLE = bytes.fromhex("0001f203f4f5f6f7")

# An IPv4 header (192.168.0.1 -> 192.168.0.199, UDP, DF, TTL 64) whose
# checksum field holds the well-known value 0xb861.
IPV4_HEADER = bytes.fromhex("45000073000040004011b861c0a80001c0a800c7")


def test_rfc1071_example(checksum_impl):
    assert checksum_impl.ones_sum(RFC1071_EXAMPLE) == 0xDDF2
    assert checksum_impl.checksum(RFC1071_EXAMPLE) == 0x220D


def test_ipv4_header_known_checksum(checksum_impl):
    zeroed = IPV4_HEADER[:10] + b"\0\0" + IPV4_HEADER[12:]
    assert checksum_impl.checksum(zeroed) == 0xB861
    assert checksum_impl.checksum(IPV4_HEADER) == 0  # a correct header verifies to 0


def test_ipv4_header_ttl_decrement_incremental(checksum_impl):
    # RFC 1624 §3 use case: a router decrements the TTL (high byte of word 4).
    old_word = (IPV4_HEADER[8] << 8) | IPV4_HEADER[9]
    new_word = old_word - 0x0100
    new_check = checksum_impl.update16(0xB861, old_word, new_word)
    new_header = bytearray(IPV4_HEADER)
    new_header[8] -= 1
    new_header[10:12] = new_check.to_bytes(2, "big")
    assert checksum_impl.checksum(new_header) == 0
    assert new_check == 0xB961


@pytest.mark.parametrize("data, initial, expected", [
    (b"", 0, 0),                     # nothing at all: +0
    (b"\0", 0, 0),
    (b"\0" * 64, 0, 0),
    (b"\0" * 3, 0, 0),
    (b"", 1, 1),
    (b"\xff\xff", 0, 0xFFFF),        # a non-zero sum that is 0 mod 0xFFFF: -0
    (b"\x00\x01", 0xFFFE, 0xFFFF),
    (b"\0\0", 0xFFFF, 0xFFFF),
    (b"\xff", 0, 0xFF00),            # odd byte is a high byte (RFC 1071 §4.1)
    (b"\x01\x02\x03", 0, 0x0402),
    (b"", 0x1FFFE, 0xFFFF),          # initial itself is folded
])
def test_zero_versus_negative_zero(checksum_impl, data, initial, expected):
    assert checksum_impl.ones_sum(data, initial) == expected
    assert checksum_impl.checksum(data, initial) == ~expected & 0xFFFF


def test_pseudo_header_sum_known(checksum_impl):
    # 192.168.0.1 -> 192.168.0.199, UDP, length 0x5f: c0a8 + 0001 + c0a8 + 00c7 + 0011 + 005f
    expected = oracle_sum(bytes.fromhex("c0a80001c0a800c70011005f"))
    assert checksum_impl.pseudo_header_sum(0xC0A80001, 0xC0A800C7, 17, 0x5F) == expected
    assert checksum_impl.pseudo_header_sum(0, 0, 0, 0) == 0


# -- buffer kinds ---------------------------------------------------------------

def test_buffer_kinds(checksum_impl):
    raw = os.urandom(1001)
    expected = oracle_sum(raw)
    arr = np.frombuffer(raw, dtype=np.uint8)
    for data in (raw, bytearray(raw), memoryview(raw), arr, arr.copy(),
                 memoryview(b"x" + raw)[1:], np.frombuffer(b"xyz" + raw, dtype=np.uint8)[3:]):
        assert checksum_impl.ones_sum(data) == expected
    # Non-byte formats are read as their bytes.
    words = np.frombuffer(raw[:1000], dtype=np.uint16)
    assert checksum_impl.ones_sum(words) == oracle_sum(raw[:1000])
    two_d = np.frombuffer(raw[:1000], dtype=np.uint8).reshape(10, 100)
    assert checksum_impl.ones_sum(two_d) == oracle_sum(raw[:1000])


def test_non_contiguous_and_non_buffers_raise_typeerror(checksum_impl):
    with pytest.raises(TypeError):
        checksum_impl.ones_sum(memoryview(bytes(100))[::2])
    with pytest.raises(TypeError):
        checksum_impl.ones_sum(np.zeros((10, 10), dtype=np.uint8).T)
    with pytest.raises(TypeError):
        checksum_impl.checksum("not bytes")
    with pytest.raises(TypeError):
        checksum_impl.checksum(None)


def test_large_buffer_released_gil_path():
    py, c = both()
    data = os.urandom(300 * 1024 + 3)  # above the Cython module's no-GIL threshold
    assert c.ones_sum(data) == py.ones_sum(data) == oracle_sum(data)
    view = memoryview(data)[1:]
    assert c.checksum(view, 0x1234) == py.checksum(view, 0x1234)


# -- both implementations against the oracle and each other ----------------------

initials = st.one_of(st.just(0), st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1),
                     st.integers(0, 2**64 - 1))


@SETTINGS
@given(data=st.binary(max_size=600), start=st.integers(0, 7), cut=st.integers(0, 7),
       initial=initials)
def test_matches_oracle_at_any_offset(checksum_impl, data, start, cut, initial):
    view = memoryview(data)[min(start, len(data)):max(len(data) - cut, 0)]
    expected = oracle_sum(view, initial)
    assert checksum_impl.ones_sum(view, initial) == expected
    assert checksum_impl.checksum(view, initial) == ~expected & 0xFFFF


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2000), start=st.integers(0, 9), length=st.integers(0, 2000),
       initial=st.one_of(initials, st.integers(-(2**70), 2**70)),
       kind=st.sampled_from(["bytes", "bytearray", "memoryview", "numpy"]))
def test_c_equals_py(data, start, length, initial, kind):
    py, c = both()
    if kind == "bytearray":
        data = bytearray(data)
    elif kind == "numpy":
        data = np.frombuffer(data, dtype=np.uint8)
    view = memoryview(data)[start:start + length] if kind == "memoryview" else data[start:start + length]
    assert c.ones_sum(view, initial) == py.ones_sum(view, initial)
    assert c.checksum(view, initial) == py.checksum(view, initial)


@settings(max_examples=300, deadline=None)
@given(words=st.lists(st.sampled_from([0, 1, 0xFFFF, 0xFFFE, 0x8000]), max_size=40),
       initial=st.sampled_from([0, 1, 0xFFFF, 0x10000, 0x1FFFE, 2**32 - 1]))
def test_c_equals_py_on_carry_corner_cases(words, initial):
    # Sums that land exactly on 0, 0xFFFF and multiples of it, where an
    # implementation's fold could pick the wrong zero.
    py, c = both()
    data = b"".join(w.to_bytes(2, "big") for w in words)
    for view in (data, data[1:], data + b"\xff"):
        assert c.ones_sum(view, initial) == py.ones_sum(view, initial) == oracle_sum(view, initial)


@settings(max_examples=200, deadline=None)
@given(src=st.integers(0, 2**32 - 1), dst=st.integers(0, 2**32 - 1),
       proto=st.integers(0, 255), length=st.integers(0, 0xFFFF))
def test_pseudo_header_sum(src, dst, proto, length):
    py, c = both()
    expected = oracle_sum(src.to_bytes(4, "big") + dst.to_bytes(4, "big")
                          + bytes([0, proto]) + length.to_bytes(2, "big"))
    assert c.pseudo_header_sum(src, dst, proto, length) == expected
    assert py.pseudo_header_sum(src, dst, proto, length) == expected


@settings(max_examples=100, deadline=None)
@given(args=st.tuples(*[st.integers(-(2**70), 2**70)] * 4))
def test_pseudo_header_sum_any_int(args):
    py, c = both()
    assert c.pseudo_header_sum(*args) == py.pseudo_header_sum(*args)


@SETTINGS
@given(data=st.binary(min_size=2, max_size=200), pos=st.integers(0, 99))
def test_correct_checksum_verifies_to_zero(checksum_impl, data, pos):
    # Put the checksum at any even offset, as the IPv4/TCP/UDP headers do.
    pos = (pos * 2) % (len(data) - len(data) % 2)
    buf = bytearray(data)
    buf[pos:pos + 2] = b"\0\0"
    buf[pos:pos + 2] = checksum_impl.checksum(buf).to_bytes(2, "big")
    assert checksum_impl.checksum(buf) == 0


# -- incremental update (RFC 1624) ------------------------------------------------

@SETTINGS
@given(data=st.binary(min_size=2, max_size=100), index=st.integers(0, 49),
       new=st.integers(0, 0xFFFF))
def test_update16_equals_recomputation(checksum_impl, data, index, new):
    data = bytearray(data[: len(data) - len(data) % 2])
    index %= len(data) // 2
    old = int.from_bytes(data[2 * index:2 * index + 2], "big")
    check = checksum_impl.checksum(data)
    data[2 * index:2 * index + 2] = new.to_bytes(2, "big")
    recomputed = checksum_impl.checksum(data)
    updated = checksum_impl.update16(check, old, new)
    if any(data):
        assert updated == recomputed
    else:
        # All-zero data: recomputation says +0 (checksum 0xFFFF), RFC 1624's
        # update says -0 (0x0000); both verify.
        assert {updated, recomputed} <= {0, 0xFFFF}


@SETTINGS
@given(data=st.binary(min_size=4, max_size=100), index=st.integers(0, 24),
       new=st.integers(0, 2**32 - 1))
def test_update32_equals_recomputation(checksum_impl, data, index, new):
    data = bytearray(data[: len(data) - len(data) % 4])
    index %= len(data) // 4
    old = int.from_bytes(data[4 * index:4 * index + 4], "big")
    check = checksum_impl.checksum(data)
    data[4 * index:4 * index + 4] = new.to_bytes(4, "big")
    updated = checksum_impl.update32(check, old, new)
    if any(data):
        assert updated == checksum_impl.checksum(data)
    else:
        assert updated in (0, 0xFFFF)


@settings(max_examples=200, deadline=None)
@given(args=st.tuples(*[st.integers(-(2**70), 2**70)] * 3))
def test_update_c_equals_py_for_any_int(args):
    # Both take only the low 16 (32) bits of each argument, negative ints included.
    py, c = both()
    assert c.update16(*args) == py.update16(*args)
    assert c.update32(*args) == py.update32(*args)


def test_large_bytearray_is_pinned_while_summed():
    py, c = both()
    data = bytearray(os.urandom(512 * 1024))
    assert c.checksum(data) == py.checksum(data)


@pytest.fixture(params=["scalar", "vector"])
def c_kernel(request):
    """The Cython module with its AVX2 kernel switched off, or on (where the CPU has it)."""
    c = load_implementation("c", "checksum", "pystack.wire._checksum_py")
    before = c._vector_kernel()
    if c._vector_kernel(request.param == "vector") != (request.param == "vector"):
        c._vector_kernel(before)
        pytest.skip("this CPU has no AVX2")
    yield c
    c._vector_kernel(before)


def test_both_kernels_every_length_and_alignment(c_kernel):
    raw = bytes(random_bytes(1400))
    for start in range(8):
        for length in list(range(0, 300)) + [511, 512, 513, 1000, 1391]:
            view = memoryview(raw)[start:start + length]
            assert c_kernel.ones_sum(view) == oracle_sum(view), (start, length)
    big = random_bytes(300 * 1024 + 5)  # the no-GIL path, and many vector blocks
    assert c_kernel.ones_sum(big, 7) == oracle_sum(big, 7)
    ones = b"\xff" * 4096  # every lane near its maximum: carries everywhere
    assert c_kernel.ones_sum(ones) == 0xFFFF
    assert c_kernel.ones_sum(bytes(4096)) == 0


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=100, max_size=3000), start=st.integers(0, 63),
       initial=initials)
def test_both_kernels_equal_py(c_kernel, data, start, initial):
    py = load_implementation("py", "checksum", "pystack.wire._checksum_py")
    view = memoryview(data)[start:]
    assert c_kernel.ones_sum(view, initial) == py.ones_sum(view, initial)


def random_bytes(n: int) -> bytes:
    return np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()
