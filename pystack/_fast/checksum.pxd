# C-level Internet checksum for the other fast-path modules (cimport these).
#
# Every sum here is in the *big-endian* domain of RFC 1071: the value the
# pure twin (pystack/wire/_checksum_py.py) computes.  A folded sum is 0 only
# when every input word was zero; otherwise it is 1..0xFFFF (0xFFFF is the
# one's complement "negative zero").

from libc.stdint cimport uint16_t, uint32_t, uint64_t


cdef uint32_t ones_sum_c(const unsigned char* p, size_t n, uint32_t initial) noexcept nogil
    # Folded one's complement sum of p[0:n] as big-endian 16-bit words, an odd
    # last byte padded with zero (RFC 1071 §4.1), plus ``initial`` (any 32-bit
    # value, itself taken as a sum).  Returns 0..0xFFFF; 0 only if all is zero.


cdef inline uint32_t fold16(uint64_t s) noexcept nogil:
    # End-around-carry fold of a 64-bit sum to 16 bits.  Keeps the value mod
    # 0xFFFF and never turns a non-zero sum into 0 (RFC 1071 §2(C)).
    s = (s & 0xFFFFFFFFU) + (s >> 32)
    s = (s & 0xFFFFFFFFU) + (s >> 32)
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return <uint32_t>s


cdef inline uint32_t pseudo_header_sum_c(uint32_t src, uint32_t dst, uint32_t proto,
                                         uint32_t length) noexcept nogil:
    # Folded sum of the IPv4 pseudo-header (RFC 9293 §3.1, RFC 768).
    return fold16(<uint64_t>(src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF)
                  + proto + length)


cdef inline uint16_t checksum_c(const unsigned char* p, size_t n, uint32_t initial) noexcept nogil:
    # The Internet checksum: ~ones_sum.  0 over data whose checksum is correct.
    return <uint16_t>(~ones_sum_c(p, n, initial) & 0xFFFF)
