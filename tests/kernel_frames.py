"""Real frames made by the Linux kernel, captured on a TAP in a namespace we create.

The kernel side of the TAP is 10.77.0.1 (MAC 02:00:00:00:00:01); the test
plays 10.77.0.2 (MAC 02:00:00:00:00:02) by reading and writing raw frames.
:func:`capture` makes the kernel emit, in order:

* ``arp_request``   -- resolving 10.77.0.2 (no neighbour entry yet); we answer;
* ``udp``           -- the datagram that was waiting for that answer;
* ``tcp_syn``       -- a non-blocking connect() to 10.77.0.2:5000; we answer
  with a SYN-ACK carrying MSS, SACK-permitted, timestamps and window scale;
* ``tcp_data_1``, ``tcp_data_2`` -- one send() of :data:`TCP_DATA` (2000
  bytes: one full segment and the PSH-marked rest);
* ``icmp_echo_request`` -- from a ping socket (``SOCK_DGRAM, IPPROTO_ICMP``);
* ``icmp_echo_reply``   -- the kernel answering an echo request we write.

``python tests/kernel_frames.py --write`` saves them as hex under
``tests/data/kernel_frames/`` with a README naming the kernel.  The frame
builders and the small field readers here are the tests' own oracle: they use
struct and :mod:`pystack.wire.checksum` only, never the parsers under test.

Everything happens inside the namespace given (or a fresh one): the TAP, its
address, the sockets, every packet.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import errno
import os
import platform
import select
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

if __name__ == "__main__":  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pystack.phy.tap import open_tap
from pystack.wire.checksum import checksum, pseudo_header_sum

DATA_DIR = Path(__file__).resolve().parent / "data" / "kernel_frames"
FRAME_NAMES = ("arp_request", "tcp_syn", "tcp_data_1", "tcp_data_2", "icmp_echo_request",
               "icmp_echo_reply", "udp")

TAP_NAME = "pst0"
TAP_IP = "10.77.0.1"
PEER_IP = "10.77.0.2"
TAP_MAC = bytes.fromhex("020000000001")
PEER_MAC = bytes.fromhex("020000000002")
BROADCAST_MAC = b"\xff" * 6

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP = 1, 6, 17
TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10

UDP_SPORT = 4000
UDP_DPORT = 5001
UDP_PAYLOAD = b"pystack: a datagram the kernel had to resolve 10.77.0.2 for\n"

TCP_PORT = 5000
#: Known bytes, no two neighbouring segments alike: byte i is (i * 31 + 7) mod 256.
TCP_DATA = bytes((i * 31 + 7) & 0xFF for i in range(2000))
SYNACK_ISN = 0x1000_0000
SYNACK_TSVAL = 0x0BAD_CAFE
SYNACK_MSS = 1460
SYNACK_WSCALE = 7

PING_IDENT = 0x7057  # a ping socket's ident is the "port" it is bound to (net/ipv4/ping.c)
PING_SEQ = 1
PING_PAYLOAD = b"pystack ping from the kernel...."
ECHO_IDENT = 0x4242
ECHO_SEQ = 7
ECHO_PAYLOAD = b"pystack echo request to the kernel"

WAIT_S = 3.0  # bound on every wait for a frame or a socket event


def ip_int(text: str) -> int:
    return struct.unpack("!I", socket.inet_aton(text))[0]


# -- the namespace side: a configured TAP and sockets inside it ---------------

def _write_sysctl(path: str, value: str) -> None:
    """Write a sysctl of the namespace the calling thread is in (call inside ``ns.entered()``)."""
    with contextlib.suppress(FileNotFoundError):  # no IPv6 in this kernel: nothing to quiet
        with open(path, "w") as f:
            f.write(value)


@contextlib.contextmanager
def tap_in_namespace(ns, *, name: str = TAP_NAME, neighbour: bool = True,
                     txqlen: int | None = None) -> Iterator[int]:
    """A TAP in ``ns``: up, 10.77.0.1/24, MAC 02:00:00:00:00:01; yields its non-blocking fd.

    IPv6 is turned off in the namespace first, so the kernel sends nothing on
    its own (no router solicitations, DAD or MLD reports).  ``neighbour``
    adds a permanent entry 10.77.0.2 -> 02:00:00:00:00:02 so IPv4 goes out
    without ARP.  ``txqlen`` sizes the TAP's queue (default 1000 frames); a
    frame sent while it is full is dropped.  The fd is closed on exit, which
    removes the device.
    """
    from pyroute2.netlink.rtnl import ndmsg

    with ns.entered():
        _write_sysctl("/proc/sys/net/ipv6/conf/all/disable_ipv6", "1")
        _write_sysctl("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1")
        fd = open_tap(name)
    try:
        with ns.iproute() as ipr:
            index = ipr.link_lookup(ifname=name)[0]
            settings = {"address": TAP_MAC.hex(":")}
            if txqlen is not None:
                settings["txqlen"] = txqlen
            ipr.link("set", index=index, **settings)
            ipr.link("set", index=index, state="up")
            ipr.addr("add", index=index, address=TAP_IP, prefixlen=24)
            if neighbour:
                ipr.neigh("add", dst=PEER_IP, lladdr=PEER_MAC.hex(":"), ifindex=index,
                          state=ndmsg.states["permanent"])
        yield fd
    finally:
        os.close(fd)


def kernel_socket(ns, family: int = socket.AF_INET, type: int = socket.SOCK_DGRAM,
                  proto: int = 0) -> socket.socket:
    """A socket of the namespace's kernel stack."""
    with ns.entered():
        return socket.socket(family, type, proto)


def wait_readable(fd: int, timeout: float = WAIT_S) -> bool:
    """Wait at most ``timeout`` seconds for ``fd`` to be readable."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(int(timeout * 1000)))


def wait_frame(fd: int, want: Callable[[bytes], bool], timeout: float = WAIT_S) -> bytes:
    """The next frame from the TAP for which ``want(frame)`` is true; others are dropped.

    Raises TimeoutError (listing what was dropped) when none came in ``timeout`` s.
    """
    deadline = time.monotonic() + timeout
    dropped = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not wait_readable(fd, left):
            raise TimeoutError(f"no wanted frame within {timeout} s; dropped {len(dropped)}: "
                               + ", ".join(f.hex()[:80] for f in dropped[:5]))
        try:
            frame = os.read(fd, 65536)
        except BlockingIOError:
            continue
        if want(frame):
            return frame
        dropped.append(frame)


# -- reading a few fields (our oracle, not the parsers under test) -----------

def ethertype(frame: bytes) -> int:
    return struct.unpack_from("!H", frame, 12)[0]


def ipv4_fields(frame: bytes) -> tuple[int, int, int, bytes] | None:
    """(proto, src, dst, l4 bytes) of an IPv4 frame, None for anything else."""
    if len(frame) < 34 or ethertype(frame) != ETH_P_IP:
        return None
    ihl = (frame[14] & 0x0F) * 4
    total = struct.unpack_from("!H", frame, 16)[0]
    proto = frame[23]
    src, dst = struct.unpack_from("!II", frame, 26)
    return proto, src, dst, bytes(frame[14 + ihl:14 + total])


def tcp_fields(frame: bytes) -> dict | None:
    """sport, dport, seq, ack, flags, tsval (or None) and payload of a TCP frame."""
    ip = ipv4_fields(frame)
    if ip is None or ip[0] != IPPROTO_TCP:
        return None
    seg = ip[3]
    sport, dport, seq, ack, off_flags = struct.unpack_from("!HHIIH", seg)
    hlen = (off_flags >> 12) * 4
    tsval = None
    opts, i = seg[20:hlen], 0
    while i < len(opts):
        kind = opts[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(opts) or opts[i + 1] < 2:
            break
        if kind == 8 and opts[i + 1] == 10:
            tsval = struct.unpack_from("!I", opts, i + 2)[0]
        i += opts[i + 1]
    return {"sport": sport, "dport": dport, "seq": seq, "ack": ack, "flags": off_flags & 0x1FF,
            "tsval": tsval, "payload": seg[hlen:]}


def checksums_verify(frame: bytes) -> bool:
    """True when the IPv4 header checksum and the ICMP, UDP or TCP checksum verify (RFC 1071)."""
    ip = ipv4_fields(frame)
    if ip is None:
        return False
    proto, src, dst, l4 = ip
    ihl = (frame[14] & 0x0F) * 4
    if checksum(frame[14:14 + ihl]) != 0:
        return False
    if proto == IPPROTO_ICMP:
        return checksum(l4) == 0
    if proto == IPPROTO_UDP and struct.unpack_from("!H", l4, 6)[0] == 0:
        return True  # RFC 768: no checksum sent
    return checksum(l4, pseudo_header_sum(src, dst, proto, len(l4))) == 0


# -- building frames the peer (10.77.0.2) sends -------------------------------

def ethernet(payload: bytes, ethertype: int = ETH_P_IP, dst: bytes = TAP_MAC,
             src: bytes = PEER_MAC) -> bytes:
    return dst + src + struct.pack("!H", ethertype) + payload


def ipv4(proto: int, payload: bytes, src: str = PEER_IP, dst: str = TAP_IP, ident: int = 1,
         ttl: int = 64) -> bytes:
    """An IPv4 header (RFC 791, no options, DF set) with its checksum, then ``payload``."""
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0x4000, ttl, proto,
                         0, socket.inet_aton(src), socket.inet_aton(dst))
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + payload


def udp(sport: int, dport: int, payload: bytes, src: str = PEER_IP, dst: str = TAP_IP) -> bytes:
    """A UDP datagram (RFC 768) with its checksum over the pseudo-header."""
    length = 8 + len(payload)
    seg = struct.pack("!HHHH", sport, dport, length, 0) + payload
    csum = checksum(seg, pseudo_header_sum(ip_int(src), ip_int(dst), IPPROTO_UDP, length)) or 0xFFFF
    return seg[:6] + struct.pack("!H", csum) + seg[8:]


def udp_frame(sport: int, dport: int, payload: bytes, ident: int = 1) -> bytes:
    """A whole frame: 10.77.0.2:sport -> 10.77.0.1:dport."""
    return ethernet(ipv4(IPPROTO_UDP, udp(sport, dport, payload), ident=ident))


def tcp(sport: int, dport: int, seq: int, ack: int, flags: int, window: int,
        options: bytes = b"", payload: bytes = b"", src: str = PEER_IP, dst: str = TAP_IP) -> bytes:
    """A TCP segment (RFC 9293 §3.1) with its checksum; ``options`` padded to 32 bits."""
    options += b"\x00" * (-len(options) % 4)
    hlen = 20 + len(options)
    seg = struct.pack("!HHIIHHHH", sport, dport, seq, ack, (hlen // 4) << 12 | flags, window, 0,
                      0) + options + payload
    csum = checksum(seg, pseudo_header_sum(ip_int(src), ip_int(dst), IPPROTO_TCP, len(seg)))
    return seg[:16] + struct.pack("!H", csum) + seg[18:]


def icmp_echo(request: bool, ident: int, seq: int, payload: bytes) -> bytes:
    """An ICMP echo request or reply (RFC 792) with its checksum."""
    msg = struct.pack("!BBHHH", 8 if request else 0, 0, 0, ident, seq) + payload
    return msg[:2] + struct.pack("!H", checksum(msg)) + msg[4:]


def arp_reply() -> bytes:
    """10.77.0.2 is-at 02:00:00:00:00:02, to the kernel (RFC 826)."""
    arp = struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, 2, PEER_MAC, socket.inet_aton(PEER_IP),
                      TAP_MAC, socket.inet_aton(TAP_IP))
    return ethernet(arp, ETH_P_ARP)


# -- the capture --------------------------------------------------------------

def _is_ipv4(proto: int, frame: bytes, **want) -> bool:
    ip = ipv4_fields(frame)
    return ip is not None and ip[0] == proto and ip[2] == ip_int(PEER_IP) and all(
        fn(ip[3]) for fn in want.values())


def _wait_socket(sock: socket.socket, events: int) -> None:
    poller = select.poll()
    poller.register(sock, events)
    if not poller.poll(int(WAIT_S * 1000)):
        raise TimeoutError(f"socket not ready for {events:#x} within {WAIT_S} s")


def capture(ns) -> dict[str, bytes]:
    """Make the kernel of namespace ``ns`` emit the frames of :data:`FRAME_NAMES`; return them."""
    frames: dict[str, bytes] = {}
    with contextlib.ExitStack() as stack:
        fd = stack.enter_context(tap_in_namespace(ns, neighbour=False))

        # (a) ARP, and (e) the UDP datagram that waited for it.
        sock = stack.enter_context(kernel_socket(ns))
        sock.bind((TAP_IP, UDP_SPORT))
        sock.sendto(UDP_PAYLOAD, (PEER_IP, UDP_DPORT))
        frames["arp_request"] = wait_frame(fd, lambda f: ethertype(f) == ETH_P_ARP
                                           and f[20:22] == b"\x00\x01"
                                           and f[38:42] == socket.inet_aton(PEER_IP))
        os.write(fd, arp_reply())
        frames["udp"] = wait_frame(fd, lambda f: _is_ipv4(
            IPPROTO_UDP, f, port=lambda l4: struct.unpack_from("!H", l4, 2)[0] == UDP_DPORT))

        # (b) the SYN, our SYN-ACK, (c) the data.
        conn = stack.enter_context(kernel_socket(ns, type=socket.SOCK_STREAM))
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = conn.connect_ex((PEER_IP, TCP_PORT))
        if err != 0 and err != errno.EINPROGRESS:
            raise OSError(err, os.strerror(err))
        syn_frame = wait_frame(fd, lambda f: (t := tcp_fields(f)) is not None
                               and t["dport"] == TCP_PORT and t["flags"] & (TCP_SYN | TCP_ACK) == TCP_SYN)
        frames["tcp_syn"] = syn_frame
        syn = tcp_fields(syn_frame)
        options = (struct.pack("!BBH", 2, 4, SYNACK_MSS) + b"\x04\x02"
                   + struct.pack("!BBII", 8, 10, SYNACK_TSVAL, syn["tsval"] or 0)
                   + b"\x01" + struct.pack("!BBB", 3, 3, SYNACK_WSCALE))
        first_seq = (syn["seq"] + 1) & 0xFFFFFFFF  # sequence numbers wrap (RFC 9293 §3.4)
        os.write(fd, ethernet(ipv4(IPPROTO_TCP, tcp(TCP_PORT, syn["sport"], SYNACK_ISN, first_seq,
                                                     TCP_SYN | TCP_ACK, 65535, options))))
        _wait_socket(conn, select.POLLOUT)
        err = conn.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, f"connect to {PEER_IP}:{TCP_PORT} in the namespace failed")
        if conn.send(TCP_DATA) != len(TCP_DATA):
            raise RuntimeError("the kernel took only part of TCP_DATA")
        data_frames = []
        next_seq = first_seq
        while next_seq != (first_seq + len(TCP_DATA)) & 0xFFFFFFFF:
            frame = wait_frame(fd, lambda f: (t := tcp_fields(f)) is not None
                               and t["dport"] == TCP_PORT and t["seq"] == next_seq and t["payload"])
            data_frames.append(frame)
            next_seq = (next_seq + len(tcp_fields(frame)["payload"])) & 0xFFFFFFFF
        if len(data_frames) != 2:
            raise RuntimeError(f"expected TCP_DATA in 2 segments, the kernel sent {len(data_frames)}")
        frames["tcp_data_1"], frames["tcp_data_2"] = data_frames
        # Acknowledge everything so the kernel does not retransmit while we go on.
        os.write(fd, ethernet(ipv4(IPPROTO_TCP, tcp(
            TCP_PORT, syn["sport"], SYNACK_ISN + 1, next_seq, TCP_ACK, 65535,
            b"\x01\x01" + struct.pack("!BBII", 8, 10, SYNACK_TSVAL + 1,
                                      tcp_fields(data_frames[-1])["tsval"] or 0)), ident=2)))

        # (d) an echo request from a ping socket; root may open one only when
        # its group is in net.ipv4.ping_group_range (default "1 0": nobody).
        with ns.entered():
            _write_sysctl("/proc/sys/net/ipv4/ping_group_range", "0 2147483647")
        ping = stack.enter_context(kernel_socket(ns, proto=IPPROTO_ICMP))
        ping.bind(("", PING_IDENT))
        ping.sendto(icmp_echo(True, 0, PING_SEQ, PING_PAYLOAD), (PEER_IP, 0))
        frames["icmp_echo_request"] = wait_frame(fd, lambda f: _is_ipv4(
            IPPROTO_ICMP, f, echo=lambda l4: l4[0] == 8))

        # ... and the kernel's echo reply to ours.
        os.write(fd, ethernet(ipv4(IPPROTO_ICMP, icmp_echo(True, ECHO_IDENT, ECHO_SEQ, ECHO_PAYLOAD),
                                   ident=3)))
        frames["icmp_echo_reply"] = wait_frame(fd, lambda f: _is_ipv4(
            IPPROTO_ICMP, f, reply=lambda l4: l4[0] == 0
            and struct.unpack_from("!H", l4, 4)[0] == ECHO_IDENT))
    return frames


def capture_fresh() -> dict[str, bytes]:
    """:func:`capture` in a namespace made for it and removed after."""
    from pystack.runtime.netns import NetNamespace

    with NetNamespace() as ns:
        return capture(ns)


# -- the saved copies -----------------------------------------------------------

def load_saved(directory: Path = DATA_DIR) -> dict[str, bytes]:
    """The frames saved by ``--write`` (hex, whitespace ignored)."""
    return {name: bytes.fromhex((directory / f"{name}.hex").read_text()) for name in FRAME_NAMES}


def save(frames: dict[str, bytes], directory: Path = DATA_DIR) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in FRAME_NAMES:
        raw = frames[name]
        lines = [raw[i:i + 16].hex(" ") for i in range(0, len(raw), 16)]
        (directory / f"{name}.hex").write_text("\n".join(lines) + "\n")
    today = datetime.date.today().isoformat()
    (directory / "README").write_text(f"""\
Frames made by the Linux kernel, one per file, as hex bytes (whitespace is
not significant: bytes.fromhex(text) reads them).  Each is a whole Ethernet
frame as read from a TAP: no preamble, no FCS, no padding.

Captured by `python tests/kernel_frames.py --write` (as root) on {today}
from kernel {platform.release()} ({platform.machine()}), in a network namespace
made for the capture.  The kernel side of the TAP is 10.77.0.1 with MAC
02:00:00:00:00:01; the capture plays 10.77.0.2 with MAC 02:00:00:00:00:02.
tests/kernel_frames.py says what makes each frame and holds the payloads they
carry; tests/test_kernel_frames.py checks these files and frames captured
afresh from the running kernel.

arp_request        who-has 10.77.0.2 (no neighbour entry yet)
udp                10.77.0.1:{UDP_SPORT} -> 10.77.0.2:{UDP_DPORT}, sent once our ARP reply arrived
tcp_syn            connect() to 10.77.0.2:{TCP_PORT}: MSS, SACK-permitted, timestamps, window scale
tcp_data_1, _2     one send() of {len(TCP_DATA)} known bytes after our SYN-ACK (MSS {SYNACK_MSS}, TS, WS {SYNACK_WSCALE})
icmp_echo_request  from a ping socket bound to ident {PING_IDENT:#06x}, sequence {PING_SEQ}
icmp_echo_reply    the kernel's answer to our echo request (ident {ECHO_IDENT:#06x}, sequence {ECHO_SEQ})
""")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true",
                        help=f"capture and save the frames (needs root) under {DATA_DIR}")
    parser.add_argument("--dir", type=Path, default=DATA_DIR, help="where --write saves them")
    args = parser.parse_args(argv)
    frames = capture_fresh()
    for name in FRAME_NAMES:
        print(f"{name:18} {len(frames[name]):5} bytes  {frames[name][:24].hex()}...")
    if args.write:
        save(frames, args.dir)
        print(f"saved to {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
