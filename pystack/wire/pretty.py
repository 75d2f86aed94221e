"""One-line, tcpdump-like summaries of Ethernet frames, for logs and test failures.

Owns :func:`summarize` and nothing else.  It parses with the pure value
parsers of this package and never raises: a layer that does not parse is
shown as ``malformed (<reason>: <detail>) <n> bytes``, ``n`` being the bytes
handed to that layer, after whatever outer layers did parse.  A bad
checksum does not hide the fields: they are shown, followed by
``[bad ... cksum]``.  Examples::

    02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 10.0.0.1:40000 > 10.0.0.2:80 TCP [S] seq 1000 win 64240 <mss 1460,sackOK,TS 1:0,nop,wscale 7> len 0
    02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff ARP who-has 10.0.0.2 tell 10.0.0.1
    02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 10.0.0.1 > 10.0.0.2 ICMP echo request id 3 seq 1 len 56
    02:00:00:00:00:02 > 02:00:00:00:00:01 IPv4 10.0.0.2 > 10.0.0.1 ICMP unreachable port [10.0.0.1:5000 > 10.0.0.2:53 UDP]
    02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 10.0.0.1 > 10.0.0.2 UDP frag id 7 off 1480+ len 1480
    02:00:00:00:00:01 > 02:00:00:00:00:02 IPv4 malformed (ipv4.bad_ihl: IHL 4 (16 bytes) with 20 bytes present) 20 bytes
"""

from __future__ import annotations

import struct

from pystack.errors import BadChecksum, MalformedPacket
from pystack.wire import icmpv4, tcp
from pystack.wire._fields import window
from pystack.wire.arp import OP_REQUEST, ArpPacket
from pystack.wire.ethernet import ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, EthernetFrame, mac_to_str
from pystack.wire.icmpv4 import IcmpPacket
from pystack.wire.ipv4 import PROTO_ICMP, PROTO_TCP, PROTO_UDP, IPv4Packet, ip_to_str
from pystack.wire.tcp import TcpSegment
from pystack.wire.udp import UdpDatagram

_PROTO_NAMES = {PROTO_ICMP: "ICMP", PROTO_TCP: "TCP", PROTO_UDP: "UDP"}
_PORTS = struct.Struct("!HH")

_UNREACH_CODES = {
    icmpv4.UNREACH_NET: "net", icmpv4.UNREACH_HOST: "host", icmpv4.UNREACH_PROTOCOL: "protocol",
    icmpv4.UNREACH_PORT: "port", icmpv4.UNREACH_FRAG_NEEDED: "frag-needed",
}
_TIME_EXCEEDED_CODES = {icmpv4.TIME_EXCEEDED_TTL: "ttl", icmpv4.TIME_EXCEEDED_REASSEMBLY: "reassembly"}
_ERROR_NAMES = {
    icmpv4.DEST_UNREACHABLE: "unreachable", icmpv4.SOURCE_QUENCH: "source-quench",
    icmpv4.REDIRECT: "redirect", icmpv4.TIME_EXCEEDED: "time-exceeded",
    icmpv4.PARAMETER_PROBLEM: "parameter-problem",
}


def summarize(frame, offset: int = 0, length: int | None = None) -> str:
    """One line describing the Ethernet frame at ``frame[offset:offset+length]``; never raises."""
    try:
        return _ethernet(frame, offset, length)
    except Exception as exc:  # a log line must never become a crash, whatever the input
        return f"unprintable frame ({type(exc).__name__}: {exc})"


def _bad(exc: MalformedPacket, buf) -> str:
    return f"malformed ({exc}) {len(buf)} bytes"


def _parse(strict, lenient, note: str):
    """``strict()``; when only its checksum fails, ``lenient()`` and ``note`` to show it."""
    try:
        return strict(), ""
    except BadChecksum:
        return lenient(), f" [{note}]"


def _ethernet(frame, offset, length) -> str:
    data = window(frame, offset, length)
    try:
        eth = EthernetFrame.parse(data)
    except MalformedPacket as exc:
        return _bad(exc, data)
    head = f"{mac_to_str(eth.src)} > {mac_to_str(eth.dst)}"
    if eth.ethertype == ETHERTYPE_IPV4:
        return f"{head} IPv4 {_ipv4(eth.payload)}"
    if eth.ethertype == ETHERTYPE_ARP:
        return f"{head} ARP {_arp(eth.payload)}"
    if eth.ethertype == ETHERTYPE_IPV6:
        return f"{head} IPv6 len {len(eth.payload)}"
    return f"{head} ethertype 0x{eth.ethertype:04x} len {len(eth.payload)}"


def _arp(buf) -> str:
    try:
        arp = ArpPacket.parse(buf)
    except MalformedPacket as exc:
        return _bad(exc, buf)
    if arp.opcode == OP_REQUEST:
        return f"who-has {ip_to_str(arp.target_ip)} tell {ip_to_str(arp.sender_ip)}"
    return f"reply {ip_to_str(arp.sender_ip)} is-at {mac_to_str(arp.sender_mac)}"


def _ipv4(buf) -> str:
    try:
        ip, note = _parse(lambda: IPv4Packet.parse(buf),
                          lambda: IPv4Packet.parse(buf, verify_checksum=False), "bad ip cksum")
    except MalformedPacket as exc:
        return _bad(exc, buf)
    src, dst = ip_to_str(ip.src), ip_to_str(ip.dst)
    name = _PROTO_NAMES.get(ip.proto, f"proto {ip.proto}")
    if ip.is_fragment:
        more = "+" if ip.more_fragments else ""
        return f"{src} > {dst} {name} frag id {ip.ident} off {ip.frag_offset}{more} len {len(ip.payload)}{note}"
    if ip.proto == PROTO_TCP:
        return _tcp(ip) + note
    if ip.proto == PROTO_UDP:
        return _udp(ip) + note
    if ip.proto == PROTO_ICMP:
        return f"{src} > {dst} ICMP {_icmp(ip.payload)}{note}"
    return f"{src} > {dst} {name} len {len(ip.payload)}{note}"


def _udp(ip: IPv4Packet) -> str:
    src, dst = ip_to_str(ip.src), ip_to_str(ip.dst)
    try:
        udp, note = _parse(lambda: UdpDatagram.parse(ip.payload, src=ip.src, dst=ip.dst),
                           lambda: UdpDatagram.parse(ip.payload), "bad udp cksum")
    except MalformedPacket as exc:
        return f"{src} > {dst} UDP {_bad(exc, ip.payload)}"
    return f"{src}:{udp.sport} > {dst}:{udp.dport} UDP len {len(udp.payload)}{note}"


def _tcp(ip: IPv4Packet) -> str:
    src, dst = ip_to_str(ip.src), ip_to_str(ip.dst)
    try:
        seg, note = _parse(lambda: TcpSegment.parse(ip.payload, src=ip.src, dst=ip.dst),
                           lambda: TcpSegment.parse(ip.payload), "bad tcp cksum")
    except MalformedPacket as exc:
        return f"{src} > {dst} TCP {_bad(exc, ip.payload)}"
    text = [f"{src}:{seg.sport} > {dst}:{seg.dport} TCP [{seg.flags_str or 'none'}] seq {seg.seq}"]
    if seg.flags & tcp.ACK:
        text.append(f"ack {seg.ack}")
    text.append(f"win {seg.window}")
    if seg.flags & tcp.URG:
        text.append(f"urg {seg.urgent}")
    if seg.options:
        text.append(f"<{','.join(_option(o) for o in seg.options)}>")
    text.append(f"len {len(seg.payload)}{note}")
    return " ".join(text)


def _option(o) -> str:
    if isinstance(o, tcp.NopOption):
        return "nop"
    if isinstance(o, tcp.MssOption):
        return f"mss {o.mss}"
    if isinstance(o, tcp.WindowScaleOption):
        return f"wscale {o.shift}"
    if isinstance(o, tcp.SackPermittedOption):
        return "sackOK"
    if isinstance(o, tcp.SackOption):
        return "sack " + " ".join(f"{left}:{right}" for left, right in o.blocks)
    if isinstance(o, tcp.TimestampsOption):
        return f"TS {o.tsval}:{o.tsecr}"
    return f"opt{o.kind}" + (f":{o.data.hex()}" if o.data else "")


def _icmp(buf) -> str:
    try:
        msg, note = _parse(lambda: IcmpPacket.parse(buf),
                           lambda: IcmpPacket.parse(buf, verify_checksum=False), "bad icmp cksum")
    except MalformedPacket as exc:
        return _bad(exc, buf)
    if msg.type in (icmpv4.ECHO_REQUEST, icmpv4.ECHO_REPLY):
        kind = "request" if msg.type == icmpv4.ECHO_REQUEST else "reply"
        return f"echo {kind} id {msg.ident} seq {msg.sequence} len {len(msg.payload)}{note}"
    if msg.is_error:
        text = [_ERROR_NAMES[msg.type]]
        if msg.type == icmpv4.DEST_UNREACHABLE:
            text.append(_UNREACH_CODES.get(msg.code, f"code {msg.code}"))
            if msg.code == icmpv4.UNREACH_FRAG_NEEDED:
                text.append(f"mtu {msg.next_hop_mtu}")
        elif msg.type == icmpv4.TIME_EXCEEDED:
            text.append(_TIME_EXCEEDED_CODES.get(msg.code, f"code {msg.code}"))
        else:
            text.append(f"code {msg.code}")
        text.append(_quote(msg))
        return " ".join(text) + note
    return f"type {msg.type} code {msg.code} len {len(msg.payload)}{note}"


def _quote(msg: IcmpPacket) -> str:
    """The quoted datagram's addresses, ports when it is TCP or UDP, and protocol."""
    try:
        q = msg.quoted_datagram()
    except MalformedPacket as exc:
        return f"[quote malformed ({exc})]"
    if q is None:
        return f"[quote cut short, {len(msg.payload)} bytes]"
    src, dst = ip_to_str(q.src), ip_to_str(q.dst)
    name = _PROTO_NAMES.get(q.proto, f"proto {q.proto}")
    if q.proto in (PROTO_TCP, PROTO_UDP) and q.frag_offset == 0 and len(q.payload) >= _PORTS.size:
        sport, dport = _PORTS.unpack_from(q.payload)
        return f"[{src}:{sport} > {dst}:{dport} {name}]"
    return f"[{src} > {dst} {name}]"
