"""UDP sockets (RFC 768; RFC 1122 §4.1) on a sans-I/O interface, and the UDP echo service (RFC 862).

Errors are checked against what Linux and Python's socket module raise.
"""

from __future__ import annotations

import errno
import socket as stdsocket
import struct

import pytest

from iface_harness import A_IP, A_MAC, P_IP, P_MAC, SEC, headers_impl, impl, make  # noqa: F401 (fixtures)
from pystack.iface import interface as interface_mod
from pystack.iface.interface import Interface, InterfaceConfig
from pystack.services.udp_echo import ECHO_PORT, UdpEchoService
from pystack.transport.udp import EPHEMERAL_FIRST, EPHEMERAL_LAST, MAX_PAYLOAD, UdpLayer
from pystack.wire.ethernet import BROADCAST, ETHERTYPE_IPV4, EthernetFrame
from pystack.wire.icmpv4 import IcmpPacket
from pystack.wire.ipv4 import PROTO_UDP, IPv4Packet, ip_from_str
from pystack.wire.udp import UdpDatagram

T0 = 7 * SEC

def udp_in(sport: int, dport: int, data: bytes, src: int = P_IP, dst: int = A_IP, csum: bool = True,
           mac_dst: bytes = A_MAC) -> bytes:
    seg = UdpDatagram(sport, dport, data).to_bytes(src, dst) if csum else UdpDatagram(sport, dport, data).to_bytes()
    return EthernetFrame(mac_dst, P_MAC, ETHERTYPE_IPV4, IPv4Packet(src, dst, PROTO_UDP, seg).to_bytes()).to_bytes()


def sent(iface: Interface, now: int = T0) -> list[tuple[int, int, int, bytes]]:
    """(dst ip, sport, dport, data) of every UDP datagram the interface sends, checksums verified."""
    out = []
    for frame in iface.poll(now):
        e = EthernetFrame.parse(frame)
        ip = IPv4Packet.parse(e.payload)
        assert ip.proto == PROTO_UDP and ip.src == A_IP and not ip.is_fragment
        d = UdpDatagram.parse(ip.payload, src=ip.src, dst=ip.dst)
        out.append((ip.dst, d.sport, d.dport, bytes(d.payload)))
    return out


# -- bind ----------------------------------------------------------------------------------------------

def test_bind_and_getsockname():
    iface = make()
    s = iface.udp.socket()
    assert s.getsockname() == ("0.0.0.0", 0)
    s.bind(("10.77.0.1", 9000))
    assert s.getsockname() == ("10.77.0.1", 9000)
    t = iface.udp.socket()
    t.bind(("", 9001))
    assert t.getsockname() == ("0.0.0.0", 9001)


def test_port_zero_is_ephemeral_and_ports_are_distinct():
    iface = make()
    ports = []
    for _ in range(50):
        s = iface.udp.socket()
        s.bind(("", 0))
        ports.append(s.getsockname()[1])
    assert all(EPHEMERAL_FIRST <= p <= EPHEMERAL_LAST for p in ports)  # RFC 6335 §6
    assert len(set(ports)) == 50


def test_ephemeral_search_skips_taken_ports_and_wraps():
    layer = make().udp
    taken = layer.socket()
    taken.bind(("", EPHEMERAL_FIRST))
    s = layer.socket()
    s.bind(("", 0))
    assert s.getsockname()[1] == EPHEMERAL_FIRST + 1
    layer._next_ephemeral = EPHEMERAL_LAST
    u = layer.socket()
    u.bind(("", 0))
    v = layer.socket()
    v.bind(("", 0))
    assert (u.getsockname()[1], v.getsockname()[1]) == (EPHEMERAL_LAST, EPHEMERAL_FIRST + 2)


def test_every_ephemeral_port_taken_is_eaddrinuse():
    layer = UdpLayer(A_IP)
    for _ in range(EPHEMERAL_LAST - EPHEMERAL_FIRST + 1):
        layer.socket().bind(("", 0))
    with pytest.raises(OSError) as err:
        layer.socket().bind(("", 0))
    assert err.value.errno == errno.EADDRINUSE


def test_bind_errors():
    iface = make()
    s = iface.udp.socket()
    s.bind(("", 9000))
    with pytest.raises(OSError) as err:
        iface.udp.socket().bind(("10.77.0.1", 9000))  # one socket per port (no SO_REUSEADDR)
    assert err.value.errno == errno.EADDRINUSE
    with pytest.raises(OSError) as err:
        s.bind(("", 9001))
    assert err.value.errno == errno.EINVAL  # already bound
    with pytest.raises(OSError) as err:
        iface.udp.socket().bind(("10.77.0.9", 9002))
    assert err.value.errno == errno.EADDRNOTAVAIL
    with pytest.raises(OverflowError):
        iface.udp.socket().bind(("", 65536))
    with pytest.raises(TypeError):
        iface.udp.socket().bind(["", 1])
    with pytest.raises(TypeError):
        iface.udp.socket().bind(("", "1"))
    with pytest.raises(stdsocket.gaierror):
        iface.udp.socket().bind(("localhost", 1))
    s.close()
    iface.udp.socket().bind(("", 9000))  # the port is free again


def test_closed_socket_is_ebadf():
    iface = make()
    s = iface.udp.socket()
    s.close()
    s.close()  # idempotent
    for call in (lambda: s.bind(("", 1)), lambda: s.sendto(b"x", ("10.77.0.2", 1)), lambda: s.recv(1),
                 lambda: s.connect(("10.77.0.2", 1)), lambda: s.getsockname()):
        with pytest.raises(OSError) as err:
            call()
        assert err.value.errno == errno.EBADF


# -- send -------------------------------------------------------------------------------------------------

def test_sendto_autobinds_and_sends_in_the_next_poll(impl):
    iface = make()
    s = iface.udp.socket()
    assert s.sendto(b"hello", ("10.77.0.2", 53)) == 5
    port = s.getsockname()[1]
    assert EPHEMERAL_FIRST <= port
    assert iface.poll_at() is not None  # work is waiting
    assert sent(iface) == [(P_IP, port, 53, b"hello")]
    assert iface.poll_at() is None
    assert iface.stats["udp.tx"] == 1


def test_send_needs_a_peer_and_data_must_be_bytes():
    iface = make()
    s = iface.udp.socket()
    with pytest.raises(OSError) as err:
        s.send(b"x")
    assert err.value.errno == errno.EDESTADDRREQ
    with pytest.raises(OSError) as err:
        s.getpeername()
    assert err.value.errno == errno.ENOTCONN
    with pytest.raises(TypeError):
        s.sendto("text", ("10.77.0.2", 53))
    with pytest.raises(OSError) as err:
        s.sendto(b"x", ("10.77.0.2", 0))
    assert err.value.errno == errno.EINVAL


def test_sendto_accepts_any_bytes_like():
    iface = make()
    s = iface.udp.socket()
    s.bind(("", 1000))
    s.sendto(bytearray(b"ba"), ("10.77.0.2", 53))
    s.sendto(memoryview(b"xmvx")[1:3], ("10.77.0.2", 53))
    assert [d[3] for d in sent(iface)] == [b"ba", b"mv"]


def test_sizes_emsgsize_and_fragmentation():
    iface = make()
    s = iface.udp.socket()
    s.bind(("", 1000))
    with pytest.raises(OSError) as err:
        s.sendto(bytes(MAX_PAYLOAD + 1), ("10.77.0.2", 53))
    assert err.value.errno == errno.EMSGSIZE
    s.sendto(bytes(range(256)) * 255 + bytes(MAX_PAYLOAD - 255 * 256), ("10.77.0.2", 53))
    frames = iface.poll(T0)
    assert len(frames) == 45  # 65515 bytes of UDP in 1480-byte pieces
    packets = [IPv4Packet.parse(EthernetFrame.parse(f).payload) for f in frames]
    seg = b"".join(bytes(p.payload) for p in packets)
    d = UdpDatagram.parse(seg, src=A_IP, dst=P_IP)  # the checksum covers the whole datagram
    assert len(d.payload) == MAX_PAYLOAD


def test_no_route_is_raised_at_sendto():
    iface = make()
    s = iface.udp.socket()
    with pytest.raises(OSError) as err:
        s.sendto(b"x", ("192.0.2.1", 53))
    assert err.value.errno == errno.ENETUNREACH
    with pytest.raises(OSError) as err:
        s.connect(("192.0.2.1", 53))
    assert err.value.errno == errno.ENETUNREACH
    assert iface.poll(T0) == []


def test_sndbuf_full_is_eagain():
    iface = make(udp_sndbuf=1000)
    s = iface.udp.socket()
    s.bind(("", 1000))
    s.sendto(bytes(1500), ("10.77.0.2", 53))  # an empty queue takes one whatever its size
    with pytest.raises(BlockingIOError):
        s.sendto(b"x", ("10.77.0.2", 53))
    assert iface.stats["udp.sndbuf_full"] == 1
    iface.poll(T0)
    s.sendto(bytes(600), ("10.77.0.2", 53))
    s.sendto(bytes(400), ("10.77.0.2", 53))
    with pytest.raises(BlockingIOError):
        s.sendto(b"x", ("10.77.0.2", 53))
    assert s.info()["tx_queue"] == 1000


def test_close_does_not_recall_queued_datagrams():
    iface = make()
    s = iface.udp.socket()
    s.bind(("", 1000))
    s.sendto(b"last words", ("10.77.0.2", 53))
    s.close()
    assert sent(iface) == [(P_IP, 1000, 53, b"last words")]


def test_broadcast_send():
    iface = make()
    s = iface.udp.socket()
    s.bind(("", 68))
    s.sendto(b"discover", ("<broadcast>", 67))
    s.sendto(b"directed", ("10.77.0.255", 67))
    frames = iface.poll(T0)
    assert [EthernetFrame.parse(f).dst for f in frames] == [BROADCAST, BROADCAST]


# -- receive --------------------------------------------------------------------------------------------

def test_recvfrom_order_truncation_and_empty(impl):
    iface = make()
    s = iface.udp.socket()
    s.bind(("", 7000))
    with pytest.raises(BlockingIOError):
        s.recvfrom()
    assert not s.readable
    for data in (b"one", b"two", b"three"):
        iface.receive(udp_in(4000, 7000, data), T0)
    assert s.readable
    assert s.recvfrom() == (b"one", ("10.77.0.2", 4000))
    assert s.recvfrom(2) == (b"tw", ("10.77.0.2", 4000))  # the rest of the datagram is lost
    assert s.recv(100) == b"three"
    with pytest.raises(BlockingIOError):
        s.recv(100)
    with pytest.raises(ValueError):
        s.recvfrom(-1)


def test_empty_datagrams_are_datagrams():
    iface = make()
    s = iface.udp.socket()
    s.bind(("", 7000))
    iface.receive(udp_in(4000, 7000, b""), T0)
    assert s.readable and s.recvfrom() == (b"", ("10.77.0.2", 4000))


def test_checksum_zero_means_none_and_is_accepted(impl):
    iface = make()
    s = iface.udp.socket()
    s.bind(("", 7000))
    frame = udp_in(4000, 7000, b"no checksum", csum=False)
    assert struct.unpack_from("!H", frame, 14 + 20 + 6)[0] == 0
    iface.receive(frame, T0)
    assert s.recv(100) == b"no checksum"


def test_bad_checksums_are_dropped_and_counted(impl):
    iface = make()
    s = iface.udp.socket()
    s.bind(("", 7000))
    frame = bytearray(udp_in(4000, 7000, b"corrupted"))
    frame[-1] ^= 0x40
    iface.receive(bytes(frame), T0)
    assert not s.readable
    assert iface.stats["udp.bad_checksum"] == 1
    assert iface.poll(T0) == []  # no port unreachable for garbage


def test_rcvbuf_full_drops_and_counts():
    iface = make(udp_rcvbuf=100)
    s = iface.udp.socket()
    s.bind(("", 7000))
    iface.receive(udp_in(4000, 7000, bytes(150)), T0)  # an empty queue takes one
    iface.receive(udp_in(4000, 7000, b"x"), T0)
    assert iface.stats["udp.rcvbuf_full"] == 1 and s.info()["drops"] == 1
    assert len(s.recv(1000)) == 150
    for _ in range(3):
        iface.receive(udp_in(4000, 7000, bytes(40)), T0)
    assert iface.stats["udp.rcvbuf_full"] == 2  # 40 + 40 fit, the third does not
    assert s.info()["rx_queue"] == 80


def test_a_connected_socket_takes_only_its_peer():
    iface = make()
    s = iface.udp.socket()
    s.bind(("", 7000))
    s.connect(("10.77.0.2", 53))
    assert s.getpeername() == ("10.77.0.2", 53)
    assert s.getsockname() == ("10.77.0.1", 7000)  # the local address is fixed by connect
    iface.receive(udp_in(53, 7000, b"from the peer"), T0)
    iface.receive(udp_in(54, 7000, b"from elsewhere"), T0)
    assert s.recv(100) == b"from the peer" and not s.readable
    # As on Linux, the stranger gets a port unreachable: no socket takes its datagram.
    (frame,) = iface.poll(T0)
    msg = IcmpPacket.parse(IPv4Packet.parse(EthernetFrame.parse(frame).payload).payload)
    assert (msg.type, msg.code) == (3, 3)
    s.send(b"reply")
    assert sent(iface) == [(P_IP, 7000, 53, b"reply")]
    # sendto on a connected UDP socket may name another destination (Linux allows it).
    s.sendto(b"other", ("10.77.0.2", 99))
    assert sent(iface) == [(P_IP, 7000, 99, b"other")]


def test_a_socket_bound_to_our_address_takes_unicast():
    iface = make()
    s = iface.udp.socket()
    s.bind(("10.77.0.1", 7000))
    iface.receive(udp_in(1, 7000, b"u"), T0)
    assert s.recv(10) == b"u"


def test_closed_port_after_close():
    iface = make()
    s = iface.udp.socket()
    s.bind(("", 7000))
    iface.receive(udp_in(1, 7000, b"queued"), T0)
    s.close()
    iface.receive(udp_in(1, 7000, b"late"), T0)
    assert iface.stats["udp.no_port"] == 1
    assert len(iface.poll(T0)) == 1  # port unreachable


def test_sockets_info():
    iface = make()
    a = iface.udp.socket()
    a.bind(("", 7))
    b = iface.udp.socket()
    b.bind(("", 5000))
    b.connect(("10.77.0.2", 53))
    b.send(b"abc")
    iface.receive(udp_in(9, 7, b"12345"), T0)
    assert iface.udp.sockets_info() == [
        {"proto": "udp", "local": "0.0.0.0:7", "remote": "*:*", "rx_queue": 5, "tx_queue": 0, "drops": 0},
        {"proto": "udp", "local": "10.77.0.1:5000", "remote": "10.77.0.2:53", "rx_queue": 0, "tx_queue": 3,
         "drops": 0},
    ]
    assert "10.77.0.2:53" in repr(b)


def test_layer_and_socket_misuse():
    with pytest.raises(ValueError):
        UdpLayer(A_IP, rcvbuf=0)
    with pytest.raises(ValueError):
        UdpLayer(-1)
    with pytest.raises(TypeError):
        UdpEchoService(object())


# -- the echo service (RFC 862) ----------------------------------------------------------------------------

def test_udp_echo_service(impl):
    iface = make()
    s = iface.udp.socket()
    s.bind(("", ECHO_PORT))
    echo = UdpEchoService(s)
    assert echo.poll() == 0
    iface.receive(udp_in(40000, ECHO_PORT, b"marco"), T0)
    iface.receive(udp_in(40001, ECHO_PORT, bytes(3000)), T0)  # echoed fragmented
    iface.receive(udp_in(0, ECHO_PORT, b"no source port"), T0)  # cannot be answered (RFC 768: port 0)
    assert echo.poll() == 2
    assert (echo.echoed, echo.dropped) == (2, 1)
    frames = iface.poll(T0)
    first = IPv4Packet.parse(EthernetFrame.parse(frames[0]).payload)
    d = UdpDatagram.parse(first.payload, src=A_IP, dst=P_IP)
    assert (d.sport, d.dport, bytes(d.payload)) == (ECHO_PORT, 40000, b"marco")
    rest = [IPv4Packet.parse(EthernetFrame.parse(f).payload) for f in frames[1:]]
    assert [p.frag_offset for p in rest] == [0, 1480, 2960]
    big = UdpDatagram.parse(b"".join(bytes(p.payload) for p in rest), src=A_IP, dst=P_IP)
    assert (big.dport, bytes(big.payload)) == (40001, bytes(3000))
