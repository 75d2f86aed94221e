"""The sans-I/O network interface: Ethernet demux, ARP, IPv4 routing and fragments, ICMP, dispatch.

Owns everything between a frame and a transport: which frames are ours
(Ethernet), who is where (ARP, through :class:`~pystack.iface.neighbor.NeighborCache`),
which datagrams are ours and where ours go (IPv4 routing, fragmentation,
reassembly through :class:`~pystack.iface.reassembly.FragmentReassembler`),
ICMP (echo, errors sent and received), and which transport handler gets a
datagram (:meth:`Interface.register`; UDP is built in as ``iface.udp``, TCP
as ``iface.tcp``).
It reads no clock and touches no file descriptor: time is ``now``, integer
microseconds, passed into every call; frames come in through
:meth:`Interface.receive` and go out as the list :meth:`Interface.poll`
returns; :meth:`Interface.poll_at` says when the next call has work.

Theory of operation
-------------------
*Inbound* (:meth:`Interface.receive`).  The destination MAC is checked first
(ours or broadcast; anything else is ``ethernet.not_ours``), then one call to
the fast path, :func:`pystack.wire.headers.parse_frame`, validates Ethernet,
IPv4 (version, IHL, total length, header checksum: RFC 1122 §3.2.1.1-2) and
TCP/UDP (length, checksum).  ARP and ICMP go on through the value parsers of
``pystack.wire``; fragments go to the reassembler.  Every MalformedPacket any
of them raises is counted under its ``reason`` in exactly one place
(``receive``); every other drop is counted under a named reason where it is
decided.  ``receive`` never raises because of a frame's bytes.

*Outbound* (:meth:`Interface.send_ip`, :meth:`Interface.send_udp`).  Route
(on-link, else the gateway, else ENETUNREACH), build the Ethernet frames
(fragmented if needed), and either append them to the output queue or, while
the next hop's MAC is unknown, park them with the neighbour cache, which
retries the ARP request and, on failure, hands them back for a local Host
Unreachable report.  A parked datagram is one *item* (all its fragments
together), so a queue overflow never leaves half a datagram.  Frames are
built with a zero destination MAC and patched when the reply comes.

*Timers.*  ARP retransmissions and failures, learned-entry expiry,
reassembly timeouts, the second gratuitous ARP, and the registered handlers'
own timers; :meth:`Interface.poll` runs whatever is due and
:meth:`Interface.poll_at` is their minimum.

IPv4 identification: one per-interface counter, incremented for every
datagram sent.  RFC 6864 §4.2 lets a source set the ID of atomic (DF or
unfragmented) datagrams to any value, and a counter keeps non-atomic
datagrams' IDs unique per (source, destination, protocol) for 65536
datagrams (RFC 6864 §4.1; §5.3 discusses the wrap at high rates).  It is
predictable, which a stack meant for experiments prefers (runs replay).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from struct import Struct

from pystack.errors import MalformedPacket
from pystack.time import advance
from pystack.iface.neighbor import NeighborCache
from pystack.iface.reassembly import FragmentReassembler
from pystack.transport.tcp.layer import TcpConfig, TcpLayer
from pystack.transport.udp import DEFAULT_RCVBUF, DEFAULT_SNDBUF, UdpLayer
from pystack.stats import Stats
from pystack.wire.arp import OP_REQUEST, ArpPacket
from pystack.wire.checksum import checksum
from pystack.wire.ethernet import BROADCAST, ETHERTYPE_ARP, ETHERTYPE_IPV4, mac_from_str, mac_to_str
from pystack.wire.headers import emit_udp, parse_frame
from pystack.wire.icmpv4 import (DEST_UNREACHABLE, ECHO_REPLY, ECHO_REQUEST, ERROR_TYPES, REDIRECT,
                                 SOURCE_QUENCH, TIME_EXCEEDED, TIME_EXCEEDED_REASSEMBLY, UNREACH_FRAG_NEEDED,
                                 UNREACH_HOST, UNREACH_PROTOCOL, IcmpPacket)
from pystack.wire.ipv4 import MIN_HEADER_LEN, PROTO_ICMP, PROTO_TCP, PROTO_UDP, IPv4Packet, ip_from_str, ip_to_str
from pystack.wire.udp import UdpDatagram

ETH_HEADER_LEN = 14
_ZERO_MAC = bytes(6)
_ETH = Struct("!6s6sH")
_U16 = Struct("!H")

_LIMITED_BROADCAST = 0xFFFFFFFF  # 255.255.255.255 (RFC 919 §7, RFC 1122 §3.2.1.3(c))
_FIRST_MULTICAST = 0xE0000000  # 224.0.0.0; 224/4 multicast, 240/4 reserved (RFC 1112 §4)
_LOOPBACK_NET = 127  # 127/8 never appears on a wire (RFC 1122 §3.2.1.3(g))

# IPv4 flag and offset bits of the 16-bit word at header offset 6 (RFC 791 §3.1).
_MF = 0x2000
_OFFSET_MASK = 0x1FFF
_FRAGMENT_BITS = _MF | _OFFSET_MASK

#: RFC 5227 §1.1: ANNOUNCE_NUM announcements, ANNOUNCE_INTERVAL apart.
ANNOUNCE_NUM = 2
ANNOUNCE_INTERVAL = 2_000_000

#: ICMP types that are not errors (RFC 792, RFC 950, RFC 1256): an ICMP
#: message of any other type, unknown ones included, is treated as an error
#: and never answered with an error (RFC 1122 §3.2.2; conservative, as Linux).
_ICMP_QUERY_TYPES = frozenset({0, 8, 9, 10, 13, 14, 15, 16, 17, 18})

_US = 1_000_000  # microseconds per second; one token of the ICMP bucket

COUNTERS = (
    # Ethernet
    "ethernet.rx", "ethernet.tx",
    "ethernet.not_ours",  # destination MAC neither ours nor broadcast
    "ethernet.unknown_type",  # neither IPv4 nor ARP (IPv6, VLAN tags...)
    # ARP (RFC 826)
    "arp.rx", "arp.tx",
    "arp.replies_sent",  # requests for our address answered
    "arp.requests_sent",  # resolutions and their retries
    "arp.announcements",  # gratuitous ARPs sent (RFC 5227 §2.3)
    "arp.conflict",  # someone else claims our address (RFC 5227 §2.4), ignored
    "arp.probes",  # RFC 5227 probes (sender 0.0.0.0) seen
    "arp.host_unreachable",  # resolution failures reported to a local sender
    # IPv4 (RFC 791, RFC 1122 §3.2.1)
    "ipv4.rx", "ipv4.tx", "ipv4.delivered",
    "ipv4.not_ours",  # destination neither ours nor a broadcast (RFC 1122 §3.2.1.3)
    "ipv4.bad_src",  # source no host may use (RFC 1122 §3.2.1.3)
    "ipv4.link_broadcast",  # unicast IP in a link broadcast (RFC 1122 §3.3.6)
    "ipv4.broadcast_not_udp",  # broadcasts are for UDP only (RFC 1122 §3.2.2.6, §4.2.3.10)
    "ipv4.unknown_protocol",  # no handler: protocol unreachable sent (RFC 1122 §3.2.2.1)
    "ipv4.fragments_rx", "ipv4.fragments_tx",
    "ipv4.fragmented",  # datagrams we fragmented (RFC 791 §3.2)
    "ipv4.no_route",  # sends refused: no on-link route and no gateway
    # ICMP (RFC 792, RFC 1122 §3.2.2)
    "icmp.rx", "icmp.tx",
    "icmp.echo_requests", "icmp.echo_replies",
    "icmp.errors_rx", "icmp.errors_tx",
    "icmp.error_about_error",  # never about an ICMP error (RFC 1122 §3.2.2)
    "icmp.error_about_broadcast",  # never about a broadcast/multicast destination
    "icmp.error_about_fragment",  # never about a non-first fragment
    "icmp.error_about_bad_src",  # never to a source that is not one host
    "icmp.rate_limited",  # errors not sent: token bucket empty (RFC 1812 §4.3.2.8)
    "icmp.bad_quote",  # received error whose quoted header is missing or malformed
    "icmp.error_not_ours",  # received error about a datagram we did not send
    "icmp.error_unhandled",  # received error for a protocol with no handler
    "icmp.redirect_ignored", "icmp.source_quench_ignored",
    "icmp.ignored",  # echo replies, timestamps, unknown types (RFC 1122 §3.2.2)
)


def _ip(name: str, value) -> int:
    if isinstance(value, str):
        return ip_from_str(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{name} must be an IPv4 address (int or dotted quad), got {value!r}")
    return value


def _positive(name: str, value, lo: int = 1, hi: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        bound = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be an int {bound}, got {value!r}")


@dataclass(frozen=True)
class InterfaceConfig:
    """What an interface is: its addresses, link MTU and the limits of its parts.

    ``mac`` may be given as bytes or text, ``ip`` and ``gateway`` as ints or
    dotted quads; they are stored as bytes and ints.  The ARP and reassembly
    fields are the parameters of NeighborCache and FragmentReassembler, with
    their defaults; ``udp_rcvbuf``/``udp_sndbuf`` bound each UDP socket's
    queues in payload bytes.  ``icmp_error_rate`` 0 disables the ICMP rate
    limit (as Linux's ``icmp_ratelimit=0``).
    """

    mac: bytes
    ip: int
    prefix_len: int
    gateway: int | None = None
    mtu: int = 1500
    ttl: int = 64  # RFC 1122 §3.2.1.7 (a fixed default; Linux's ip_default_ttl)
    icmp_error_rate: int = 1000  # per second; RFC 1812 §4.3.2.8, RFC 1122 §3.2.2; Linux icmp_msgs_per_sec
    icmp_error_burst: int = 50  # Linux icmp_msgs_burst
    arp_entry_lifetime: int = 60_000_000
    arp_retry_interval: int = 1_000_000
    arp_max_retries: int = 3
    arp_max_queued: int = 16
    arp_max_entries: int = 1024
    reasm_timeout: int = 30_000_000
    reasm_max_datagram: int = 65535
    reasm_memory_limit: int = 4 << 20
    reasm_max_datagrams: int = 64
    udp_rcvbuf: int = DEFAULT_RCVBUF
    udp_sndbuf: int = DEFAULT_SNDBUF

    def __post_init__(self) -> None:
        mac = self.mac
        if isinstance(mac, str):
            mac = mac_from_str(mac)
        if not isinstance(mac, (bytes, bytearray, memoryview)) or len(mac) != 6:
            raise ValueError(f"mac must be 6 bytes or text like 02:00:00:00:00:01, got {self.mac!r}")
        mac = bytes(mac)
        if mac[0] & 1 or mac == _ZERO_MAC:
            raise ValueError(f"mac {mac_to_str(mac)} is not a unicast address")
        object.__setattr__(self, "mac", mac)
        _positive("prefix_len", self.prefix_len, 0, 32)
        ip = _ip("ip", self.ip)
        object.__setattr__(self, "ip", ip)
        mask = _mask(self.prefix_len)
        hostmask = ~mask & 0xFFFFFFFF

        def names_subnet(addr: int) -> bool:
            # The all-zeros and all-ones host parts name the subnet and its
            # broadcast (RFC 1122 §3.2.1.3, RFC 919 §7), except in a /31 or
            # /32, which has neither (RFC 3021 §2.2).
            return self.prefix_len <= 30 and (addr & hostmask) in (0, hostmask)

        if not _is_unicast(ip) or names_subnet(ip):
            raise ValueError(f"ip {ip_to_str(ip)}/{self.prefix_len} is not a host address")
        if self.gateway is not None:
            gw = _ip("gateway", self.gateway)
            object.__setattr__(self, "gateway", gw)
            if gw == ip or not _is_unicast(gw) or gw & mask != ip & mask or names_subnet(gw):
                raise ValueError(f"gateway {ip_to_str(gw)} is not another host of "
                                 f"{ip_to_str(ip & mask)}/{self.prefix_len} (it must be on-link)")
        # RFC 791: every host must take a 68-octet datagram; 65535 is IPv4's largest.
        _positive("mtu", self.mtu, 68, 0xFFFF)
        _positive("ttl", self.ttl, 1, 255)  # RFC 1122 §3.2.1.7: never send TTL 0
        _positive("icmp_error_rate", self.icmp_error_rate, 0)
        _positive("icmp_error_burst", self.icmp_error_burst, 1)
        for name in ("arp_entry_lifetime", "arp_retry_interval", "arp_max_queued", "arp_max_entries",
                     "reasm_timeout", "reasm_max_datagram", "reasm_memory_limit", "reasm_max_datagrams",
                     "udp_rcvbuf", "udp_sndbuf"):
            _positive(name, getattr(self, name))
        _positive("arp_max_retries", self.arp_max_retries, 0)

    def as_dict(self) -> dict:
        """JSON-able: addresses as text."""
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["mac"] = mac_to_str(self.mac)
        out["ip"] = ip_to_str(self.ip)
        out["gateway"] = ip_to_str(self.gateway) if self.gateway is not None else None
        return out


def _mask(prefix_len: int) -> int:
    return (0xFFFFFFFF << (32 - prefix_len)) & 0xFFFFFFFF


def _is_unicast(ip: int) -> bool:
    """Not 0.0.0.0, not loopback, not multicast/reserved/limited broadcast."""
    return ip != 0 and ip >> 24 != _LOOPBACK_NET and ip < _FIRST_MULTICAST


class IpInfo:
    """What a handler learns about the datagram it is handed (besides the payload).

    ``header`` is the IP header (options included) and ``datagram`` the whole
    datagram from the IP header on, as an ICMP error quotes it; both may be
    views valid only during the handler call.  For a reassembled datagram
    ``header`` is fragment zero's header as it arrived, and ``datagram``
    starts with that header with the total length set to the whole datagram
    and the fragment fields cleared (as Linux's reassembly leaves it).
    ``broadcast`` is True when the destination was a broadcast address.
    ``frame`` is the fast path's :class:`pystack.wire.headers.Frame` when it
    already read and checked the TCP/UDP header (its offsets are into the
    received frame; ``payload_offset - l4_offset`` is where the data starts
    in the handler's payload), else None.
    """

    __slots__ = ("src", "dst", "proto", "ttl", "tos", "ident", "header", "datagram", "broadcast", "frame")

    def __init__(self, src: int, dst: int, proto: int, ttl: int, tos: int, ident: int, header,
                 datagram, broadcast: bool = False, frame=None) -> None:
        self.src = src
        self.dst = dst
        self.proto = proto
        self.ttl = ttl
        self.tos = tos
        self.ident = ident
        self.header = header
        self.datagram = datagram
        self.broadcast = broadcast
        self.frame = frame

    def __repr__(self) -> str:
        return (f"IpInfo({ip_to_str(self.src)} > {ip_to_str(self.dst)} proto {self.proto} ttl {self.ttl} "
                f"tos {self.tos} id {self.ident} len {len(self.datagram)}"
                f"{' broadcast' if self.broadcast else ''})")


def _whole_header(header: bytes, total_len: int) -> bytes:
    """Fragment zero's header made the header of the reassembled datagram: length set, MF/offset clear."""
    h = bytearray(header)
    _U16.pack_into(h, 2, total_len)
    _U16.pack_into(h, 6, _U16.unpack_from(h, 6)[0] & ~_FRAGMENT_BITS & 0xFFFF)
    _U16.pack_into(h, 10, 0)
    _U16.pack_into(h, 10, checksum(h))
    return bytes(h)


def _oserror(code: int, detail: str) -> OSError:
    return OSError(code, f"{os.strerror(code)} ({detail})")


class Interface:
    """One Ethernet interface with one IPv4 address (see the module docstring)."""

    def __init__(self, config: InterfaceConfig, stats: Stats | None = None, *,
                 tcp_config: TcpConfig | None = None, tcp_secret: bytes | None = None) -> None:
        if not isinstance(config, InterfaceConfig):
            raise TypeError(f"config must be an InterfaceConfig, not {type(config).__name__}")
        self.config = config
        self.stats = stats if stats is not None else Stats()
        for name in COUNTERS:
            self.stats.incr(name, 0)
        self.neighbors = NeighborCache(
            entry_lifetime=config.arp_entry_lifetime, retry_interval=config.arp_retry_interval,
            max_retries=config.arp_max_retries, max_queued_per_ip=config.arp_max_queued,
            max_entries=config.arp_max_entries)
        self.reassembler = FragmentReassembler(
            timeout=config.reasm_timeout, max_datagram=config.reasm_max_datagram,
            memory_limit=config.reasm_memory_limit, max_datagrams=config.reasm_max_datagrams)
        self.stats.include(self.neighbors.counters)
        self.stats.include(self.reassembler.counters)

        self._mac = config.mac
        self._ip = config.ip
        self._mask = _mask(config.prefix_len)
        self._net = config.ip & self._mask
        # The directed broadcast of the subnet (RFC 919 §7, RFC 922); a /31 or
        # /32 has none (RFC 3021 §2.2), -1 matches no address.
        self._bcast = (self._net | (~self._mask & 0xFFFFFFFF)) if config.prefix_len <= 30 else -1
        self._mtu = config.mtu
        self._ttl = config.ttl
        self._ident = 0
        self._now = 0
        self._out: list[bytes] = []
        self._handlers: dict[int, object] = {}
        self._announce_left = 0
        self._announce_due: int | None = None
        # ICMP error token bucket, in micro-tokens (1 token = _US), so refill is exact integer math.
        self._tokens = config.icmp_error_burst * _US
        self._tokens_at: int | None = None

        self.udp = UdpLayer(config.ip, self.stats, check_route=self._check_route,
                            rcvbuf=config.udp_rcvbuf, sndbuf=config.udp_sndbuf)
        self.register(PROTO_UDP, self.udp)
        # TCP (issue 4): ``tcp_secret`` keys the RFC 6528 ISNs (random when None;
        # a fixed one makes a simulation replay exactly).
        self.tcp = TcpLayer(config.ip, config.mac, self.stats, config=tcp_config, mtu=config.mtu,
                            secret=tcp_secret, check_route=self._check_route)
        self.register(PROTO_TCP, self.tcp)
        self._batch: list | None = None  # TCP segments collected by receive_batch

    # -- time -------------------------------------------------------------------------

    def _tick(self, now) -> None:
        self._now = advance(self._now, now)

    # -- handlers ---------------------------------------------------------------------

    def register(self, proto: int, handler) -> None:
        """Make ``handler`` the receiver of IP protocol ``proto`` (see the module docstring of socket/)."""
        _positive("proto", proto, 0, 255)
        if proto == PROTO_ICMP:
            raise ValueError("ICMP (protocol 1) is the interface's own")
        if proto in self._handlers:
            raise ValueError(f"protocol {proto} already has a handler: {self._handlers[proto]!r}")
        missing = [m for m in ("handle", "handle_icmp_error", "poll", "poll_at") if not callable(getattr(handler, m, None))]
        if missing:
            raise TypeError(f"a protocol handler needs {', '.join(missing)}")
        self._handlers[proto] = handler

    # -- start ------------------------------------------------------------------------

    def start(self, now: int) -> None:
        """Announce our address: a gratuitous ARP now and another ANNOUNCE_INTERVAL later (RFC 5227 §2.3)."""
        self._tick(now)
        self._announce_left = ANNOUNCE_NUM
        self._announce(now)

    def _announce(self, now: int) -> None:
        # RFC 5227 §3: an ARP Announcement is a request with sender and target
        # IP both ours and a zero target MAC, broadcast.
        self._queue_arp(BROADCAST, ArpPacket.request(self._mac, self._ip, self._ip))
        self.stats.incr("arp.announcements")
        self._announce_left -= 1
        self._announce_due = now + ANNOUNCE_INTERVAL if self._announce_left > 0 else None

    # -- inbound ----------------------------------------------------------------------

    def receive(self, frame, now: int) -> None:
        """Process one inbound Ethernet frame (bytes-like; a view may be reused after the call).

        Never raises because of the frame's contents: malformed frames are
        counted under their reason, others under the reason they were
        dropped for.  (A ``now`` earlier than the last one is caller misuse:
        ValueError.)
        """
        self._tick(now)
        self.stats.incr("ethernet.rx")
        try:
            self._receive(frame, now)
        except MalformedPacket as exc:  # the one place peer garbage is counted
            self.stats.incr(exc.reason)

    def receive_batch(self, frames, now: int) -> None:
        """Process a read batch: as :meth:`receive` for each frame, but TCP gets its
        segments in one :meth:`TcpLayer.handle_batch` call at the end (the frames
        must stay valid until this returns).  Never raises because of a frame.
        """
        self._tick(now)
        self._batch = batch = []
        stats = self.stats
        stats.incr("ethernet.rx", len(frames))
        receive = self._receive
        try:
            for frame in frames:
                try:
                    receive(frame, now)
                except MalformedPacket as exc:
                    stats.incr(exc.reason)
        finally:
            self._batch = None
        if batch:
            try:
                self.tcp.handle_batch(self, now, batch)
            except MalformedPacket as exc:  # a reassembled segment that fails TCP's own parse
                self.stats.incr(exc.reason)

    def _receive(self, frame, now: int) -> None:
        mv = memoryview(frame)
        if mv.ndim != 1 or mv.format != "B":
            mv = mv.cast("B")
        link_broadcast = False
        if len(mv) >= ETH_HEADER_LEN:
            dst = mv[:6]
            if dst != self._mac:
                if dst != BROADCAST:
                    self.stats.incr("ethernet.not_ours")
                    return
                link_broadcast = True
        f = parse_frame(mv)  # raises ethernet/ipv4/tcp/udp reasons
        if f.layers == 1:
            if f.ethertype == ETHERTYPE_ARP:
                self._receive_arp(mv[ETH_HEADER_LEN:], now)
            else:
                self.stats.incr("ethernet.unknown_type")
            return
        self._receive_ipv4(mv, f, link_broadcast, now)

    # -- ARP (RFC 826; RFC 1122 §2.3.2) --------------------------------------------------

    def _receive_arp(self, data, now: int) -> None:
        stats = self.stats
        arp = ArpPacket.parse(data)  # arp.truncated / arp.unsupported / arp.bad_opcode
        stats.incr("arp.rx")
        sender_ip = arp.sender_ip
        to_us = arp.target_ip == self._ip
        if sender_ip == self._ip:
            if arp.sender_mac != self._mac:
                stats.incr("arp.conflict")  # RFC 5227 §2.4: another host uses our address
            return
        if sender_ip == 0:
            stats.incr("arp.probes")  # RFC 5227 §2.1.1: a probe teaches no mapping
        else:
            # RFC 826 "Packet Reception": merge the sender whatever the target;
            # add an unknown one only when the packet is for us.
            waiting = self.neighbors.update(sender_ip, arp.sender_mac, now, create=to_us)
            for item in waiting:
                self._flush_item(item, arp.sender_mac)
        if to_us and arp.opcode == OP_REQUEST and not arp.sender_mac[0] & 1 and arp.sender_mac != _ZERO_MAC:
            # RFC 826: swap, fill in our MAC, reply to the requester directly.
            # A probe (sender 0.0.0.0) for our address is answered too: that is
            # how its sender learns the address is taken (RFC 5227 §2.1.1).
            self._queue_arp(arp.sender_mac, arp.reply_for(self._mac))
            stats.incr("arp.replies_sent")

    def _queue_arp(self, dst_mac: bytes, arp: ArpPacket) -> None:
        frame = bytearray(ETH_HEADER_LEN + 28)
        _ETH.pack_into(frame, 0, dst_mac, self._mac, ETHERTYPE_ARP)
        arp.emit(frame, ETH_HEADER_LEN)
        self._out.append(bytes(frame))
        self.stats.incr("arp.tx")

    def _flush_item(self, item, mac: bytes) -> None:
        """Send a datagram that waited for ARP: patch the destination MAC into its frames."""
        _proto, frames = item
        for frame in frames:
            frame[0:6] = mac
        self._out.extend(frames)

    # -- IPv4 in (RFC 791; RFC 1122 §3.2.1) ------------------------------------------------

    def _receive_ipv4(self, mv: memoryview, f, link_broadcast: bool, now: int) -> None:
        stats = self.stats
        stats.incr("ipv4.rx")
        src, dst, proto = f.ip_src, f.ip_dst, f.ip_proto
        if dst == self._ip:
            broadcast = False
        elif dst == _LIMITED_BROADCAST or dst == self._bcast:
            broadcast = True
        else:
            # Not "destined for the host" (RFC 1122 §3.2.1.3): neither our
            # address nor a broadcast of our subnet; a host does not forward.
            stats.incr("ipv4.not_ours")
            return
        if link_broadcast and not broadcast:
            stats.incr("ipv4.link_broadcast")  # RFC 1122 §3.3.6 SHOULD discard
            return
        if not self._valid_source(src, broadcast):
            stats.incr("ipv4.bad_src")  # RFC 1122 §3.2.1.3 MUST silently discard
            return
        if broadcast and proto != PROTO_UDP:
            # RFC 1122 §3.2.2.6 MAY ignore broadcast echo (Linux does by
            # default), §4.2.3.10 MUST drop TCP to a broadcast; no other
            # protocol we speak takes broadcasts.
            stats.incr("ipv4.broadcast_not_udp")
            return
        ip_off = f.ip_offset
        hlen = f.ip_header_len
        end = ip_off + f.ip_total_len
        frag = f.ip_frag
        if frag & _FRAGMENT_BITS:
            stats.incr("ipv4.fragments_rx")
            done = self.reassembler.add_with_header(
                now, src, dst, proto, f.ip_id, (frag & _OFFSET_MASK) * 8, bool(frag & _MF),
                mv[ip_off + hlen:end], mv[ip_off:ip_off + hlen])
            if done is None:
                return
            header, data = done
            datagram = _whole_header(header, len(header) + len(data)) + data
            info = IpInfo(src, dst, proto, header[8], header[1], f.ip_id, header, datagram, broadcast)
            payload = memoryview(datagram)[len(header):]
        else:
            info = IpInfo(src, dst, proto, f.ip_ttl, f.ip_tos, f.ip_id, mv[ip_off:ip_off + hlen],
                          mv[ip_off:end], broadcast, f if f.layers == 3 else None)
            payload = mv[ip_off + hlen:end]
        self._deliver(info, payload, now)

    def _valid_source(self, src: int, broadcast: bool) -> bool:
        """RFC 1122 §3.2.1.3: discard a source that names no single host.

        0.0.0.0 is a source only while a host learns its address (RFC 1122
        §3.2.1.3(a)), so it is accepted in a broadcast (DHCP) only.  Our own
        address as a source is a spoof or a loop: we have no loopback.
        """
        if src == 0:
            return broadcast
        return src != self._ip and src != self._bcast and _is_unicast(src)

    def _deliver(self, info: IpInfo, payload, now: int) -> None:
        proto = info.proto
        if proto == PROTO_ICMP:
            self.stats.incr("ipv4.delivered")
            self._receive_icmp(info, payload, now)
            return
        handler = self._handlers.get(proto)
        if handler is None:
            self.stats.incr("ipv4.unknown_protocol")
            # RFC 1122 §3.2.2.1: a host SHOULD send Protocol Unreachable.
            self.send_icmp_error(now, DEST_UNREACHABLE, UNREACH_PROTOCOL, info.datagram)
            return
        self.stats.incr("ipv4.delivered")
        if proto == PROTO_TCP and self._batch is not None and info.frame is not None:
            self._batch.append((info, payload))
            return
        handler.handle(self, now, info, payload)

    # -- ICMP in (RFC 792; RFC 1122 §3.2.2) ---------------------------------------------------

    def _receive_icmp(self, info: IpInfo, payload, now: int) -> None:
        stats = self.stats
        icmp = IcmpPacket.parse(payload)  # icmp.truncated / icmp.bad_checksum
        stats.incr("icmp.rx")
        type_ = icmp.type
        if type_ == ECHO_REQUEST:
            stats.incr("icmp.echo_requests")
            # RFC 1122 §3.2.2.6: MUST answer; the data MUST come back unchanged,
            # from the address the request was sent to (unicast: broadcasts were
            # dropped above).  Deviation: Record Route / Timestamp options are
            # not reflected into the reply (SHOULD).
            reply = IcmpPacket(ECHO_REPLY, 0, icmp.rest, icmp.payload).to_bytes()
            if self._send_quietly(now, info.src, PROTO_ICMP, reply, info.tos):
                stats.incr("icmp.echo_replies")
            return
        if type_ not in ERROR_TYPES:
            stats.incr("icmp.ignored")  # RFC 1122 §3.2.2: unknown types MUST be silently discarded
            return
        stats.incr("icmp.errors_rx")
        if type_ == REDIRECT:
            # Deviation: RFC 1122 §3.3.1.2 asks a host to update its route
            # cache; we keep no per-destination routes (one gateway), so a
            # redirect has nothing to change.
            stats.incr("icmp.redirect_ignored")
            return
        if type_ == SOURCE_QUENCH:
            stats.incr("icmp.source_quench_ignored")  # RFC 6633 §3: MAY silently discard
            return
        try:
            quoted = icmp.quoted_datagram()
        except MalformedPacket:
            quoted = None
        if quoted is None:
            stats.incr("icmp.bad_quote")
            return
        if quoted.src != self._ip:
            stats.incr("icmp.error_not_ours")
            return
        handler = self._handlers.get(quoted.proto)
        if handler is None:
            stats.incr("icmp.error_unhandled")
            return
        mtu = icmp.next_hop_mtu if (type_, icmp.code) == (DEST_UNREACHABLE, UNREACH_FRAG_NEEDED) else 0
        handler.handle_icmp_error(self, now, type_, icmp.code, quoted, mtu)

    # -- ICMP errors out ------------------------------------------------------------------------

    def send_icmp_error(self, now: int, type: int, code: int, original, mtu: int = 0) -> None:
        """Send an ICMP error about ``original`` (the offending datagram from its IP header on).

        Applies RFC 1122 §3.2.2's "never" rules -- not about an ICMP error,
        a broadcast or multicast destination, a non-first fragment, or a
        source that is not one host -- then the token bucket
        (``icmp_error_rate`` per second, ``icmp_error_burst`` deep; RFC 1812
        §4.3.2.8, RFC 1122 §3.2.2).  Each refusal is counted, never raised;
        an error that cannot be routed back is counted under
        ``ipv4.no_route``.  Misuse (a type that is not an error, an
        ``original`` that is no IPv4 header) raises ValueError.
        """
        self._tick(now)
        if type not in ERROR_TYPES:
            raise ValueError(f"ICMP type {type} is not an error type ({sorted(ERROR_TYPES)})")
        mv = memoryview(original)
        if mv.ndim != 1 or mv.format != "B":
            mv = mv.cast("B")
        try:
            orig = IPv4Packet.parse(mv, verify_checksum=False, partial=True)
        except MalformedPacket as exc:
            raise ValueError(f"original is not an IPv4 datagram: {exc}") from None
        reason = self._never_send_error(orig)
        if reason is not None:
            self.stats.incr(reason)
            return
        if not self._take_token(now):
            self.stats.incr("icmp.rate_limited")
            return
        # The quote: the offending header and its first 8 data octets (RFC 792).
        message = IcmpPacket.error(type, code, mv[:orig.header_len + 8], mtu).to_bytes()
        # RFC 1349 §5.1: ICMP errors go with the default TOS.
        if self._send_quietly(now, orig.src, PROTO_ICMP, message, 0):
            self.stats.incr("icmp.errors_tx")

    def _never_send_error(self, orig: IPv4Packet) -> str | None:
        """The counter of the RFC 1122 §3.2.2 rule that forbids an error about ``orig``, or None."""
        if orig.frag_offset != 0:
            return "icmp.error_about_fragment"
        if orig.proto == PROTO_ICMP:
            data = orig.payload
            if len(data) < 1 or data[0] not in _ICMP_QUERY_TYPES:
                return "icmp.error_about_error"
        dst = orig.dst
        if dst == _LIMITED_BROADCAST or dst == self._bcast or dst >= _FIRST_MULTICAST:
            return "icmp.error_about_broadcast"
        src = orig.src
        if not _is_unicast(src) or src == self._bcast:
            return "icmp.error_about_bad_src"
        return None

    def _take_token(self, now: int) -> bool:
        rate = self.config.icmp_error_rate
        if rate == 0:
            return True
        cap = self.config.icmp_error_burst * _US
        tokens = self._tokens
        if self._tokens_at is not None:
            tokens = min(cap, tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        if tokens < _US:
            self._tokens = tokens
            return False
        self._tokens = tokens - _US
        return True

    # -- routing ---------------------------------------------------------------------------------

    def _route(self, dst: int) -> tuple[int, bytes | None]:
        """``(next hop, its MAC if known without ARP)`` for ``dst``; OSError when there is none.

        RFC 1122 §3.3.1.1: on-link when the masked bits match ours, else
        through a gateway (§3.3.1.2: here the one default gateway); a limited
        or directed broadcast and a multicast go straight to the link.
        """
        if dst == _LIMITED_BROADCAST or dst == self._bcast:
            return dst, BROADCAST  # RFC 1122 §3.3.6: IP broadcast in a link broadcast
        if dst >= _FIRST_MULTICAST:
            if dst >= 0xF0000000:
                raise _oserror(errno.ENETUNREACH, f"{ip_to_str(dst)} is a reserved address")
            # RFC 1112 §6.4: 01:00:5e and the low 23 bits of the group.
            return dst, b"\x01\x00\x5e" + (dst & 0x7FFFFF).to_bytes(3, "big")
        if dst == self._ip or dst == 0 or dst >> 24 == _LOOPBACK_NET:
            raise _oserror(errno.ENETUNREACH, f"{ip_to_str(dst)} is this host: pystack has no loopback")
        if dst & self._mask == self._net:
            return dst, None
        if self.config.gateway is not None:
            return self.config.gateway, None
        raise _oserror(errno.ENETUNREACH, f"{ip_to_str(dst)} is off-link and there is no gateway")

    def _check_route(self, dst: int) -> None:
        """Raise the OSError a send to ``dst`` would meet (ENETUNREACH), else nothing."""
        try:
            self._route(dst)
        except OSError:
            self.stats.incr("ipv4.no_route")
            raise

    def _next_ident(self) -> int:
        ident = self._ident
        self._ident = (ident + 1) & 0xFFFF
        return ident

    # -- IPv4 out --------------------------------------------------------------------------------

    def send_ip(self, now: int, dst: int, proto: int, payload, *, src: int | None = None, tos: int = 0,
                ttl: int | None = None, dont_fragment: bool = False) -> None:
        """Send ``payload`` (the transport header and data) in an IPv4 datagram to ``dst``.

        Routes it (on-link, else the gateway; else OSError ENETUNREACH),
        fragments it when it exceeds the MTU and DF is clear (RFC 791 §3.2;
        OSError EMSGSIZE when DF is set), and queues the frames, or parks
        them while the next hop is resolved.  They appear in the next
        :meth:`poll`.
        """
        self._tick(now)
        self._send_ip(now, _ip("dst", dst), proto, payload, src, tos, ttl, dont_fragment)

    def _send_ip(self, now, dst, proto, payload, src, tos, ttl, dont_fragment) -> None:
        _positive("proto", proto, 0, 255)
        src, ttl = self._check_send(src, tos, ttl)
        payload = memoryview(payload)
        if payload.ndim != 1 or payload.format != "B":
            payload = payload.cast("B")
        size = MIN_HEADER_LEN + len(payload)
        if size > 0xFFFF:
            raise _oserror(errno.EMSGSIZE, f"a {size}-byte datagram exceeds IPv4's 65535")
        if size > self._mtu and dont_fragment:
            raise _oserror(errno.EMSGSIZE, f"{size} bytes with DF set exceeds the {self._mtu}-byte MTU")
        next_hop, mac = self._route_counted(dst)
        ident = self._next_ident()
        stats = self.stats
        stats.incr("ipv4.tx")
        if size <= self._mtu:
            frame = bytearray(ETH_HEADER_LEN + size)
            _ETH.pack_into(frame, 0, mac or _ZERO_MAC, self._mac, ETHERTYPE_IPV4)
            IPv4Packet(src, dst, proto, payload, ttl=ttl, ident=ident, dont_fragment=dont_fragment,
                       tos=tos).emit(frame, ETH_HEADER_LEN)
            frames = [frame]
        else:
            frames = self._fragment(src, dst, proto, payload, ttl, ident, tos, mac)
        self._dispatch(now, next_hop, mac, proto, frames)

    def _fragment(self, src, dst, proto, payload, ttl, ident, tos, mac) -> list[bytearray]:
        """RFC 791 §3.2: cut the data in multiples of 8 octets; MF on all but the last."""
        step = (self._mtu - MIN_HEADER_LEN) & ~7
        frames = []
        n = len(payload)
        for start in range(0, n, step):
            chunk = payload[start:start + step]
            frame = bytearray(ETH_HEADER_LEN + MIN_HEADER_LEN + len(chunk))
            _ETH.pack_into(frame, 0, mac or _ZERO_MAC, self._mac, ETHERTYPE_IPV4)
            IPv4Packet(src, dst, proto, chunk, ttl=ttl, ident=ident, more_fragments=start + step < n,
                       frag_offset=start, tos=tos).emit(frame, ETH_HEADER_LEN)
            frames.append(frame)
        self.stats.incr("ipv4.fragmented")
        self.stats.incr("ipv4.fragments_tx", len(frames))
        return frames

    def send_udp(self, now: int, dst: int, sport: int, dport: int, data, *, src: int | None = None,
                 tos: int = 0, ttl: int | None = None, dont_fragment: bool = False) -> None:
        """Send one UDP datagram (RFC 768) with its checksum; as :meth:`send_ip` otherwise.

        An unfragmented datagram is written in one call of the fast path
        (:func:`pystack.wire.headers.emit_udp`); a larger one is built whole
        and fragmented by :meth:`send_ip`.
        """
        self._tick(now)
        dst = _ip("dst", dst)
        src_ip, ttl_ = self._check_send(src, tos, ttl)
        size = MIN_HEADER_LEN + 8 + len(data)
        if size > self._mtu:
            segment = UdpDatagram(sport, dport, data).to_bytes(src_ip, dst)
            self._send_ip(now, dst, PROTO_UDP, segment, src, tos, ttl, dont_fragment)
            return
        next_hop, mac = self._route_counted(dst)
        frame = bytearray(ETH_HEADER_LEN + size)
        emit_udp(frame, 0, mac or _ZERO_MAC, self._mac, src_ip, dst, sport, dport, data,
                 ip_id=self._next_ident(), ttl=ttl_, tos=tos, dont_fragment=dont_fragment)
        self.stats.incr("ipv4.tx")
        self._dispatch(now, next_hop, mac, PROTO_UDP, [frame])

    def _check_send(self, src, tos, ttl) -> tuple[int, int]:
        if src is None:
            src = self._ip
        elif _ip("src", src) != self._ip:
            raise _oserror(errno.EADDRNOTAVAIL, f"{ip_to_str(_ip('src', src))} is not this interface's address")
        _positive("tos", tos, 0, 255)
        if ttl is None:
            ttl = self._ttl
        else:
            _positive("ttl", ttl, 1, 255)  # RFC 1122 §3.2.1.7: MUST NOT send TTL 0
        return src, ttl

    def _route_counted(self, dst: int) -> tuple[int, bytes | None]:
        try:
            return self._route(dst)
        except OSError:
            self.stats.incr("ipv4.no_route")
            raise

    def send_frames(self, now: int, dst: int, proto: int, frames: list) -> None:
        """Send frames a transport built whole (Ethernet + IPv4 + its header, e.g. with
        :func:`pystack.wire.headers.emit_tcp`): route ``dst``, patch the next hop's MAC
        in, or park them behind ARP like any datagram.  OSError (ENETUNREACH) when there
        is no route.  The frames must be bytearrays no longer than the MTU.
        """
        self._tick(now)
        next_hop, mac = self._route_counted(dst)
        self.stats.incr("ipv4.tx", len(frames))
        self._dispatch(now, next_hop, mac, proto, frames)

    def _send_quietly(self, now: int, dst: int, proto: int, payload, tos: int) -> bool:
        """send_ip for the stack's own replies: a failure is counted (ipv4.no_route), not raised."""
        try:
            self._send_ip(now, dst, proto, payload, None, tos, None, False)
        except OSError:
            return False
        if proto == PROTO_ICMP:
            self.stats.incr("icmp.tx")
        return True

    def _dispatch(self, now: int, next_hop: int, mac: bytes | None, proto: int, frames: list) -> None:
        """Queue the frames of one datagram, or park them until ``next_hop`` resolves.

        The frames are bytearrays the caller built for this call and hands
        over: they are queued as they are, with no copy (issue 4 item 12).
        """
        if mac is None:
            mac = self.neighbors.lookup(next_hop, now)
            if mac is None:
                if self.neighbors.enqueue(next_hop, (proto, frames), now):
                    self._queue_arp(BROADCAST, ArpPacket.request(self._mac, self._ip, next_hop))
                    self.stats.incr("arp.requests_sent")
                return
            for frame in frames:
                frame[0:6] = mac
        self._out.extend(frames)

    # -- timers and output -------------------------------------------------------------------------

    def poll(self, now: int) -> list:
        """Run what is due at ``now`` and return every frame ready to send, oldest first
        (bytes-like: bytes or bytearray, handed over to the caller)."""
        self._tick(now)
        neighbors = self.neighbors
        for ip in neighbors.requests_due(now):  # RFC 1122 §2.3.2.1: at most one per second
            self._queue_arp(BROADCAST, ArpPacket.request(self._mac, self._ip, ip))
            self.stats.incr("arp.requests_sent")
        for _ip_, items in neighbors.failed(now):
            for item in items:
                self._report_unresolved(item, now)
        for quote in self.reassembler.expire(now):
            # RFC 1122 §3.3.2: Time Exceeded, code 1, when fragment zero had arrived.
            self.send_icmp_error(now, TIME_EXCEEDED, TIME_EXCEEDED_REASSEMBLY, quote)
        if self._announce_due is not None and self._announce_due <= now:
            self._announce(now)
        for handler in self._handlers.values():
            handler.poll(self, now)
        out = self._out
        if out:
            self._out = []
            self.stats.incr("ethernet.tx", len(out))
        return out

    def _report_unresolved(self, item, now: int) -> None:
        """ARP failed for a datagram we sent: tell its sender, as a local Host Unreachable.

        RFC 1122 §2.3.2.2 lets the queued datagrams be dropped; the local
        sender learns of it the way Linux tells it (an ICMP Host Unreachable
        looped back to the transport, ``ipv4_link_failure``): the handler of
        its protocol gets the error directly, with no ICMP on the wire and
        no rate limit.
        """
        proto, frames = item
        handler = self._handlers.get(proto)
        if handler is None:
            return
        quoted = IPv4Packet.parse(frames[0], ETH_HEADER_LEN, verify_checksum=False, partial=True)
        self.stats.incr("arp.host_unreachable")
        handler.handle_icmp_error(self, now, DEST_UNREACHABLE, UNREACH_HOST, quoted, 0)

    def poll_at(self) -> int | None:
        """The next instant :meth:`poll` has work; the last ``now`` or earlier if frames wait already."""
        if self._out:
            return self._now
        best = self.neighbors.poll_at()
        for t in (self.reassembler.poll_at(), self._announce_due):
            if t is not None and (best is None or t < best):
                best = t
        for handler in self._handlers.values():
            t = handler.poll_at()
            if t is not None and (best is None or t < best):
                best = t
        return best

    # -- status --------------------------------------------------------------------------------------

    def status(self) -> dict:
        """A JSON-able picture: config, counters by layer, the ARP table, resolutions, sockets."""
        arp = []
        for ip, mac, expires_at in self.neighbors.entries():
            arp.append({"ip": ip_to_str(ip), "mac": mac_to_str(mac),
                        "state": "permanent" if expires_at is None else "reachable",
                        "expires_in_us": None if expires_at is None else max(0, expires_at - self._now)})
        resolving = [{"ip": ip_to_str(ip), "queued": queued, "requests_sent": sent}
                     for ip, queued, sent in self.neighbors.resolving()]
        return {
            "now": self._now,
            "config": self.config.as_dict(),
            "counters": self.stats.by_layer(),
            "arp": arp,
            "arp_resolving": resolving,
            "reassembly": {"pending": self.reassembler.pending, "memory": self.reassembler.memory},
            "sockets": self.udp.sockets_info(),
            "tcp": self.tcp.connections_info(),
        }

    def __repr__(self) -> str:
        c = self.config
        return f"<Interface {mac_to_str(c.mac)} {ip_to_str(c.ip)}/{c.prefix_len} mtu {c.mtu}>"
