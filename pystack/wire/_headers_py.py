"""One-call frame parse and segment emit, pure-Python twin of ``pystack._fast.headers``.

This module owns the hot path's view of a frame: :func:`parse_frame` goes
from the bytes of an Ethernet II frame carrying IPv4 and TCP or UDP to every
value the stack needs (a :class:`Frame`), validating lengths and checksums
first; :func:`emit_tcp` and :func:`emit_udp` write an outgoing segment's
headers, with both checksums, into a buffer the caller sized.  The
per-protocol modules (``ethernet``, ``ipv4``, ``tcp``, ``udp``) are the
readable reference; this is the fast lane, and ``pystack._fast.headers`` has
the same API and results, the same exception types, MalformedPacket reasons
and details and ValueError messages (TypeError wording may differ).  Integer
arguments take anything ``operator.index`` takes (``int``, ``bool``, numpy
integers) and raise TypeError for anything else, in both.

Wire layout (offsets from the start of the frame; RFC 894, RFC 791 §3.1,
RFC 9293 §3.1, RFC 768)::

     0  Ethernet: destination MAC (6), source MAC (6), ethertype (2)
    14  IPv4:  |ver|ihl| tos | total length | id | flags+frag off |
               | ttl | proto | header checksum | source | destination | options
    14+4*ihl   TCP: | sport | dport | seq | ack |doff|rsv| flags | window |
                    | checksum | urgent pointer | options (4*doff - 20) | data
               UDP: | sport | dport | length | checksum | data

Fields that a frame does not have are 0, except ``mss``, ``wscale`` and
``ts_val`` (-1: option absent), ``sack`` (``()``) and ``sack_permitted``
(False).  In particular, when ``layers == 1`` every ``ip_*`` field is 0
(``ip_proto`` too), and the TCP fields of a UDP frame (and ``udp_len`` of a
TCP frame) are 0 / -1 / ``()``.
"""

from __future__ import annotations

import struct
from operator import index as _index

from pystack.errors import malformed
from pystack.wire._checksum_py import checksum as _checksum
from pystack.wire._checksum_py import pseudo_header_sum as _pseudo_header_sum

_ETH_HEADER_LEN = 14
_IPV4_MIN_HEADER_LEN = 20
_TCP_MIN_HEADER_LEN = 20
_UDP_HEADER_LEN = 8
_TCP_MAX_OPTIONS_LEN = 40  # data offset is 4 bits: at most 60-byte header (RFC 9293 §3.1)
_ETHERTYPE_IPV4 = 0x0800
_PROTO_TCP = 6
_PROTO_UDP = 17

# RFC 791 §3.1: flags are 0, DF (0x4000), MF (0x2000); 13 bits of fragment offset.
_IP_DF = 0x4000
_IP_MF_AND_OFFSET = 0x3FFF

# TCP option kinds (RFC 9293 §3.2, RFC 7323, RFC 2018).
_OPT_EOL = 0
_OPT_NOP = 1
_OPT_MSS = 2
_OPT_WSCALE = 3
_OPT_SACK_PERMITTED = 4
_OPT_SACK = 5
_OPT_TIMESTAMPS = 8

_ETH_TYPE = struct.Struct("!H")
_IPV4 = struct.Struct("!BBHHHBBHII")  # the fixed 20 bytes
_TCP = struct.Struct("!HHIIBBHHH")  # the fixed 20 bytes
_UDP = struct.Struct("!HHHH")
_U16 = struct.Struct("!H")
_U32X2 = struct.Struct("!II")

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


class Frame:
    """The values of one parsed frame (see the module docstring for absent fields).

    ``layers``: 1 = Ethernet only (not IPv4), 2 = IPv4 but no L4 (a fragment,
    or a protocol other than TCP/UDP; the payload is the IP payload), 3 = TCP
    or UDP.  Offsets are absolute offsets into the parsed buffer.
    """

    __slots__ = FIELDS

    def __init__(self) -> None:
        self.layers = 0
        self.eth_dst = self.eth_src = b""
        self.ethertype = 0
        self.ip_offset = self.ip_header_len = self.ip_total_len = self.ip_tos = 0
        self.ip_id = self.ip_frag = self.ip_ttl = self.ip_proto = self.ip_src = self.ip_dst = 0
        self.l4_offset = self.sport = self.dport = 0
        self.seq = self.ack = self.tcp_flags = self.window = self.urgent = self.tcp_header_len = 0
        self.mss = self.wscale = self.ts_val = -1
        self.sack_permitted = False
        self.ts_ecr = 0
        self.sack = ()
        self.udp_len = 0
        self.payload_offset = self.payload_len = 0

    def as_dict(self) -> dict:
        """``{name: value}`` for every name in :data:`FIELDS`."""
        return {name: getattr(self, name) for name in FIELDS}

    def __repr__(self) -> str:
        return "Frame(" + ", ".join(f"{name}={getattr(self, name)!r}" for name in FIELDS) + ")"


def _read_view(obj):
    """A flat byte view of a C-contiguous bytes-like object (TypeError otherwise)."""
    return memoryview(obj).cast("B")


def _frame_bounds(size: int, offset, length) -> tuple[int, int]:
    offset = _index(offset)
    length = _index(length)
    if offset < 0 or offset > size:
        raise ValueError(f"offset {offset} outside a buffer of {size} bytes")
    if length == -1:
        return offset, size - offset
    if length < 0 or length > size - offset:
        raise ValueError(f"length {length} at offset {offset} outside a buffer of {size} bytes")
    return offset, length


def parse_frame(buf, offset=0, length=-1, verify=True) -> Frame:
    """Parse Ethernet II + IPv4 + TCP/UDP at ``buf[offset:offset+length]`` into a Frame.

    ``length`` -1 means to the end of ``buf``.  With ``verify`` the IPv4
    header checksum and the TCP/UDP checksum are checked.  Bad bytes raise
    :class:`pystack.errors.MalformedPacket` (reasons in ``pystack.errors``);
    a bad ``offset``/``length`` raises ValueError.
    """
    mv = _read_view(buf)
    offset, n = _frame_bounds(len(mv), offset, length)
    f = Frame()
    if n < _ETH_HEADER_LEN:
        raise malformed("ethernet.truncated", f"{n} bytes, an Ethernet II header needs 14")
    f.eth_dst = bytes(mv[offset:offset + 6])
    f.eth_src = bytes(mv[offset + 6:offset + 12])
    ethertype = f.ethertype = _ETH_TYPE.unpack_from(mv, offset + 12)[0]
    ip = offset + _ETH_HEADER_LEN
    avail = n - _ETH_HEADER_LEN
    f.payload_offset = ip
    f.payload_len = avail
    if ethertype != _ETHERTYPE_IPV4:
        f.layers = 1  # ARP, IPv6, VLAN tags...: the caller looks at ethertype
        return f

    # IPv4, RFC 791 §3.1.  Lengths first, then the checksum, then the fields.
    if avail < _IPV4_MIN_HEADER_LEN:
        raise malformed("ipv4.truncated",
                        f"{avail} bytes after the Ethernet header, IPv4 needs 20")
    (ver_ihl, tos, total_len, ip_id, frag, ttl, proto, ip_check,
     src, dst) = _IPV4.unpack_from(mv, ip)
    version = ver_ihl >> 4
    if version != 4:
        raise malformed("ipv4.bad_version", f"version {version}")
    ihl = ver_ihl & 0x0F
    hlen = ihl * 4
    if ihl < 5 or hlen > avail:
        raise malformed("ipv4.bad_ihl",
                        f"IHL {ihl} ({hlen} bytes), {avail} bytes after the Ethernet header")
    if total_len < hlen or total_len > avail:
        raise malformed("ipv4.bad_total_length",
                        f"total length {total_len}, header {hlen} bytes, "
                        f"{avail} bytes after the Ethernet header")
    if verify and _checksum(mv[ip:ip + hlen]) != 0:
        raise malformed("ipv4.bad_checksum", f"header checksum 0x{ip_check:04x} does not verify")
    f.ip_offset = ip
    f.ip_header_len = hlen
    f.ip_total_len = total_len
    f.ip_tos = tos
    f.ip_id = ip_id
    f.ip_frag = frag
    f.ip_ttl = ttl
    f.ip_proto = proto
    f.ip_src = src
    f.ip_dst = dst
    l4 = ip + hlen
    l4_len = total_len - hlen  # Ethernet padding past total_len is ignored
    f.payload_offset = l4
    f.payload_len = l4_len
    # A fragment (MF set or a non-zero offset) is reassembled before L4 is read.
    if frag & _IP_MF_AND_OFFSET or (proto != _PROTO_TCP and proto != _PROTO_UDP):
        f.layers = 2
        return f

    if proto == _PROTO_TCP:
        # TCP, RFC 9293 §3.1.
        if l4_len < _TCP_MIN_HEADER_LEN:
            raise malformed("tcp.truncated", f"{l4_len} bytes of IP payload, TCP needs 20")
        sport, dport, seq, ack, doff_byte, flags, window, tcp_check, urgent = \
            _TCP.unpack_from(mv, l4)
        doff = doff_byte >> 4
        thlen = doff * 4
        if doff < 5 or thlen > l4_len:
            raise malformed("tcp.bad_data_offset",
                            f"data offset {doff} ({thlen} bytes), segment of {l4_len} bytes")
        if verify and _checksum(mv[l4:l4 + l4_len],
                                _pseudo_header_sum(src, dst, _PROTO_TCP, l4_len)) != 0:
            raise malformed("tcp.bad_checksum", f"checksum 0x{tcp_check:04x} does not verify")
        f.sport = sport
        f.dport = dport
        f.seq = seq
        f.ack = ack
        f.tcp_flags = flags  # CWR ECE URG ACK PSH RST SYN FIN; the 4 reserved bits stay out
        f.window = window
        f.urgent = urgent
        f.tcp_header_len = thlen
        if thlen > _TCP_MIN_HEADER_LEN:
            _parse_tcp_options(mv, l4 + _TCP_MIN_HEADER_LEN, l4 + thlen, f)
        f.payload_offset = l4 + thlen
        f.payload_len = l4_len - thlen
    else:
        # UDP, RFC 768.
        if l4_len < _UDP_HEADER_LEN:
            raise malformed("udp.truncated", f"{l4_len} bytes of IP payload, UDP needs 8")
        sport, dport, udp_len, udp_check = _UDP.unpack_from(mv, l4)
        if udp_len < _UDP_HEADER_LEN or udp_len > l4_len:
            raise malformed("udp.bad_length", f"UDP length {udp_len}, {l4_len} bytes of IP payload")
        # A transmitted checksum of 0 means the sender computed none (RFC 768).
        if verify and udp_check != 0 and _checksum(
                mv[l4:l4 + udp_len], _pseudo_header_sum(src, dst, _PROTO_UDP, udp_len)) != 0:
            raise malformed("udp.bad_checksum", f"checksum 0x{udp_check:04x} does not verify")
        f.sport = sport
        f.dport = dport
        f.udp_len = udp_len
        f.payload_offset = l4 + _UDP_HEADER_LEN
        f.payload_len = udp_len - _UDP_HEADER_LEN
    f.l4_offset = l4
    f.layers = 3
    return f


def _bad_option(kind: int, at: int, what: str):
    return malformed("tcp.bad_option_length", f"option kind {kind} at option byte {at}: {what}")


def _parse_tcp_options(mv, start: int, end: int, f: Frame) -> None:
    """Read the TCP options in ``mv[start:end]`` into ``f`` (RFC 9293 §3.2).

    MUST-4: EOL, NOP and MSS understood (with window scale, SACK and
    timestamps).  MUST-5/MUST-64: options may begin at any byte.  MUST-6:
    unknown kinds are skipped by their length.  MUST-7: an illegal length is
    an error (here, for the caller to count and drop).  When an option occurs
    twice the last one wins.
    """
    i = start
    while i < end:
        kind = mv[i]
        if kind == _OPT_EOL:
            break  # the rest of the area is padding
        if kind == _OPT_NOP:
            i += 1
            continue
        if i + 1 >= end:
            raise _bad_option(kind, i - start, "the length byte is missing")
        olen = mv[i + 1]
        if olen < 2:
            raise _bad_option(kind, i - start, f"length {olen} < 2")
        if olen > end - i:
            raise _bad_option(kind, i - start,
                              f"length {olen} runs past the {end - start}-byte option area")
        if kind == _OPT_MSS:  # RFC 9293 §3.2: length 4
            if olen != 4:
                raise _bad_option(kind, i - start, f"length {olen}, MSS must be 4")
            f.mss = _U16.unpack_from(mv, i + 2)[0]
        elif kind == _OPT_WSCALE:  # RFC 7323 §2.2: length 3; shift > 14 is clamped by TCP
            if olen != 3:
                raise _bad_option(kind, i - start, f"length {olen}, window scale must be 3")
            f.wscale = mv[i + 2]
        elif kind == _OPT_SACK_PERMITTED:  # RFC 2018 §2: length 2
            if olen != 2:
                raise _bad_option(kind, i - start, f"length {olen}, SACK-permitted must be 2")
            f.sack_permitted = True
        elif kind == _OPT_SACK:  # RFC 2018 §3: length 2 + 8n, n >= 1
            if olen < 10 or (olen - 2) % 8:
                raise _bad_option(kind, i - start, f"length {olen}, SACK must be 2+8n with n >= 1")
            f.sack = tuple(_U32X2.unpack_from(mv, j) for j in range(i + 2, i + olen, 8))
        elif kind == _OPT_TIMESTAMPS:  # RFC 7323 §3.2: length 10
            if olen != 10:
                raise _bad_option(kind, i - start, f"length {olen}, timestamps must be 10")
            f.ts_val, f.ts_ecr = _U32X2.unpack_from(mv, i + 2)
        i += olen


# -- emit ---------------------------------------------------------------------

def _uint(value, limit: int, name: str) -> int:
    v = _index(value)
    if v < 0 or v > limit:
        raise ValueError(f"{name} must be in 0..{limit}, got {value!r}")
    return v


def _mac(value, name: str):
    mv = _read_view(value)
    if len(mv) != 6:
        raise ValueError(f"{name} must be 6 bytes, got {len(mv)}")
    return mv


def _write_view(buf):
    mv = memoryview(buf).cast("B")
    if mv.readonly:
        raise TypeError("buf must be a writable bytes-like object")
    return mv


def _payload_size(payload, payload_len):
    """(view or None, length) of the payload; checks ``payload_len`` against ``payload``."""
    payload_len = _uint(payload_len, 0xFFFF, "payload_len")
    if payload is None:
        return None, payload_len
    pv = _read_view(payload)
    if payload_len != 0 and payload_len != len(pv):
        raise ValueError(f"payload_len {payload_len} but a payload of {len(pv)} bytes was given")
    return pv, len(pv)


def _check_room(size: int, offset: int, frame_len: int) -> None:
    if offset > size or frame_len > size - offset:
        raise ValueError(f"a {frame_len}-byte frame at offset {offset} "
                         f"does not fit a buffer of {size} bytes")


def _write_eth_ipv4(mv, offset, dst_mac, src_mac, tos, total_len, ip_id, frag, ttl, proto,
                    ip_src, ip_dst) -> int:
    """Ethernet II + a 20-byte IPv4 header with its checksum; returns the L4 offset."""
    mv[offset:offset + 6] = dst_mac
    mv[offset + 6:offset + 12] = src_mac
    _ETH_TYPE.pack_into(mv, offset + 12, _ETHERTYPE_IPV4)
    ip = offset + _ETH_HEADER_LEN
    _IPV4.pack_into(mv, ip, 0x45, tos, total_len, ip_id, frag, ttl, proto, 0, ip_src, ip_dst)
    _U16.pack_into(mv, ip + 10, _checksum(mv[ip:ip + _IPV4_MIN_HEADER_LEN]))
    return ip + _IPV4_MIN_HEADER_LEN


def emit_tcp(buf, offset, eth_dst, eth_src, ip_src, ip_dst, sport, dport, seq, ack, flags,
             window, options=b"", payload=None, payload_len=0, ip_id=0, ttl=64, tos=0,
             dont_fragment=True, urgent=0) -> int:
    """Write Ethernet + IPv4 + TCP (+ options + payload) at ``buf[offset]``; return the frame length.

    ``options`` (at most 40 bytes) is padded with zero bytes (EOL) to a
    multiple of 4.  ``payload`` is copied after the header; when it is None,
    the ``payload_len`` bytes already at the payload position in ``buf`` are
    sent (zero-copy staging).  A given ``payload`` may be a view of ``buf``
    (copied as by memmove) but must not overlap the headers.  Both checksums
    are filled in.  No Ethernet minimum-size padding is added.  Caller
    misuse (a field out of range, a buffer too small) raises ValueError.
    """
    mv = _write_view(buf)
    offset = _uint(offset, len(mv), "offset")
    dst_mac = _mac(eth_dst, "eth_dst")
    src_mac = _mac(eth_src, "eth_src")
    ip_src = _uint(ip_src, 0xFFFFFFFF, "ip_src")
    ip_dst = _uint(ip_dst, 0xFFFFFFFF, "ip_dst")
    sport = _uint(sport, 0xFFFF, "sport")
    dport = _uint(dport, 0xFFFF, "dport")
    seq = _uint(seq, 0xFFFFFFFF, "seq")
    ack = _uint(ack, 0xFFFFFFFF, "ack")
    flags = _uint(flags, 0xFF, "flags")
    window = _uint(window, 0xFFFF, "window")
    opts = _read_view(options)
    optlen = len(opts)
    if optlen > _TCP_MAX_OPTIONS_LEN:
        raise ValueError(f"options of {optlen} bytes, at most 40 fit a TCP header")
    pv, plen = _payload_size(payload, payload_len)
    ip_id = _uint(ip_id, 0xFFFF, "ip_id")
    ttl = _uint(ttl, 0xFF, "ttl")
    tos = _uint(tos, 0xFF, "tos")
    urgent = _uint(urgent, 0xFFFF, "urgent")
    thlen = _TCP_MIN_HEADER_LEN + ((optlen + 3) & ~3)
    tcp_len = thlen + plen
    total_len = _IPV4_MIN_HEADER_LEN + tcp_len
    if total_len > 0xFFFF:
        raise ValueError(f"IPv4 total length {total_len} > 65535")
    frame_len = _ETH_HEADER_LEN + total_len
    _check_room(len(mv), offset, frame_len)

    t = _write_eth_ipv4(mv, offset, dst_mac, src_mac, tos, total_len, ip_id,
                        _IP_DF if dont_fragment else 0, ttl, _PROTO_TCP, ip_src, ip_dst)
    _TCP.pack_into(mv, t, sport, dport, seq, ack, (thlen // 4) << 4, flags, window, 0, urgent)
    o = t + _TCP_MIN_HEADER_LEN
    mv[o:o + optlen] = opts
    mv[o + optlen:t + thlen] = bytes(thlen - _TCP_MIN_HEADER_LEN - optlen)  # EOL padding
    if pv is not None:
        mv[t + thlen:t + tcp_len] = pv
    _U16.pack_into(mv, t + 16, _checksum(mv[t:t + tcp_len],
                                         _pseudo_header_sum(ip_src, ip_dst, _PROTO_TCP, tcp_len)))
    return frame_len


def emit_udp(buf, offset, eth_dst, eth_src, ip_src, ip_dst, sport, dport, payload=None,
             payload_len=0, ip_id=0, ttl=64, tos=0, dont_fragment=False) -> int:
    """Write Ethernet + IPv4 + UDP (+ payload) at ``buf[offset]``; return the frame length.

    As :func:`emit_tcp`.  A computed UDP checksum of 0 is sent as 0xFFFF,
    since 0 on the wire means "no checksum" (RFC 768).
    """
    mv = _write_view(buf)
    offset = _uint(offset, len(mv), "offset")
    dst_mac = _mac(eth_dst, "eth_dst")
    src_mac = _mac(eth_src, "eth_src")
    ip_src = _uint(ip_src, 0xFFFFFFFF, "ip_src")
    ip_dst = _uint(ip_dst, 0xFFFFFFFF, "ip_dst")
    sport = _uint(sport, 0xFFFF, "sport")
    dport = _uint(dport, 0xFFFF, "dport")
    pv, plen = _payload_size(payload, payload_len)
    ip_id = _uint(ip_id, 0xFFFF, "ip_id")
    ttl = _uint(ttl, 0xFF, "ttl")
    tos = _uint(tos, 0xFF, "tos")
    udp_len = _UDP_HEADER_LEN + plen
    total_len = _IPV4_MIN_HEADER_LEN + udp_len
    if total_len > 0xFFFF:
        raise ValueError(f"IPv4 total length {total_len} > 65535")
    frame_len = _ETH_HEADER_LEN + total_len
    _check_room(len(mv), offset, frame_len)

    u = _write_eth_ipv4(mv, offset, dst_mac, src_mac, tos, total_len, ip_id,
                        _IP_DF if dont_fragment else 0, ttl, _PROTO_UDP, ip_src, ip_dst)
    _UDP.pack_into(mv, u, sport, dport, udp_len, 0)
    if pv is not None:
        mv[u + _UDP_HEADER_LEN:u + udp_len] = pv
    check = _checksum(mv[u:u + udp_len], _pseudo_header_sum(ip_src, ip_dst, _PROTO_UDP, udp_len))
    _U16.pack_into(mv, u + 6, check or 0xFFFF)
    return frame_len
