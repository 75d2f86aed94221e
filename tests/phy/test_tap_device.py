"""TapDevice against the Linux kernel, inside a network namespace the test creates.

The kernel side of the TAP is 10.77.0.1; the test plays 10.77.0.2 (MAC
02:00:00:00:00:02, a permanent neighbour entry, so no ARP is needed) by
reading and writing raw frames through the device.
"""

from __future__ import annotations

import contextlib
import io
import logging
import select
import socket
import struct
import time

import pytest

from pystack.phy.fault_injector import FaultConfig, FaultInjector
from pystack.phy.pcap_writer import PcapWriter
from pystack.phy.tap import TapDevice
from pystack.phy.tracer import Tracer

pytestmark = pytest.mark.netns

KERNEL_IP, STACK_IP = "10.77.0.1", "10.77.0.2"
STACK_MAC = bytes.fromhex("020000000002")
STACK_PORT = 5000
WAIT_S = 3.0


def _sysctl(path: str, value: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        with open(path, "w") as f:
            f.write(value)


@contextlib.contextmanager
def tap_setup(ns, **kwargs):
    """(TapDevice "pst0", the kernel's MAC on it, a kernel UDP socket bound to 10.77.0.1)."""
    from pyroute2.netlink.rtnl import ndmsg

    with ns.entered():
        # No IPv6 chatter (router solicitations, MLD) on the link.
        _sysctl("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1")
        _sysctl("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1")
        dev = TapDevice("pst0", **kwargs)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with ns.iproute() as ipr:
            index = ipr.link_lookup(ifname="pst0")[0]
            ipr.link("set", index=index, state="up")
            ipr.addr("add", index=index, address=KERNEL_IP, prefixlen=24)
            ipr.neigh("add", dst=STACK_IP, lladdr=STACK_MAC.hex(":"), ifindex=index,
                      state=ndmsg.states["permanent"])
            kernel_mac = bytes.fromhex(ipr.get_links(index)[0].get_attr("IFLA_ADDRESS").replace(":", ""))
        sock.bind((KERNEL_IP, 0))
        sock.settimeout(WAIT_S)
        yield dev, kernel_mac, sock
    finally:
        sock.close()
        dev.close()


def checksum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_frame(kernel_mac: bytes, dport: int, payload: bytes) -> bytes:
    """Ethernet + IPv4 + UDP (checksum 0: none, RFC 768) from 10.77.0.2:5000."""
    udp = struct.pack("!HHHH", STACK_PORT, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0x4000, 64, 17, 0,
                     socket.inet_aton(STACK_IP), socket.inet_aton(KERNEL_IP))
    ip = ip[:10] + struct.pack("!H", checksum16(ip)) + ip[12:]
    return kernel_mac + STACK_MAC + b"\x08\x00" + ip + udp


def udp_payload_to_stack(frame) -> bytes | None:
    """The payload of a UDP datagram to 10.77.0.2:5000 in ``frame``, else None."""
    frame = bytes(frame)
    if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return None
    if frame[30:34] != socket.inet_aton(STACK_IP):
        return None
    ihl = (frame[14] & 0x0F) * 4
    dport, length = struct.unpack_from("!2xHH", frame, 14 + ihl)
    if dport != STACK_PORT:
        return None
    return frame[14 + ihl + 8:14 + ihl + length]


def receive_payloads(dev, count: int, now: int = 0) -> tuple[list[bytes], list[int]]:
    """Read until ``count`` datagrams for the stack arrived (bounded); also the batch sizes seen."""
    deadline = time.monotonic() + WAIT_S
    got, batches = [], []
    while len(got) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"only {len(got)} of {count} datagrams within {WAIT_S} s")
        if not select.select([dev], [], [], left)[0]:
            continue
        frames = dev.receive(now)
        batches.append(len(frames))
        got.extend(p for p in map(udp_payload_to_stack, frames) if p is not None)
    return got, batches


def test_kernel_datagrams_are_received(netns):
    with tap_setup(netns) as (dev, _, sock):
        assert dev.poll_at() is None and dev.mtu == 1500
        sock.sendto(b"hello stack", (STACK_IP, STACK_PORT))
        got, _ = receive_payloads(dev, 1)
        assert got == [b"hello stack"]


def test_receive_reads_at_most_one_batch(netns):
    with tap_setup(netns, batch=4) as (dev, _, sock):
        sent = [b"datagram %d" % i for i in range(10)]
        for payload in sent:
            sock.sendto(payload, (STACK_IP, STACK_PORT))
        got, batches = receive_payloads(dev, 10)
        assert got == sent
        assert max(batches) <= 4


def test_transmitted_frames_reach_a_kernel_socket(netns):
    with tap_setup(netns) as (dev, kernel_mac, sock):
        port = sock.getsockname()[1]
        frames = [udp_frame(kernel_mac, port, b"from the stack %d" % i) for i in range(5)]
        assert dev.transmit([bytearray(frames[0]), memoryview(frames[1])] + frames[2:], 0) == 5
        for i in range(5):
            data, addr = sock.recvfrom(2048)
            assert (data, addr) == (b"from the stack %d" % i, (STACK_IP, STACK_PORT))


def test_frame_longer_than_the_slot_is_dropped_and_counted(netns):
    with tap_setup(netns, mtu=1500) as (dev, _, sock):
        with netns.iproute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="pst0")[0], mtu=9000)
        sock.sendto(b"x" * 3000, (STACK_IP, STACK_PORT))   # one 3042-byte frame on a 9000 link
        sock.sendto(b"small", (STACK_IP, STACK_PORT))
        got, _ = receive_payloads(dev, 1)
        assert got == [b"small"]
        assert dev.truncated == 1


def test_closed_device(netns):
    with tap_setup(netns) as (dev, _, _sock):
        dev.close()
        dev.close()
        for call in (dev.fileno, lambda: dev.receive(0), lambda: dev.transmit([b"x" * 60], 0)):
            with pytest.raises(ValueError, match="closed"):
                call()


def test_composed_stack_end_to_end(netns, caplog):
    pcap = io.BytesIO()
    caplog.set_level(logging.DEBUG, logger="pystack.trace")
    with tap_setup(netns) as (tap, kernel_mac, sock):
        dev = FaultInjector(Tracer(PcapWriter(tap, pcap, time_origin=1_000_000_000_000_000)),
                            rx=FaultConfig(), tx=FaultConfig(delay=1000, duplicate=1.0), seed=1)
        assert dev.fileno() == tap.fileno() and dev.mtu == 1500
        port = sock.getsockname()[1]
        assert dev.transmit([udp_frame(kernel_mac, port, b"twice")], 0) == 1
        assert dev.poll_at() == 1000 and caplog.records == []
        dev.receive(999)
        assert caplog.records == []
        dev.receive(1000)          # releases the delayed frame and its duplicate
        assert dev.poll_at() is None
        assert [sock.recvfrom(2048)[0] for _ in range(2)] == [b"twice", b"twice"]
        sock.sendto(b"back", (STACK_IP, STACK_PORT))
        got, _ = receive_payloads(dev, 1, now=2000)
        assert got == [b"back"]
        assert dev.tx_counters.passed == 2 and dev.tx_counters.duplicated == 1
        dev.close()
    lines = [r.getMessage() for r in caplog.records]
    assert [line[:3] for line in lines[:2]] == ["tx ", "tx "]
    assert any(line.startswith("rx ") for line in lines[2:])
    data = pcap.getvalue()
    assert data[:4] == bytes.fromhex("d4c3b2a1")  # little-endian microsecond pcap
    # The first two records are the transmitted copies, stamped at release time 1000.
    sec, usec, incl, orig = struct.unpack_from("<IIII", data, 24)
    assert (sec, usec) == (1_000_000_000, 1000) and incl == orig == 42 + len(b"twice")


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a:b", "a b", "a\tb", "tap%d", "x" * 16])
def test_open_tap_refuses_names_the_kernel_would(name):
    from pystack.phy.tap import open_tap

    with pytest.raises(ValueError, match="invalid interface name"):
        open_tap(name)  # refused before /dev/net/tun is opened: no device is created


def test_longest_valid_name_is_accepted():
    from pystack.phy.tap import check_ifname

    assert check_ifname("x" * 15) == "x" * 15
