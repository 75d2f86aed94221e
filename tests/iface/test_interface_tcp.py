"""The Interface's TCP hooks (issue 4): iface.tcp registered, send_frames, receive_batch, status."""

from __future__ import annotations

from pystack.iface.interface import Interface, InterfaceConfig
from pystack.wire.headers import emit_tcp, parse_frame
from pystack.wire.ipv4 import ip_from_str

A_MAC = bytes.fromhex("020000000001")
A_IP = ip_from_str("10.77.0.1")
P_MAC = bytes.fromhex("020000000002")
P_IP = ip_from_str("10.77.0.2")
T0 = 10**9


def make() -> Interface:
    return Interface(InterfaceConfig(mac=A_MAC, ip=A_IP, prefix_len=24))


def syn(sport: int, seq: int = 1) -> bytes:
    buf = bytearray(54)
    emit_tcp(buf, 0, A_MAC, P_MAC, P_IP, A_IP, sport, 80, seq, 0, 0x02, 1000)
    return bytes(buf)


def test_tcp_is_registered_and_answers_a_closed_port_with_rst():
    iface = make()
    iface.neighbors.add_static(P_IP, P_MAC)
    assert iface.tcp is not None
    iface.receive(syn(4000), T0)
    (out,) = iface.poll(T0)
    f = parse_frame(out)
    assert f.ip_proto == 6 and f.tcp_flags == 0x14 and f.eth_dst == P_MAC
    assert iface.stats["tcp.drop.no_socket"] == 1 and iface.status()["tcp"] == []


def test_send_frames_waits_for_arp_then_patches_the_mac():
    iface = make()
    iface.receive(syn(4000), T0)
    out = iface.poll(T0)
    assert len(out) == 1 and out[0][12:14] == b"\x08\x06"  # an ARP request, the RST parked
    reply = bytearray(42)
    reply[0:6], reply[6:12], reply[12:14] = A_MAC, P_MAC, b"\x08\x06"
    reply[14:22] = bytes.fromhex("0001080006040002")
    reply[22:28], reply[28:32] = P_MAC, P_IP.to_bytes(4, "big")
    reply[32:38], reply[38:42] = A_MAC, A_IP.to_bytes(4, "big")
    iface.receive(bytes(reply), T0 + 1)
    (rst,) = iface.poll(T0 + 1)
    assert rst[0:6] == P_MAC and parse_frame(rst).tcp_flags == 0x14


def test_receive_batch_hands_tcp_segments_over_in_one_call():
    iface = make()
    iface.neighbors.add_static(P_IP, P_MAC)
    calls = []
    orig = iface.tcp.handle_batch
    iface.tcp.handle_batch = lambda i, now, items: (calls.append(len(items)), orig(i, now, items))
    iface.receive_batch([syn(4000), syn(4001), b"\x00" * 10, syn(4002)], T0)
    assert calls == [3]
    assert iface.stats["ethernet.truncated"] == 1
    assert len(iface.poll(T0)) == 3
