# The parsed-frame value and the C-level parser, for other fast-path modules
# to cimport (the fields are then plain C reads).  See headers.pyx.

from libc.stdint cimport int64_t, uint32_t, uint64_t


cdef class Frame:
    cdef readonly int layers           # 1 Ethernet only, 2 IPv4 no L4, 3 TCP/UDP
    cdef uint64_t _eth_dst, _eth_src   # 48-bit MACs as integers; properties give bytes
    cdef readonly int ethertype
    cdef readonly Py_ssize_t ip_offset
    cdef readonly int ip_header_len, ip_total_len, ip_tos, ip_id, ip_frag, ip_ttl, ip_proto
    cdef readonly uint32_t ip_src, ip_dst
    cdef readonly Py_ssize_t l4_offset
    cdef readonly int sport, dport
    cdef readonly uint32_t seq, ack
    cdef readonly int tcp_flags, window, urgent, tcp_header_len
    cdef readonly int mss, wscale      # -1: option absent
    cdef readonly bint sack_permitted
    cdef readonly int64_t ts_val       # -1: option absent
    cdef readonly uint32_t ts_ecr
    cdef readonly tuple sack           # ((left, right), ...) or ()
    cdef readonly int udp_len
    cdef readonly Py_ssize_t payload_offset, payload_len


# Parse the frame buf[offset:offset+length] (the caller has checked that range
# lies inside its buffer).  Raises MalformedPacket exactly as parse_frame.
cdef Frame parse_frame_c(const unsigned char* buf, Py_ssize_t offset, Py_ssize_t length,
                         bint verify)
