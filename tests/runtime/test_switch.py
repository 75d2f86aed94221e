"""The daemon's switch, its ports, the attach command and the joined host's device -- no root.

The switch sits over an in-memory lower device (the test plays the TAP:
``below.inbox`` is what the kernel sent, ``below.sent`` what reached it);
ports are real AF_UNIX SOCK_SEQPACKET socket pairs, read here with
:meth:`Switch.read_ports` or by a real :class:`Loop`.  Frames are Ethernet
headers with a tag as payload: only the switch's forwarding is under test.
"""

from __future__ import annotations

import errno
import json
import select
import socket
import threading

import pytest

from pystack.phy.unixlink import UnixLinkDevice
from pystack.runtime.control import ControlError, ControlServer, Reply, request
from pystack.runtime.loop import Loop
from pystack.runtime.switch import Attacher, Switch, attach
from pystack.wire.ipv4 import ip_from_str

WAIT_S = 5.0
DAEMON = bytes.fromhex("025000000002")
A = bytes.fromhex("02aa00000001")
B = bytes.fromhex("02bb00000002")
KERNEL = bytes.fromhex("02cc00000003")
NOBODY = bytes.fromhex("02dd00000004")
BCAST = b"\xff" * 6
MCAST = bytes.fromhex("01005e000001")  # an IPv4 multicast group's MAC (RFC 1112 §6.4)


def frame(dst: bytes, src: bytes, tag: bytes = b"x") -> bytes:
    return dst + src + b"\x08\x00" + tag.ljust(46, b".")  # padded to Ethernet's 60-byte minimum


class Below:
    """The lower device: frames 'from the kernel' in ``inbox``, frames sent in ``sent``."""

    def __init__(self, mtu: int = 1500) -> None:
        self.mtu = mtu
        self.inbox: list = []
        self.sent: list[bytes] = []
        self.take_limit: int | None = None
        self.closed = False
        self.at: int | None = None

    def receive(self, now):
        out, self.inbox = self.inbox, []
        return out

    def transmit(self, frames, now):
        n = len(frames) if self.take_limit is None else min(self.take_limit, len(frames))
        self.sent.extend(bytes(f) for f in frames[:n])
        return n

    def poll_at(self):
        return self.at

    def close(self):
        self.closed = True


def recv_all(sock: socket.socket) -> list[bytes]:
    """Every frame waiting on a host's end, without waiting for more."""
    out = []
    while select.select([sock], [], [], 0)[0]:
        out.append(sock.recv(65536))
    return out


@pytest.fixture
def sw():
    s = Switch(Below(), DAEMON)
    yield s
    s.close()


def plug(sw: Switch, mac: bytes) -> socket.socket:
    host = sw.add_port(mac)
    host.settimeout(WAIT_S)
    return host


# -- no port: the switch is invisible ------------------------------------------------------

def test_without_ports_everything_passes_through_unchanged(sw):
    frames = [frame(DAEMON, KERNEL), frame(NOBODY, KERNEL), frame(BCAST, KERNEL), b"runt"]
    sw.inner.inbox = list(frames)
    assert sw.receive(1) == frames
    out = [frame(KERNEL, DAEMON), frame(BCAST, DAEMON)]
    assert sw.transmit(out, 1) == 2
    assert sw.inner.sent == out
    sw.inner.take_limit = 1
    assert sw.transmit(out, 2) == 1
    assert sw.poll_at() is None
    sw.inner.at = 77
    assert sw.poll_at() == 77  # a FaultInjector's delayed frames below are still seen


# -- from below (the TAP) --------------------------------------------------------------------

def test_from_below_unicast_goes_to_its_port_only(sw):
    a, b = plug(sw, A), plug(sw, B)
    sw.inner.inbox = [frame(A, KERNEL, b"1"), frame(DAEMON, KERNEL, b"2"), frame(B, KERNEL, b"3")]
    up = sw.receive(1)
    assert [bytes(f) for f in up] == [frame(DAEMON, KERNEL, b"2")]
    assert recv_all(a) == [frame(A, KERNEL, b"1")]
    assert recv_all(b) == [frame(B, KERNEL, b"3")]
    assert sw.port(A).tx_frames == 1 and sw.port(B).tx_frames == 1


def test_from_below_group_addresses_reach_everyone_and_unknown_unicast_goes_up(sw):
    a, b = plug(sw, A), plug(sw, B)
    sw.inner.inbox = [frame(BCAST, KERNEL, b"arp"), frame(MCAST, KERNEL, b"mc"), frame(NOBODY, KERNEL, b"?"),
                      b"short"]
    up = [bytes(f) for f in sw.receive(1)]
    # The stack above counts and drops what is not for it, as without a switch.
    assert up == [frame(BCAST, KERNEL, b"arp"), frame(MCAST, KERNEL, b"mc"), frame(NOBODY, KERNEL, b"?"), b"short"]
    for host in (a, b):
        assert recv_all(host) == [frame(BCAST, KERNEL, b"arp"), frame(MCAST, KERNEL, b"mc")]


# -- from the daemon's interface ----------------------------------------------------------------

def test_from_the_stack_port_frames_skip_the_wire(sw):
    a = plug(sw, A)
    out = [frame(KERNEL, DAEMON, b"1"), frame(A, DAEMON, b"2"), frame(NOBODY, DAEMON, b"3"), frame(BCAST, DAEMON, b"4")]
    assert sw.transmit(out, 1) == 4
    assert sw.inner.sent == [out[0], out[2], out[3]]
    assert recv_all(a) == [out[1], out[3]]


def test_from_the_stack_a_refused_run_keeps_the_prefix_rule(sw):
    """transmit returns how many leading frames were taken; nothing after is delivered early
    and nothing before is delivered twice when the loop offers the rest again."""
    a = plug(sw, A)
    out = [frame(KERNEL, DAEMON, b"1"), frame(BCAST, DAEMON, b"2"), frame(A, DAEMON, b"3"), frame(KERNEL, DAEMON, b"4")]
    sw.inner.take_limit = 1
    assert sw.transmit(out, 1) == 1
    assert recv_all(a) == []  # neither the broadcast (not taken) nor the frame after it
    sw.inner.take_limit = 0
    assert sw.transmit(out[1:], 2) == 0
    assert recv_all(a) == []
    sw.inner.take_limit = None
    assert sw.transmit(out[1:], 3) == 3
    assert sw.inner.sent == [out[0], out[1], out[3]]
    assert recv_all(a) == [out[1], out[2]]


# -- from a port ----------------------------------------------------------------------------

def test_from_a_port_to_the_daemon_is_due_at_once(sw):
    a = plug(sw, A)
    a.send(frame(DAEMON, A, b"hi"))
    sw.read_ports()
    assert sw.poll_at() == 0  # the loop calls receive in this iteration
    assert [bytes(f) for f in sw.receive(1)] == [frame(DAEMON, A, b"hi")]
    assert sw.poll_at() is None
    assert sw.port(A).rx_frames == 1


def test_from_a_port_to_another_port_and_down(sw):
    a, b = plug(sw, A), plug(sw, B)
    a.send(frame(B, A, b"to-b"))
    a.send(frame(KERNEL, A, b"to-kernel"))
    sw.read_ports()
    assert recv_all(b) == [frame(B, A, b"to-b")]
    assert sw.poll_at() == 0
    assert sw.receive(1) == []
    assert sw.inner.sent == [frame(KERNEL, A, b"to-kernel")]
    assert sw.counters["down_frames"] == 1


def test_from_a_port_broadcast_reaches_all_but_the_sender(sw):
    a, b = plug(sw, A), plug(sw, B)
    a.send(frame(BCAST, A, b"who-has"))
    sw.read_ports()
    assert recv_all(b) == [frame(BCAST, A, b"who-has")]
    assert recv_all(a) == []
    assert [bytes(f) for f in sw.receive(1)] == [frame(BCAST, A, b"who-has")]
    assert sw.inner.sent == [frame(BCAST, A, b"who-has")]


def test_frames_the_device_refuses_are_retried_in_order(sw):
    a = plug(sw, A)
    for i in range(3):
        a.send(frame(KERNEL, A, b"%d" % i))
    sw.read_ports()
    sw.inner.take_limit = 1
    sw.receive(1000)
    assert sw.poll_at() == 1000 + 1000  # a retry, not a busy loop
    sw.inner.take_limit = None
    sw.transmit([frame(KERNEL, DAEMON, b"own")], 2000)  # the ports' frames go first
    assert sw.inner.sent == [frame(KERNEL, A, b"0"), frame(KERNEL, A, b"1"), frame(KERNEL, A, b"2"),
                             frame(KERNEL, DAEMON, b"own")]
    assert sw.poll_at() is None


def test_bad_frames_from_a_port_are_counted_and_dropped(sw):
    a, b = plug(sw, A), plug(sw, B)
    a.send(frame(B, B, b"spoofed source"))
    a.send(b"\x02" * 13)  # runt
    a.send(frame(B, A, b"x" * 1600))  # longer than mtu + 14
    a.send(frame(A, A, b"to itself"))
    a.send(frame(B, A, b"fine"))
    sw.read_ports()
    assert recv_all(b) == [frame(B, A, b"fine")]
    assert sw.port(A).rx_dropped == 4 and sw.port(A).rx_frames == 1
    assert sw.receive(1) == [] and sw.inner.sent == []


def test_a_full_port_drops_and_counts():
    sw = Switch(Below(), DAEMON, port_sndbuf=16384)  # the kernel's minimum is about 4.6 KiB
    a = plug(sw, A)
    sent = 5000  # far more than the socket buffer holds: the host reads nothing
    for i in range(sent):
        sw.inner.inbox.append(frame(A, KERNEL, b"%d" % i))
    assert sw.receive(1) == []
    port = sw.port(A)
    assert port.tx_dropped > 0 and port.tx_frames + port.tx_dropped == sent
    got = recv_all(a)
    assert len(got) == port.tx_frames and got[0] == frame(A, KERNEL, b"0")  # in order, the tail dropped
    sw.close()


def test_a_port_whose_host_closed_is_removed(sw):
    a, b = plug(sw, A), plug(sw, B)
    a.close()
    sw.read_ports()
    assert sw.port(A) is None and [p.mac for p in sw.ports] == [B]
    assert sw.counters["ports_removed"] == 1
    assert [p["mac"] for p in sw.status()["ports"]] == [B.hex(":")]
    sw.inner.inbox = [frame(A, KERNEL)]  # now unknown unicast: up, where the stack drops it
    assert len(sw.receive(1)) == 1
    plug(sw, A).close()  # the MAC is free again
    # Found gone while sending to it (ECONNRESET/EPIPE): removed as well.
    b.close()
    sw.inner.inbox = [frame(B, KERNEL)]
    sw.receive(2)
    assert sw.port(B) is None


def test_mac_rules_and_close(sw):
    plug(sw, A)
    for mac, code in ((A, errno.EADDRINUSE), (DAEMON, errno.EADDRINUSE), (BCAST, errno.EINVAL),
                      (b"\0" * 6, errno.EINVAL)):
        with pytest.raises(OSError) as info:
            sw.add_port(mac)
        assert info.value.errno == code
    host = plug(sw, B)
    sw.close()
    assert sw.inner.closed and sw.ports == []
    assert host.recv(100) == b""  # the host sees its link end


# -- with the runtime loop ----------------------------------------------------------------------

class Recorder:
    """A stack that records what it receives and sends what it is told to."""

    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.out: list[bytes] = []

    def receive(self, frame, now):
        self.got.append(bytes(frame))

    def poll(self, now):
        out, self.out = self.out, []
        return out

    def poll_at(self):
        return None


def test_the_loop_hands_a_port_frame_up_in_the_same_iteration():
    below = Below()
    sw = Switch(below, DAEMON)
    stack = Recorder()
    with Loop(sw, stack) as loop:
        sw.bind_loop(loop)
        host = sw.add_port(A)
        host.send(frame(DAEMON, A, b"1"))
        host.send(frame(KERNEL, A, b"2"))
        loop.run_once(WAIT_S)  # the port's event, then receive: one iteration
        assert stack.got == [frame(DAEMON, A, b"1")]
        assert below.sent == [frame(KERNEL, A, b"2")]
        stack.out = [frame(A, DAEMON, b"back")]
        loop.run_once(0)
        assert host.recv(100) == frame(A, DAEMON, b"back")
        host.close()
        loop.run_once(WAIT_S)
        assert sw.ports == []
        sw.close()


# -- the attach command and the client ----------------------------------------------------------

def make_attacher(sw: Switch) -> Attacher:
    return Attacher(sw, ip=ip_from_str("10.9.0.2"), prefix_len=24, mtu=1500, gateway=ip_from_str("10.9.0.254"),
                    reserved_ips=[ip_from_str("10.9.0.1")], reserved_macs=[KERNEL])


@pytest.mark.parametrize("arg, code", [
    ("", errno.EINVAL), ("nope", errno.EINVAL), ('{"ip": 3}', errno.EINVAL), ('{"ip": "10.9.0.x"}', errno.EINVAL),
    ('{"ip": "10.9.1.3"}', errno.EADDRNOTAVAIL), ('{"ip": "10.9.0.3/25"}', errno.EADDRNOTAVAIL),
    ('{"ip": "10.9.0.0"}', errno.EADDRNOTAVAIL), ('{"ip": "10.9.0.255"}', errno.EADDRNOTAVAIL),
    ('{"ip": "10.9.0.2"}', errno.EADDRINUSE), ('{"ip": "10.9.0.1"}', errno.EADDRINUSE),
    ('{"ip": "10.9.0.3", "mac": "02:cc:00:00:00:03"}', errno.EADDRINUSE),
    ('{"ip": "10.9.0.3", "mac": "02:50:00:00:00:02"}', errno.EADDRINUSE),
    ('{"ip": "10.9.0.3", "mac": "ff:ff:ff:ff:ff:ff"}', errno.EINVAL),
    ('{"ip": "10.9.0.3", "mac": "zz"}', errno.EINVAL),
])
def test_attach_refuses_addresses_not_ours_to_give(sw, arg, code):
    with pytest.raises(OSError) as info:
        make_attacher(sw)(arg)
    assert info.value.errno == code
    assert sw.ports == []


def test_attach_plugs_a_port_and_answers_with_the_link(sw):
    attacher = make_attacher(sw)
    reply = attacher('{"ip": "10.9.0.3/24"}')
    assert isinstance(reply, Reply) and len(reply.fds) == 1
    assert reply == {"port": "port1", "ip": "10.9.0.3", "prefix_len": 24, "mac": "02:50:0a:09:00:03",
                     "mtu": 1500, "gateway": "10.9.0.254", "daemon_ip": "10.9.0.2",
                     "daemon_mac": DAEMON.hex(":")}
    with pytest.raises(OSError) as info:
        attacher('{"ip": "10.9.0.3", "mac": "02:00:00:00:00:09"}')  # the IP is that port's
    assert info.value.errno == errno.EADDRINUSE
    with pytest.raises(OSError) as info:
        attacher('{"ip": "10.9.0.4", "mac": "02:50:0a:09:00:03"}')  # the MAC is
    assert info.value.errno == errno.EADDRINUSE
    reply.fds[0].close()
    sw.read_ports()  # its host went away before using it: removed, the IP is free again
    attacher('{"ip": "10.9.0.3"}').fds[0].close()


@pytest.fixture
def daemon_like(tmp_path):
    """A loop in a thread with a Switch over ``Below`` and a control socket serving
    ``status`` and ``attach``: the daemon's composition without a TAP."""
    below = Below()
    sw = Switch(below, DAEMON)
    stack = Recorder()
    loop = Loop(sw, stack)
    sw.bind_loop(loop)
    path = str(tmp_path / "ctl.sock")
    server = ControlServer(path, loop, {"status": lambda: {"switch": sw.status()}},
                           {"attach": make_attacher(sw)})
    thread = loop.start_thread()
    try:
        yield path, loop, sw, stack, below
    finally:
        loop.stop()
        thread.join(WAIT_S)
        assert not thread.is_alive()
        server.close()
        sw.close()
        loop.close()


def on_loop(loop, fn, *args):
    """Run ``fn`` in the loop thread and return its result (bounded wait)."""
    done = threading.Event()
    box = []
    loop.call_soon(lambda: (box.append(fn(*args)), done.set()))
    assert done.wait(WAIT_S)
    return box[0]


def gone(loop, sw) -> None:
    """The switch has no port left.  The host's close made the port's fd readable (EOF) at
    once; the loop reads it in the iteration that also runs our call, or in the next."""
    for _ in range(3):
        if not on_loop(loop, lambda: sw.ports):
            return
    raise AssertionError(f"ports left: {sw.ports}")


def test_attach_over_the_control_socket_passes_the_link(daemon_like):
    path, loop, sw, stack, below = daemon_like
    dev, info = attach(path, ip="10.9.0.7", mac="02:07:00:00:00:07")
    with dev:
        assert isinstance(dev, UnixLinkDevice) and dev.mtu == 1500
        assert info["mac"] == "02:07:00:00:00:07" and info["gateway"] == "10.9.0.254"
        ports = request(path, "status")["switch"]["ports"]
        assert [(p["ip"], p["mac"]) for p in ports] == [("10.9.0.7", "02:07:00:00:00:07")]
        mac = bytes.fromhex("020700000007")
        assert dev.transmit([frame(DAEMON, mac, b"up"), frame(KERNEL, mac, b"down")], 0) == 2

        def arrived():
            return stack.got and below.sent

        on_loop(loop, lambda: None)  # one iteration later at most, both are through
        assert on_loop(loop, arrived)
        assert stack.got == [frame(DAEMON, mac, b"up")] and below.sent == [frame(KERNEL, mac, b"down")]
        on_loop(loop, lambda: stack.out.append(frame(mac, DAEMON, b"reply")))
        assert select.select([dev], [], [], WAIT_S)[0]
        assert [bytes(f) for f in dev.receive(0)] == [frame(mac, DAEMON, b"reply")]
        with pytest.raises(OSError) as exc:
            attach(path, ip="10.9.0.7")
        assert exc.value.errno == errno.EADDRINUSE and "in use" in str(exc.value)
        with pytest.raises(OSError) as exc:
            attach(path, ip="10.8.0.7")
        assert exc.value.errno == errno.EADDRNOTAVAIL
    # Closed: the port goes (the loop sees the end of file).
    gone(loop, sw)
    assert request(path, "status")["switch"]["ports"] == []
    assert sw.counters["ports_removed"] == 1


def test_the_control_protocol_keeps_its_old_answers(daemon_like):
    path = daemon_like[0]
    with pytest.raises(ControlError, match="status takes no argument"):
        request(path, "status now")
    with pytest.raises(ControlError, match="unknown command 'nope' \\(known: attach, status\\)"):
        request(path, "nope")
    with pytest.raises(ControlError, match="attach: attach wants a JSON object"):
        request(path, "attach")  # an error answer without descriptors, through the plain client
    # attach through the plain client (maxfds=0): the descriptor is dropped by the kernel,
    # so the daemon sees the port's host go away and removes it.
    ans = request(path, "attach " + json.dumps({"ip": "10.9.0.9"}))
    assert ans["ip"] == "10.9.0.9"
    gone(daemon_like[1], daemon_like[2])


def test_attach_without_a_daemon_is_a_control_error(tmp_path):
    with pytest.raises(ControlError, match="no pystack daemon answers"):
        attach(str(tmp_path / "none.sock"), ip="10.9.0.3")
    with pytest.raises(TypeError):
        attach(str(tmp_path / "none.sock"), ip=0x0A090003)


# -- the joined host's device ------------------------------------------------------------------

@pytest.fixture
def link():
    theirs, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    dev = UnixLinkDevice(ours, mtu=1500, batch=4)
    theirs.settimeout(WAIT_S)
    yield dev, theirs
    dev.close()
    theirs.close()


def test_unixlink_reads_in_batches_and_drops_oversize_frames(link):
    dev, peer = link
    assert dev.receive(0) == []
    for i in range(6):
        peer.send(frame(A, B, b"%d" % i))
    peer.send(b"y" * 1515)  # one byte longer than mtu + 14
    peer.send(frame(A, B, b"last"))
    first = [bytes(f) for f in dev.receive(0)]
    assert first == [frame(A, B, b"%d" % i) for i in range(4)]
    rest = [bytes(f) for f in dev.receive(0)]
    assert rest == [frame(A, B, b"4"), frame(A, B, b"5"), frame(A, B, b"last")]
    assert dev.truncated == 1 and dev.rx_frames == 7
    assert dev.poll_at() is None and dev.fileno() >= 0


def test_unixlink_transmit_stops_when_full_and_the_end_is_enodev(link):
    dev, peer = link
    frames = [frame(B, A, b"%d" % i) for i in range(100_000)]
    taken = dev.transmit(frames, 0)
    assert 0 < taken < len(frames)  # the socket buffer filled: the rest stays with the caller
    assert peer.recv(100) == frames[0]
    peer.close()
    with pytest.raises(OSError) as info:
        dev.transmit(frames[:1], 0)
    assert info.value.errno == errno.ENODEV
    with pytest.raises(OSError) as info:
        while dev.receive(0):  # what was queued toward us is gone with the peer
            pass
    assert info.value.errno == errno.ENODEV


def test_unixlink_checks_its_arguments():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with pytest.raises(ValueError, match="SOCK_SEQPACKET"):
        UnixLinkDevice(a)
    b.close()
    c, d = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with pytest.raises(ValueError, match="mtu"):
        UnixLinkDevice(c, mtu=10)
    with pytest.raises(ValueError, match="batch"):
        UnixLinkDevice(c, batch=0)
    with pytest.raises(TypeError):
        UnixLinkDevice("fd")
    dev = UnixLinkDevice(c.detach())  # an int fd is owned from now on
    dev.close()
    dev.close()
    assert dev.closed
    d.close()
