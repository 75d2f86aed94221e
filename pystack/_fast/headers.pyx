"""One-call frame parse and segment emit, Cython twin of ``pystack.wire._headers_py``.

Same API and results as the pure twin, whose module docstring has the wire
layout and the rules for absent fields; the same exception types, the same
MalformedPacket reasons and details, and the same ValueError messages (the
tests compare them).  TypeError messages may differ in wording (here they
come from the buffer protocol, there from ``memoryview``), and a
:class:`Frame`'s attributes are read-only here.  Otherwise what differs is
only how:

* the frame comes in through the buffer protocol (``PyBUF_SIMPLE``; an exact
  ``bytes`` is read in place), not a typed memoryview, whose per-call Cython
  memoryview object costs about as much as the whole parse;
* a :class:`Frame` is one C struct-backed object (no dict; a freelist; not
  GC-tracked, since it holds only C integers -- the MACs as 48-bit integers,
  turned into bytes when read -- and a tuple of int pairs), filled field by
  field from big-endian loads;
* checksums use the C functions of ``checksum.pxd``.

Validation order (each step raises ``pystack.errors.malformed(reason, ...)``):
Ethernet length; IPv4 length, version, IHL, total length, header checksum;
then for TCP: length, data offset, checksum, options; for UDP: length,
length field, checksum.  Lengths are always checked before the bytes they
cover are read.
"""

cimport cython
from cpython.buffer cimport (PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release,
                             PyObject_GetBuffer)
from cpython.bytes cimport (PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize,
                            PyBytes_GET_SIZE)
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy, memmove, memset

from pystack._fast.checksum cimport checksum_c, pseudo_header_sum_c

from operator import index as _index

from pystack.errors import malformed

cdef extern from "Python.h":
    long long PyLong_AsLongLongAndOverflow(object obj, int* overflow) except? -1


cdef enum:
    ETH_HEADER_LEN = 14
    IPV4_MIN_HEADER_LEN = 20
    TCP_MIN_HEADER_LEN = 20
    UDP_HEADER_LEN = 8
    TCP_MAX_OPTIONS_LEN = 40    # 4-bit data offset: at most a 60-byte header (RFC 9293 §3.1)
    ETHERTYPE_IPV4 = 0x0800
    PROTO_TCP = 6
    PROTO_UDP = 17
    IP_DF = 0x4000              # RFC 791 §3.1 flags: DF 0x4000, MF 0x2000,
    IP_MF_AND_OFFSET = 0x3FFF   # then 13 bits of fragment offset
    # TCP option kinds (RFC 9293 §3.2, RFC 7323, RFC 2018)
    OPT_EOL = 0
    OPT_NOP = 1
    OPT_MSS = 2
    OPT_WSCALE = 3
    OPT_SACK_PERMITTED = 4
    OPT_SACK = 5
    OPT_TIMESTAMPS = 8

#: The attributes of a :class:`Frame`, in order.
FIELDS = (
    "layers",
    "eth_dst", "eth_src", "ethertype",
    "ip_offset", "ip_header_len", "ip_total_len", "ip_tos", "ip_id", "ip_frag",
    "ip_ttl", "ip_proto", "ip_src", "ip_dst",
    "l4_offset", "sport", "dport",
    "seq", "ack", "tcp_flags", "window", "urgent", "tcp_header_len",
    "mss", "wscale", "sack_permitted", "ts_val", "ts_ecr", "sack",
    "udp_len",
    "payload_offset", "payload_len",
)

cdef tuple _NO_SACK = ()


# -- big-endian loads and stores (any alignment) --------------------------------

cdef inline uint32_t _be16(const unsigned char* p) noexcept nogil:
    return (<uint32_t>p[0] << 8) | p[1]


cdef inline uint32_t _be32(const unsigned char* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline uint64_t _be48(const unsigned char* p) noexcept nogil:
    return (<uint64_t>_be16(p) << 32) | _be32(p + 2)


cdef inline void _put16(unsigned char* p, uint32_t v) noexcept nogil:
    p[0] = <unsigned char>(v >> 8)
    p[1] = <unsigned char>v


cdef inline void _put32(unsigned char* p, uint32_t v) noexcept nogil:
    p[0] = <unsigned char>(v >> 24)
    p[1] = <unsigned char>(v >> 16)
    p[2] = <unsigned char>(v >> 8)
    p[3] = <unsigned char>v


cdef bytes _mac_bytes(uint64_t mac):
    cdef unsigned char b[6]
    _put16(b, <uint32_t>(mac >> 32))
    _put32(b + 2, <uint32_t>mac)
    return PyBytes_FromStringAndSize(<char*>b, 6)


@cython.freelist(16)
@cython.no_gc
@cython.final
cdef class Frame:
    """The values of one parsed frame (see ``pystack.wire._headers_py``).

    ``layers``: 1 = Ethernet only (not IPv4), 2 = IPv4 but no L4 (a fragment,
    or a protocol other than TCP/UDP; the payload is the IP payload), 3 = TCP
    or UDP.  Offsets are absolute offsets into the parsed buffer.
    """

    def __cinit__(self):
        # Allocation zeroes every field; these are the non-zero "absent"
        # values.  A Frame made from Python has nothing parsed (layers 0).
        self.mss = -1
        self.wscale = -1
        self.ts_val = -1
        self.sack = _NO_SACK

    @property
    def eth_dst(self):
        return _mac_bytes(self._eth_dst) if self.layers else b""

    @property
    def eth_src(self):
        return _mac_bytes(self._eth_src) if self.layers else b""

    def as_dict(self):
        """``{name: value}`` for every name in :data:`FIELDS`."""
        return {name: getattr(self, name) for name in FIELDS}

    def __repr__(self):
        return "Frame(" + ", ".join(f"{name}={getattr(self, name)!r}" for name in FIELDS) + ")"


# -- parse ----------------------------------------------------------------------

cdef object _bad_option(int kind, Py_ssize_t at, str what):
    return malformed("tcp.bad_option_length", f"option kind {kind} at option byte {at}: {what}")


cdef int _parse_tcp_options(const unsigned char* opt, Py_ssize_t n, Frame f) except -1:
    # The options in opt[0:n] (RFC 9293 §3.2).  MUST-4: EOL, NOP and MSS
    # understood (with window scale, SACK and timestamps).  MUST-5/MUST-64:
    # any alignment.  MUST-6: unknown kinds skipped by their length.  MUST-7:
    # an illegal length is an error.  An option seen twice: the last one wins.
    cdef Py_ssize_t i = 0, olen, j
    cdef int kind
    cdef list blocks
    while i < n:
        kind = opt[i]
        if kind == OPT_EOL:
            break  # the rest of the area is padding
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= n:
            raise _bad_option(kind, i, "the length byte is missing")
        olen = opt[i + 1]
        if olen < 2:
            raise _bad_option(kind, i, f"length {olen} < 2")
        if olen > n - i:
            raise _bad_option(kind, i, f"length {olen} runs past the {n}-byte option area")
        if kind == OPT_MSS:  # RFC 9293 §3.2: length 4
            if olen != 4:
                raise _bad_option(kind, i, f"length {olen}, MSS must be 4")
            f.mss = _be16(opt + i + 2)
        elif kind == OPT_WSCALE:  # RFC 7323 §2.2: length 3; shift > 14 is clamped by TCP
            if olen != 3:
                raise _bad_option(kind, i, f"length {olen}, window scale must be 3")
            f.wscale = opt[i + 2]
        elif kind == OPT_SACK_PERMITTED:  # RFC 2018 §2: length 2
            if olen != 2:
                raise _bad_option(kind, i, f"length {olen}, SACK-permitted must be 2")
            f.sack_permitted = True
        elif kind == OPT_SACK:  # RFC 2018 §3: length 2 + 8n, n >= 1
            if olen < 10 or (olen - 2) % 8:
                raise _bad_option(kind, i, f"length {olen}, SACK must be 2+8n with n >= 1")
            blocks = []
            j = i + 2
            while j < i + olen:
                blocks.append((_be32(opt + j), _be32(opt + j + 4)))
                j += 8
            f.sack = tuple(blocks)
        elif kind == OPT_TIMESTAMPS:  # RFC 7323 §3.2: length 10
            if olen != 10:
                raise _bad_option(kind, i, f"length {olen}, timestamps must be 10")
            f.ts_val = _be32(opt + i + 2)
            f.ts_ecr = _be32(opt + i + 6)
        i += olen
    return 0


cdef Frame parse_frame_c(const unsigned char* buf, Py_ssize_t offset, Py_ssize_t n, bint verify):
    cdef Frame f = Frame.__new__(Frame)
    cdef const unsigned char* e = buf + offset
    cdef const unsigned char* ip
    cdef const unsigned char* l4
    cdef Py_ssize_t avail, hlen, total_len, l4_len, thlen, udp_len
    cdef int ihl, version, doff
    cdef uint32_t proto

    if n < ETH_HEADER_LEN:
        raise malformed("ethernet.truncated", f"{n} bytes, an Ethernet II header needs 14")
    f._eth_dst = _be48(e)
    f._eth_src = _be48(e + 6)
    f.ethertype = _be16(e + 12)
    avail = n - ETH_HEADER_LEN
    f.payload_offset = offset + ETH_HEADER_LEN
    f.payload_len = avail
    if f.ethertype != ETHERTYPE_IPV4:
        f.layers = 1  # ARP, IPv6, VLAN tags...: the caller looks at ethertype
        return f

    # IPv4, RFC 791 §3.1.  Lengths first, then the checksum, then the fields.
    ip = e + ETH_HEADER_LEN
    if avail < IPV4_MIN_HEADER_LEN:
        raise malformed("ipv4.truncated",
                        f"{avail} bytes after the Ethernet header, IPv4 needs 20")
    version = ip[0] >> 4
    if version != 4:
        raise malformed("ipv4.bad_version", f"version {version}")
    ihl = ip[0] & 0x0F
    hlen = ihl * 4
    if ihl < 5 or hlen > avail:
        raise malformed("ipv4.bad_ihl",
                        f"IHL {ihl} ({hlen} bytes), {avail} bytes after the Ethernet header")
    total_len = _be16(ip + 2)
    if total_len < hlen or total_len > avail:
        raise malformed("ipv4.bad_total_length",
                        f"total length {total_len}, header {hlen} bytes, "
                        f"{avail} bytes after the Ethernet header")
    if verify and checksum_c(ip, <size_t>hlen, 0) != 0:
        raise malformed("ipv4.bad_checksum",
                        f"header checksum 0x{_be16(ip + 10):04x} does not verify")
    f.ip_offset = offset + ETH_HEADER_LEN
    f.ip_header_len = hlen
    f.ip_total_len = total_len
    f.ip_tos = ip[1]
    f.ip_id = _be16(ip + 4)
    f.ip_frag = _be16(ip + 6)
    f.ip_ttl = ip[8]
    proto = ip[9]
    f.ip_proto = proto
    f.ip_src = _be32(ip + 12)
    f.ip_dst = _be32(ip + 16)
    l4 = ip + hlen
    l4_len = total_len - hlen  # Ethernet padding past total_len is ignored
    f.payload_offset = f.ip_offset + hlen
    f.payload_len = l4_len
    # A fragment (MF set or a non-zero offset) is reassembled before L4 is read.
    if (f.ip_frag & IP_MF_AND_OFFSET) or (proto != PROTO_TCP and proto != PROTO_UDP):
        f.layers = 2
        return f

    if proto == PROTO_TCP:
        # TCP, RFC 9293 §3.1.
        if l4_len < TCP_MIN_HEADER_LEN:
            raise malformed("tcp.truncated", f"{l4_len} bytes of IP payload, TCP needs 20")
        doff = l4[12] >> 4
        thlen = doff * 4
        if doff < 5 or thlen > l4_len:
            raise malformed("tcp.bad_data_offset",
                            f"data offset {doff} ({thlen} bytes), segment of {l4_len} bytes")
        if verify and checksum_c(l4, <size_t>l4_len,
                                 pseudo_header_sum_c(f.ip_src, f.ip_dst, PROTO_TCP,
                                                     <uint32_t>l4_len)) != 0:
            raise malformed("tcp.bad_checksum", f"checksum 0x{_be16(l4 + 16):04x} does not verify")
        f.sport = _be16(l4)
        f.dport = _be16(l4 + 2)
        f.seq = _be32(l4 + 4)
        f.ack = _be32(l4 + 8)
        f.tcp_flags = l4[13]  # CWR ECE URG ACK PSH RST SYN FIN; the 4 reserved bits stay out
        f.window = _be16(l4 + 14)
        f.urgent = _be16(l4 + 18)
        f.tcp_header_len = thlen
        if thlen > TCP_MIN_HEADER_LEN:
            _parse_tcp_options(l4 + TCP_MIN_HEADER_LEN, thlen - TCP_MIN_HEADER_LEN, f)
        f.payload_offset += thlen
        f.payload_len = l4_len - thlen
    else:
        # UDP, RFC 768.
        if l4_len < UDP_HEADER_LEN:
            raise malformed("udp.truncated", f"{l4_len} bytes of IP payload, UDP needs 8")
        udp_len = _be16(l4 + 4)
        if udp_len < UDP_HEADER_LEN or udp_len > l4_len:
            raise malformed("udp.bad_length", f"UDP length {udp_len}, {l4_len} bytes of IP payload")
        # A transmitted checksum of 0 means the sender computed none (RFC 768).
        if verify and _be16(l4 + 6) != 0 and checksum_c(
                l4, <size_t>udp_len,
                pseudo_header_sum_c(f.ip_src, f.ip_dst, PROTO_UDP, <uint32_t>udp_len)) != 0:
            raise malformed("udp.bad_checksum", f"checksum 0x{_be16(l4 + 6):04x} does not verify")
        f.sport = _be16(l4)
        f.dport = _be16(l4 + 2)
        f.udp_len = udp_len
        f.payload_offset += UDP_HEADER_LEN
        f.payload_len = udp_len - UDP_HEADER_LEN
    f.l4_offset = f.ip_offset + hlen
    f.layers = 3
    return f


# -- buffers and argument checks --------------------------------------------------

cdef int _get_buffer(object obj, Py_buffer* view, int flags) except -1:
    # C-contiguous bytes of any exporter.  A strided view is refused with
    # BufferError (memoryview) or ValueError (numpy), and a read-only one asked
    # to be writable with BufferError; the pure twin's memoryview.cast and
    # readonly check raise TypeError there, so do we.
    try:
        PyObject_GetBuffer(obj, view, flags)
    except (BufferError, ValueError):
        if flags & PyBUF_WRITABLE:
            raise TypeError("buf must be a writable bytes-like object") from None
        raise TypeError(f"expected a C-contiguous bytes-like object, "
                        f"not {type(obj).__name__}") from None
    return 0


cdef Py_ssize_t _read_small(object obj, unsigned char* dst, Py_ssize_t cap) except -1:
    # Copy a small bytes-like object into dst when it fits in cap bytes;
    # return its length either way (the caller checks it).
    cdef Py_buffer view
    cdef Py_ssize_t n
    if PyBytes_CheckExact(obj):
        n = PyBytes_GET_SIZE(obj)
        if n <= cap:
            memcpy(dst, PyBytes_AS_STRING(obj), n)
        return n
    _get_buffer(obj, &view, PyBUF_SIMPLE)
    n = view.len
    if n <= cap:
        memcpy(dst, view.buf, n)
    PyBuffer_Release(&view)
    return n


cdef int _out_of_range(object value, long long limit, str name) except -1:
    raise ValueError(f"{name} must be in 0..{limit}, got {value!r}")


cdef inline long long _uint(object value, long long limit, str name) except -1:
    # An int in 0..limit, else ValueError (TypeError for a non-integer).
    # No try/except here: saving the exception state for it would cost more
    # than the conversion, and an emit makes a dozen of these.
    cdef int overflow = 0
    cdef long long v = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow or v < 0 or v > limit:
        return _out_of_range(value, limit, name)
    return v


cdef int _frame_bounds(Py_ssize_t size, object offset, object length,
                       Py_ssize_t* off, Py_ssize_t* n) except -1:
    cdef int ovf_o = 0, ovf_l = 0
    cdef long long o = PyLong_AsLongLongAndOverflow(offset, &ovf_o)
    cdef long long ln = PyLong_AsLongLongAndOverflow(length, &ovf_l)
    if ovf_o or o < 0 or o > size:
        raise ValueError(f"offset {_index(offset)} outside a buffer of {size} bytes")
    if ln == -1 and not ovf_l:
        off[0] = <Py_ssize_t>o
        n[0] = size - <Py_ssize_t>o
        return 0
    if ovf_l or ln < 0 or ln > size - o:
        raise ValueError(f"length {_index(length)} at offset {o} outside a buffer of {size} bytes")
    off[0] = <Py_ssize_t>o
    n[0] = <Py_ssize_t>ln
    return 0


def parse_frame(buf, offset=0, length=-1, verify=True):
    """Parse Ethernet II + IPv4 + TCP/UDP at ``buf[offset:offset+length]`` into a Frame.

    ``length`` -1 means to the end of ``buf``.  With ``verify`` the IPv4
    header checksum and the TCP/UDP checksum are checked.  Bad bytes raise
    :class:`pystack.errors.MalformedPacket` (reasons in ``pystack.errors``);
    a bad ``offset``/``length`` raises ValueError.
    """
    cdef Py_buffer view
    cdef Py_ssize_t off, n
    cdef bint check = verify
    if PyBytes_CheckExact(buf):
        # Immutable and referenced by our caller: read in place, no buffer export.
        _frame_bounds(PyBytes_GET_SIZE(buf), offset, length, &off, &n)
        return parse_frame_c(<const unsigned char*>PyBytes_AS_STRING(buf), off, n, check)
    # Anything else is pinned (a bytearray cannot be resized) while it is read.
    _get_buffer(buf, &view, PyBUF_SIMPLE)
    try:
        _frame_bounds(view.len, offset, length, &off, &n)
        return parse_frame_c(<const unsigned char*>view.buf, off, n, check)
    finally:
        PyBuffer_Release(&view)


# -- emit -------------------------------------------------------------------------

cdef Py_ssize_t _write_eth_ipv4(unsigned char* p, const unsigned char* dst_mac,
                                const unsigned char* src_mac, uint32_t tos, uint32_t total_len,
                                uint32_t ip_id, uint32_t frag, uint32_t ttl, uint32_t proto,
                                uint32_t ip_src, uint32_t ip_dst) noexcept nogil:
    # Ethernet II + a 20-byte IPv4 header with its checksum; returns the L4 offset.
    cdef unsigned char* ip = p + ETH_HEADER_LEN
    memcpy(p, dst_mac, 6)
    memcpy(p + 6, src_mac, 6)
    _put16(p + 12, ETHERTYPE_IPV4)
    ip[0] = 0x45  # version 4, IHL 5 (RFC 791 §3.1)
    ip[1] = <unsigned char>tos
    _put16(ip + 2, total_len)
    _put16(ip + 4, ip_id)
    _put16(ip + 6, frag)
    ip[8] = <unsigned char>ttl
    ip[9] = <unsigned char>proto
    _put16(ip + 10, 0)
    _put32(ip + 12, ip_src)
    _put32(ip + 16, ip_dst)
    _put16(ip + 10, checksum_c(ip, IPV4_MIN_HEADER_LEN, 0))
    return ETH_HEADER_LEN + IPV4_MIN_HEADER_LEN


cdef int _read_mac(object value, unsigned char* dst, str name) except -1:
    cdef Py_ssize_t n = _read_small(value, dst, 6)
    if n != 6:
        raise ValueError(f"{name} must be 6 bytes, got {n}")
    return 0


def emit_tcp(buf, offset, eth_dst, eth_src, ip_src, ip_dst, sport, dport, seq, ack, flags,
             window, options=b"", payload=None, payload_len=0, ip_id=0, ttl=64, tos=0,
             dont_fragment=True, urgent=0):
    """Write Ethernet + IPv4 + TCP (+ options + payload) at ``buf[offset]``; return the frame length.

    ``options`` (at most 40 bytes) is padded with zero bytes (EOL) to a
    multiple of 4.  ``payload`` is copied after the header; when it is None,
    the ``payload_len`` bytes already at the payload position in ``buf`` are
    sent (zero-copy staging).  A given ``payload`` may be a view of ``buf``
    (copied as by memmove) but must not overlap the headers.  Both checksums
    are filled in.  No Ethernet minimum-size padding is added.  Caller
    misuse (a field out of range, a buffer too small) raises ValueError.
    """
    cdef Py_buffer bv, pv
    cdef bint have_payload = False
    cdef unsigned char dst_mac[6]
    cdef unsigned char src_mac[6]
    cdef unsigned char opts[TCP_MAX_OPTIONS_LEN]
    cdef Py_ssize_t off, optlen, plen, thlen, tcp_len, total_len, frame_len
    cdef uint32_t src, dst, sp, dp, sq, ak, fl, win, ipid, tl, tosv, urg, frag
    cdef unsigned char* p
    cdef unsigned char* t

    _get_buffer(buf, &bv, PyBUF_WRITABLE)
    try:
        # Checked in the pure twin's order, so both raise the same error first.
        off = _uint(offset, bv.len, "offset")
        _read_mac(eth_dst, dst_mac, "eth_dst")
        _read_mac(eth_src, src_mac, "eth_src")
        src = _uint(ip_src, 0xFFFFFFFF, "ip_src")
        dst = _uint(ip_dst, 0xFFFFFFFF, "ip_dst")
        sp = _uint(sport, 0xFFFF, "sport")
        dp = _uint(dport, 0xFFFF, "dport")
        sq = _uint(seq, 0xFFFFFFFF, "seq")
        ak = _uint(ack, 0xFFFFFFFF, "ack")
        fl = _uint(flags, 0xFF, "flags")
        win = _uint(window, 0xFFFF, "window")
        optlen = _read_small(options, opts, TCP_MAX_OPTIONS_LEN)
        if optlen > TCP_MAX_OPTIONS_LEN:
            raise ValueError(f"options of {optlen} bytes, at most 40 fit a TCP header")
        plen = _uint(payload_len, 0xFFFF, "payload_len")
        if payload is not None:
            _get_buffer(payload, &pv, PyBUF_SIMPLE)
            have_payload = True
            if plen != 0 and plen != pv.len:
                raise ValueError(f"payload_len {plen} but a payload of {pv.len} bytes was given")
            plen = pv.len
        ipid = _uint(ip_id, 0xFFFF, "ip_id")
        tl = _uint(ttl, 0xFF, "ttl")
        tosv = _uint(tos, 0xFF, "tos")
        urg = _uint(urgent, 0xFFFF, "urgent")
        frag = IP_DF if dont_fragment else 0
        thlen = TCP_MIN_HEADER_LEN + ((optlen + 3) & ~3)
        tcp_len = thlen + plen
        total_len = IPV4_MIN_HEADER_LEN + tcp_len
        if total_len > 0xFFFF:
            raise ValueError(f"IPv4 total length {total_len} > 65535")
        frame_len = ETH_HEADER_LEN + total_len
        if frame_len > bv.len - off:
            raise ValueError(f"a {frame_len}-byte frame at offset {off} "
                             f"does not fit a buffer of {bv.len} bytes")

        p = <unsigned char*>bv.buf + off
        t = p + _write_eth_ipv4(p, dst_mac, src_mac, tosv, <uint32_t>total_len, ipid, frag, tl,
                                PROTO_TCP, src, dst)
        _put16(t, sp)
        _put16(t + 2, dp)
        _put32(t + 4, sq)
        _put32(t + 8, ak)
        t[12] = <unsigned char>((thlen // 4) << 4)  # data offset; reserved bits 0
        t[13] = <unsigned char>fl
        _put16(t + 14, win)
        _put16(t + 16, 0)
        _put16(t + 18, urg)
        memcpy(t + TCP_MIN_HEADER_LEN, opts, optlen)
        memset(t + TCP_MIN_HEADER_LEN + optlen, OPT_EOL, thlen - TCP_MIN_HEADER_LEN - optlen)
        if have_payload:
            memmove(t + thlen, pv.buf, plen)
        _put16(t + 16, checksum_c(t, <size_t>tcp_len,
                                  pseudo_header_sum_c(src, dst, PROTO_TCP, <uint32_t>tcp_len)))
        return frame_len
    finally:
        if have_payload:
            PyBuffer_Release(&pv)
        PyBuffer_Release(&bv)


def emit_udp(buf, offset, eth_dst, eth_src, ip_src, ip_dst, sport, dport, payload=None,
             payload_len=0, ip_id=0, ttl=64, tos=0, dont_fragment=False):
    """Write Ethernet + IPv4 + UDP (+ payload) at ``buf[offset]``; return the frame length.

    As :func:`emit_tcp`.  A computed UDP checksum of 0 is sent as 0xFFFF,
    since 0 on the wire means "no checksum" (RFC 768).
    """
    cdef Py_buffer bv, pv
    cdef bint have_payload = False
    cdef unsigned char dst_mac[6]
    cdef unsigned char src_mac[6]
    cdef Py_ssize_t off, plen, udp_len, total_len, frame_len
    cdef uint32_t src, dst, sp, dp, ipid, tl, tosv, frag, check
    cdef unsigned char* p
    cdef unsigned char* u

    _get_buffer(buf, &bv, PyBUF_WRITABLE)
    try:
        off = _uint(offset, bv.len, "offset")
        _read_mac(eth_dst, dst_mac, "eth_dst")
        _read_mac(eth_src, src_mac, "eth_src")
        src = _uint(ip_src, 0xFFFFFFFF, "ip_src")
        dst = _uint(ip_dst, 0xFFFFFFFF, "ip_dst")
        sp = _uint(sport, 0xFFFF, "sport")
        dp = _uint(dport, 0xFFFF, "dport")
        plen = _uint(payload_len, 0xFFFF, "payload_len")
        if payload is not None:
            _get_buffer(payload, &pv, PyBUF_SIMPLE)
            have_payload = True
            if plen != 0 and plen != pv.len:
                raise ValueError(f"payload_len {plen} but a payload of {pv.len} bytes was given")
            plen = pv.len
        ipid = _uint(ip_id, 0xFFFF, "ip_id")
        tl = _uint(ttl, 0xFF, "ttl")
        tosv = _uint(tos, 0xFF, "tos")
        frag = IP_DF if dont_fragment else 0
        udp_len = UDP_HEADER_LEN + plen
        total_len = IPV4_MIN_HEADER_LEN + udp_len
        if total_len > 0xFFFF:
            raise ValueError(f"IPv4 total length {total_len} > 65535")
        frame_len = ETH_HEADER_LEN + total_len
        if frame_len > bv.len - off:
            raise ValueError(f"a {frame_len}-byte frame at offset {off} "
                             f"does not fit a buffer of {bv.len} bytes")

        p = <unsigned char*>bv.buf + off
        u = p + _write_eth_ipv4(p, dst_mac, src_mac, tosv, <uint32_t>total_len, ipid, frag, tl,
                                PROTO_UDP, src, dst)
        _put16(u, sp)
        _put16(u + 2, dp)
        _put16(u + 4, <uint32_t>udp_len)
        _put16(u + 6, 0)
        if have_payload:
            memmove(u + UDP_HEADER_LEN, pv.buf, plen)
        check = checksum_c(u, <size_t>udp_len,
                           pseudo_header_sum_c(src, dst, PROTO_UDP, <uint32_t>udp_len))
        _put16(u + 6, check if check != 0 else 0xFFFF)
        return frame_len
    finally:
        if have_payload:
            PyBuffer_Release(&pv)
        PyBuffer_Release(&bv)
