"""Internet checksum (RFC 1071, RFC 1624), Cython twin of ``pystack.wire._checksum_py``.

Same API and identical results as the pure twin -- including 0 versus 0xFFFF:
a sum is 0 only when ``initial`` and every word are zero.  The C functions in
``checksum.pxd`` are what ``headers.pyx`` (and any other .pyx) cimport.

How the sum is fast (RFC 1071 §2 gives the tricks):

* Byte-order independence (§2(B)): summing the buffer as *native* 16-bit
  words gives the big-endian sum byte-swapped.  On a little-endian host we
  sum natively and swap the folded 16-bit result once.
* Parallel summation (§2(C)): any word width works as long as carries wrap
  around.  We load 8 bytes at a time (``memcpy`` into a local, so any
  alignment is fine and the compiler emits a plain load) into four 64-bit
  accumulators with end-around carry, unrolled (§2(E)), which the compiler
  turns into four independent add/adc chains.  On CPUs with AVX2 a vector kernel takes the
  64-byte blocks first (see below).
* Deferred carries (§2(D)): the tail is summed as 32-bit words into a 64-bit
  accumulator, folded to 16 bits once at the end.

Buffers come in through the buffer protocol (``PyBUF_SIMPLE``: any
C-contiguous exporter, any format, any offset) rather than a typed memoryview:
acquiring a typed memoryview builds a Cython memoryview object per call,
which costs more than summing a 1500-byte packet.  Exact ``bytes`` and
``bytearray`` skip even the buffer protocol (some 20 ns a call).
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_CheckExact, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.long cimport PyLong_AsUnsignedLongLongMask, PyLong_CheckExact
from libc.stdint cimport uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

from operator import index as _index

cdef extern from *:
    """
    #if defined(__BYTE_ORDER__) && defined(__ORDER_BIG_ENDIAN__) && \
        __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    #define PYSTACK_HOST_BIG_ENDIAN 1
    #else
    #define PYSTACK_HOST_BIG_ENDIAN 0
    #endif
    """
    const bint PYSTACK_HOST_BIG_ENDIAN

# The vector kernel: on x86-64 CPUs with AVX2 (checked at run time, so the
# extension still runs on any x86-64), the bulk of a buffer is summed 64 bytes
# at a time as 32-bit halves in 64-bit lanes -- shifts, masks and adds only,
# no carries to chase -- 1.5 to 2x the scalar loop at 1500 bytes.  RFC 1071
# §2(C) parallel summation: 32-bit pieces sum to the same value mod 0xFFFF as
# their 16-bit words, and a sum of non-negative pieces is zero only if they
# all are.  Elsewhere the kernel is a stub that is never called.
cdef extern from *:
    """
    #if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    #include <immintrin.h>
    static int pystack_cpu_has_avx2(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2");
    }
    /* Sums whole 64-byte blocks of *pp[0:*pn] and advances *pp and *pn past
       them.  The result is an end-around-carry 64-bit sum (congruent, mod
       0xFFFF, to the native-order 16-bit word sum of those bytes). */
    __attribute__((target("avx2")))
    static uint64_t pystack_sum_blocks_avx2(const unsigned char **pp, size_t *pn) {
        const unsigned char *p = *pp;
        size_t n = *pn;
        const __m256i low32 = _mm256_set1_epi64x(0xFFFFFFFF);
        uint64_t acc = 0;
        while (n >= 64) {
            /* At most 2**28 blocks per pass: a lane then holds < 2**60 and
               four lanes added < 2**62, so nothing overflows. */
            size_t blocks = n / 64;
            if (blocks > ((size_t)1 << 28)) blocks = (size_t)1 << 28;
            n -= blocks * 64;
            __m256i a0 = _mm256_setzero_si256(), a1 = a0, b0 = a0, b1 = a0;
            for (; blocks; blocks--, p += 64) {
                __m256i v = _mm256_loadu_si256((const __m256i *)p);
                __m256i u = _mm256_loadu_si256((const __m256i *)(p + 32));
                a0 = _mm256_add_epi64(a0, _mm256_and_si256(v, low32));
                b0 = _mm256_add_epi64(b0, _mm256_srli_epi64(v, 32));
                a1 = _mm256_add_epi64(a1, _mm256_and_si256(u, low32));
                b1 = _mm256_add_epi64(b1, _mm256_srli_epi64(u, 32));
            }
            __m256i t = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(b0, b1));
            uint64_t lane[4], pass = 0;
            _mm256_storeu_si256((__m256i *)lane, t);
            for (int i = 0; i < 4; i++)
                pass += (lane[i] & 0xFFFFFFFF) + (lane[i] >> 32);   /* < 2**35 */
            acc += pass;
            acc += acc < pass;                                      /* end-around carry */
        }
        *pp = p;
        *pn = n;
        return acc;
    }
    #else
    static int pystack_cpu_has_avx2(void) { return 0; }
    static uint64_t pystack_sum_blocks_avx2(const unsigned char **pp, size_t *pn) {
        (void)pp; (void)pn;
        return 0;
    }
    #endif
    """
    int pystack_cpu_has_avx2() noexcept nogil
    uint64_t pystack_sum_blocks_avx2(const unsigned char** pp, size_t* pn) noexcept nogil

# Below this many bytes the vector kernel's setup is not worth it.
cdef enum:
    _VECTOR_MIN = 128

cdef bint _cpu_has_avx2 = pystack_cpu_has_avx2()
cdef bint _use_vector = _cpu_has_avx2

# Below this many bytes the sum runs with the GIL held.  Re-taking the GIL
# after a release can wait a whole switch interval (5 ms) behind another busy
# thread, which would dwarf the microseconds a packet-sized sum takes; only
# sums far larger than any IP datagram are worth releasing it for.
cdef enum:
    _NOGIL_THRESHOLD = 256 * 1024


cdef uint32_t ones_sum_c(const unsigned char* p, size_t n, uint32_t initial) noexcept nogil:
    cdef uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, w, s
    cdef uint32_t w32
    cdef uint16_t w16
    if _use_vector and n >= _VECTOR_MIN:
        a0 = pystack_sum_blocks_avx2(&p, &n)  # leaves n < 64 bytes at p
    # Four end-around-carry accumulators: each add either does not overflow,
    # or wraps by 2**64 and the carry is added back (2**64 == 1 mod 0xFFFF).
    # A non-zero accumulator never becomes zero this way.
    while n >= 32:
        memcpy(&w, p, 8)
        a0 += w
        a0 += a0 < w
        memcpy(&w, p + 8, 8)
        a1 += w
        a1 += a1 < w
        memcpy(&w, p + 16, 8)
        a2 += w
        a2 += a2 < w
        memcpy(&w, p + 24, 8)
        a3 += w
        a3 += a3 < w
        p += 32
        n -= 32
    # Eight 32-bit halves (< 2**35 together) plus at most seven 32-bit words
    # and a 16-bit one: no overflow in 64 bits.
    s = ((a0 & 0xFFFFFFFFU) + (a0 >> 32) + (a1 & 0xFFFFFFFFU) + (a1 >> 32)
         + (a2 & 0xFFFFFFFFU) + (a2 >> 32) + (a3 & 0xFFFFFFFFU) + (a3 >> 32))
    while n >= 4:
        memcpy(&w32, p, 4)
        s += w32
        p += 4
        n -= 4
    if n >= 2:
        memcpy(&w16, p, 2)
        s += w16
        p += 2
        n -= 2
    if n:
        # RFC 1071 §4.1: an odd last byte is the high byte of a word whose low
        # byte is zero -- the high byte of a big-endian word, i.e. the low
        # byte of a native little-endian one.
        if PYSTACK_HOST_BIG_ENDIAN:
            s += (<uint64_t>p[0]) << 8
        else:
            s += p[0]
    s = fold16(s)
    if not PYSTACK_HOST_BIG_ENDIAN:
        s = ((s & 0xFF) << 8) | (s >> 8)  # RFC 1071 §2(B)
    return fold16(s + initial)


cdef int _get_buffer(object data, Py_buffer* view) except -1:
    # PyBUF_SIMPLE asks for C-contiguous bytes.  Exporters refuse a strided
    # view with BufferError (memoryview) or ValueError (numpy); the pure twin
    # raises TypeError there (memoryview.cast), so do we.
    try:
        PyObject_GetBuffer(data, view, PyBUF_SIMPLE)
    except (BufferError, ValueError) as exc:
        raise TypeError(f"expected a C-contiguous bytes-like object: {exc}") from None
    return 0


cdef object _pure = None


cdef object _pure_twin():
    # The definition of record, for arguments outside the C integer domain
    # (negative or >= 2**64 ``initial``...), which none of our callers pass.
    global _pure
    if _pure is None:
        from pystack.wire import _checksum_py
        _pure = _checksum_py
    return _pure


cdef uint32_t _sum_object(object data, uint32_t initial) except? 0x10000:
    # The folded sum of any C-contiguous bytes-like object.
    cdef Py_buffer view
    cdef uint32_t result
    # Small exact bytes / bytearray: read their storage in place.  The GIL is
    # held and no Python code runs until the sum is done, so a bytearray
    # cannot be resized under us.
    if PyBytes_CheckExact(data) and PyBytes_GET_SIZE(data) < _NOGIL_THRESHOLD:
        return ones_sum_c(<const unsigned char*>PyBytes_AS_STRING(data),
                          <size_t>PyBytes_GET_SIZE(data), initial)
    if PyByteArray_CheckExact(data) and PyByteArray_GET_SIZE(data) < _NOGIL_THRESHOLD:
        return ones_sum_c(<const unsigned char*>PyByteArray_AS_STRING(data),
                          <size_t>PyByteArray_GET_SIZE(data), initial)
    # Anything else, or anything large (whose sum runs without the GIL), is
    # pinned through the buffer protocol while it is read.
    _get_buffer(data, &view)
    if view.len >= _NOGIL_THRESHOLD:
        with nogil:
            result = ones_sum_c(<const unsigned char*>view.buf, <size_t>view.len, initial)
    else:
        result = ones_sum_c(<const unsigned char*>view.buf, <size_t>view.len, initial)
    PyBuffer_Release(&view)
    return result


def ones_sum(data, initial=0):
    """The folded 16-bit one's complement sum of ``data``, plus ``initial``.

    Returns 0 only when ``initial`` and every word are zero; otherwise a value
    in 1..0xFFFF.  ``data`` is any C-contiguous bytes-like object.
    """
    cdef uint64_t init
    if not PyLong_CheckExact(initial):
        # A bool, a numpy integer...: as the int it is.  A float is a
        # TypeError, as in the pure twin; the C conversion would truncate it.
        # Exact ints, every ordinary call, cost one type comparison.
        return ones_sum(data, _index(initial))
    try:
        init = initial
    except OverflowError:
        return _pure_twin().ones_sum(data, initial)
    return _sum_object(data, fold16(init))


def checksum(data, initial=0):
    """The Internet checksum of ``data`` (RFC 1071): ~ones_sum(data, initial).

    Over a header whose checksum field is filled in correctly this is 0.
    """
    cdef uint64_t init
    if not PyLong_CheckExact(initial):
        return checksum(data, _index(initial))  # as in ones_sum
    try:
        init = initial
    except OverflowError:
        return _pure_twin().checksum(data, initial)
    return ~_sum_object(data, fold16(init)) & 0xFFFF


def pseudo_header_sum(src, dst, proto, length):
    """One's complement sum of the IPv4 pseudo-header (RFC 9293 §3.1; RFC 768).

    ``src`` and ``dst`` are IPv4 addresses as integers, ``proto`` the IP
    protocol number, ``length`` the TCP or UDP length (header plus data).
    """
    cdef uint64_t s, d, p, n
    if not (PyLong_CheckExact(src) and PyLong_CheckExact(dst) and PyLong_CheckExact(proto)
            and PyLong_CheckExact(length)):
        return pseudo_header_sum(_index(src), _index(dst), _index(proto), _index(length))  # as in ones_sum
    try:
        s = src
        d = dst
        p = proto
        n = length
    except OverflowError:
        return _pure_twin().pseudo_header_sum(src, dst, proto, length)
    if p > 0xFFFFFFFFFFFFULL or n > 0xFFFFFFFFFFFFULL:
        return _pure_twin().pseudo_header_sum(src, dst, proto, length)
    # Each term < 2**48: the sum cannot overflow 64 bits.
    return fold16((s >> 16) + (s & 0xFFFF) + (d >> 16) + (d & 0xFFFF) + p + n)


cdef inline uint32_t _update16(uint32_t check, uint32_t old, uint32_t new) noexcept:
    # RFC 1624 §3, eqn. 3: HC' = ~(~HC + ~m + m').
    cdef uint32_t total = (~check & 0xFFFF) + (~old & 0xFFFF) + (new & 0xFFFF)
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def update16(check, old, new):
    """Checksum after one 16-bit word of the data changed from ``old`` to ``new``.

    RFC 1624 §3, eqn. 3: HC' = ~(~HC + ~m + m'), which, unlike eqn. 2 of
    RFC 1141, never yields 0x0000 from a checksum that should be 0xFFFF.
    Only the low 16 bits of each argument count, as in the pure twin.
    """
    # The "mask" conversion is two's complement mod 2**64, so its low bits
    # equal Python's ``x & 0xFFFF`` for every int, negative ones included.
    return _update16(<uint32_t>(PyLong_AsUnsignedLongLongMask(check) & 0xFFFF),
                     <uint32_t>(PyLong_AsUnsignedLongLongMask(old) & 0xFFFF),
                     <uint32_t>(PyLong_AsUnsignedLongLongMask(new) & 0xFFFF))


def update32(check, old, new):
    """Checksum after an aligned 32-bit field (an IPv4 address) changed (RFC 1624)."""
    cdef uint64_t c = PyLong_AsUnsignedLongLongMask(check)
    cdef uint64_t o = PyLong_AsUnsignedLongLongMask(old)
    cdef uint64_t n = PyLong_AsUnsignedLongLongMask(new)
    cdef uint32_t r = _update16(c & 0xFFFF, (o >> 16) & 0xFFFF, (n >> 16) & 0xFFFF)
    return _update16(r, o & 0xFFFF, n & 0xFFFF)


def _vector_kernel(enable=None):
    """Whether the AVX2 kernel is in use; ``enable`` switches it (tests only).

    It can only be switched on where the CPU has AVX2.  Not part of the API
    shared with the pure twin.
    """
    global _use_vector
    if enable is not None:
        _use_vector = bool(enable) and _cpu_has_avx2
    return _use_vector
