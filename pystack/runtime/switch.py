"""The daemon's Ethernet switch: other stacks join its link as hosts of their own.

Owns the daemon side of joining (issue 5 item 2: a stack "owns the TAP
device or joins a running daemon's"): the :class:`Switch` device wrapper, its
ports, the ``attach`` command that plugs a new host into it
(:class:`Attacher`), and the client functions :func:`attach` and
:func:`join`.

Shape (decision).  The daemon owns the TAP.  A joining stack does not share
the daemon's address or sockets: it becomes *another host on the same
Ethernet segment*, with its own MAC and an IPv4 address of the daemon's
subnet -- like a VM plugged into the same bridge.  Nothing in the stack
changes (ARP, TCP, ICMP are each host's own), nothing is shared between
threads or processes except whole frames, and every stack keeps its one
owner thread.  The switch sits at the top of the daemon's chain::

    Interface <- Switch <- FaultInjector <- Tracer <- PcapWriter <- TapDevice

so the joined hosts' traffic with the kernel is captured, traced and
impaired exactly like the daemon's own; traffic between hosts of the switch
(the daemon and its ports) never reaches the wire, as on a real switch.

Forwarding (a learning-free switch: every port's MAC is known from the
moment it is attached, so there is nothing to learn and nothing to age;
IEEE 802.1D §7.7 filtering, with a static filtering entry per port):

* from below (the TAP): to the port whose MAC is the destination; a group
  address (I/G bit, the first octet's lowest bit, IEEE 802 §8.2: broadcast
  included) to every port *and* the daemon's interface; anything else to
  the daemon's interface -- its own MAC, and also unicast for nobody, which
  the interface counts and drops as it always has (so with no port the
  switch changes nothing the daemon does or counts);
* from the daemon's interface: to the port whose MAC is the destination,
  else down (group addresses also to every port);
* from a port: to the daemon's interface (its MAC), another port (its MAC),
  or down (anything else: the kernel, a gateway); group addresses to all
  three, never back to the port it came from.

A port is one end of ``socketpair(AF_UNIX, SOCK_SEQPACKET)`` (unix(7): one
frame per message, and the peer closing shows as end-of-file); the other end
goes to the joining stack over the control socket (SCM_RIGHTS), where
:class:`~pystack.phy.unixlink.UnixLinkDevice` drives it.  Ports are read by
the runtime loop (:meth:`Loop.watch`, level-triggered, at most
``port_batch`` frames per callback so one busy port cannot starve the TAP).
Frames a port sends to the daemon's interface wait in a queue that
``receive`` hands out; while it is not empty :meth:`Switch.poll_at` says
"now" (0), so the loop calls ``receive`` in the same iteration (the loop
runs watched fds' callbacks first, then checks the device's ``poll_at``).
Frames a port sends down are transmitted on the next ``receive`` or
``transmit`` -- in the same iteration, for the same reason.

Rules a switch keeps (decisions):

* A full port (its host does not read: the socket buffer is full) drops the
  frame and counts it (``tx_dropped``); a switch never waits for one host.
  The port's send buffer is made large (``port_sndbuf``, 4 MiB with
  SO_SNDBUFFORCE when we may, socket(7)) so a host that keeps up loses
  nothing.
* A port whose host closed (end-of-file, ECONNRESET, EPIPE) is removed, and
  its MAC and IP are free again.
* A frame from a port must carry the port's own source MAC (what IEEE 802.1X
  or "port security" enforce on real switches); others, runts (< 14 bytes)
  and frames longer than the link's MTU + 14 are dropped and counted
  (``rx_dropped``) -- bad input is counted, never raised.
* The queues toward the daemon and down are bounded (``queue_limit``
  frames); a frame beyond is dropped and counted at its port.

Everything here runs in the daemon's loop thread; no lock.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
from collections import deque
from collections.abc import Sequence

from pystack.phy.device import ETHERNET_HEADER_LEN, Device, Wrapper, earliest

log = logging.getLogger("pystack.switch")

#: Retry interval for frames from ports the lower device refused (µs); as the loop's TX_RETRY_US.
DOWN_RETRY_US = 1000
#: Port send buffer asked for (bytes); SO_SNDBUFFORCE needs CAP_NET_ADMIN, else capped at wmem_max.
PORT_SNDBUF = 4 << 20
_GONE = (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN)

#: Switch-wide counters (:attr:`Switch.counters`).
COUNTERS = (
    "ports_attached",   # ports ever added
    "ports_removed",    # ports removed (their host closed, or the daemon removed them)
    "down_frames",      # frames from ports sent down (toward the TAP)
    "down_dropped",     # frames from ports the lower device failed on
    "up_frames",        # frames from ports handed to the daemon's interface
)


def _set_sndbuf(sock: socket.socket, size: int) -> None:
    force = getattr(socket, "SO_SNDBUFFORCE", 32)  # asm-generic/socket.h
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, size)
    except OSError:  # EPERM without CAP_NET_ADMIN: as much as wmem_max allows
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


def _mac_text(mac: bytes) -> str:
    return bytes(mac).hex(":")


class Port:
    """One host plugged into the switch: its end of the socket pair, addresses, counters."""

    __slots__ = ("name", "sock", "fd", "mac", "ip", "rx_frames", "tx_frames", "rx_dropped", "tx_dropped")

    def __init__(self, name: str, sock: socket.socket, mac: bytes, ip: int | None) -> None:
        self.name = name
        self.sock = sock
        self.fd = sock.fileno()
        self.mac = mac
        self.ip = ip
        self.rx_frames = 0   # frames from the host, forwarded
        self.tx_frames = 0   # frames to the host
        self.rx_dropped = 0  # frames from the host dropped: bad, spoofed source, queue full
        self.tx_dropped = 0  # frames to the host dropped: its socket buffer was full

    def status(self) -> dict:
        from pystack.wire.ipv4 import ip_to_str

        return {"port": self.name, "mac": _mac_text(self.mac),
                "ip": ip_to_str(self.ip) if self.ip is not None else None,
                "rx_frames": self.rx_frames, "tx_frames": self.tx_frames,
                "rx_dropped": self.rx_dropped, "tx_dropped": self.tx_dropped}

    def __repr__(self) -> str:
        return f"<Port {self.name} {_mac_text(self.mac)} fd={self.fd}>"


class Switch(Wrapper):
    """A device wrapper that is also an Ethernet switch between ``inner``, the stack above
    (whose MAC is ``mac``) and any number of ports (see the module docstring).

    Call :meth:`bind_loop` once the runtime loop exists, so ports are read
    by it; without a loop (tests) call :meth:`read_port` / :meth:`read_ports`.
    """

    def __init__(self, inner: Device, mac: bytes, *, port_batch: int = 64, queue_limit: int = 4096,
                 port_sndbuf: int = PORT_SNDBUF) -> None:
        super().__init__(inner)
        mac = bytes(mac)
        if len(mac) != 6 or mac[0] & 1:
            raise ValueError(f"the switch's own MAC must be a unicast address, got {mac!r}")
        for name, value in (("port_batch", port_batch), ("queue_limit", queue_limit),
                            ("port_sndbuf", port_sndbuf)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        self.mac = mac
        self.port_batch = port_batch
        self.queue_limit = queue_limit
        self.port_sndbuf = port_sndbuf
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._frame_max = inner.mtu + ETHERNET_HEADER_LEN
        self._ports: dict[bytes, Port] = {}    # by MAC
        self._by_fd: dict[int, Port] = {}
        self._up: deque = deque()              # frames from ports for the stack above
        self._down: deque = deque()            # (port, frame) from ports for the device below
        self._down_retry_at: int | None = None
        self._loop = None
        self._next = 1

    # -- ports ----------------------------------------------------------------------------

    @property
    def ports(self) -> list[Port]:
        return list(self._ports.values())

    def port(self, mac: bytes) -> Port | None:
        return self._ports.get(bytes(mac))

    def bind_loop(self, loop) -> None:
        """Have ``loop`` read the ports (now and as they are added); call from its owner
        thread or before it runs."""
        self._loop = loop
        for port in self._ports.values():
            loop.watch(port.fd, self._watcher(port.fd))

    def _watcher(self, fd: int):
        return lambda events: self.read_port(fd)

    def add_port(self, mac: bytes, *, ip: int | None = None) -> socket.socket:
        """Plug a host with ``mac`` in; return the host's end of the link (the caller passes
        it on and closes its copy).  OSError(EADDRINUSE) when the MAC is taken."""
        mac = bytes(mac)
        if len(mac) != 6 or mac[0] & 1 or mac == b"\0" * 6:
            raise OSError(errno.EINVAL, f"{mac.hex(':')} is not a unicast MAC address")
        if mac == self.mac or mac in self._ports:
            raise OSError(errno.EADDRINUSE, f"MAC {_mac_text(mac)} is in use on this link")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            ours.setblocking(False)
            _set_sndbuf(ours, self.port_sndbuf)    # frames toward the host wait here
            _set_sndbuf(theirs, self.port_sndbuf)  # and the host's toward us here
            port = Port(f"port{self._next}", ours, mac, ip)
            if self._loop is not None:
                self._loop.watch(port.fd, self._watcher(port.fd))
        except BaseException:
            ours.close()
            theirs.close()
            raise
        self._next += 1
        self._ports[mac] = port
        self._by_fd[port.fd] = port
        self.counters["ports_attached"] += 1
        log.info("switch: %s attached (mac %s%s)", port.name, _mac_text(mac),
                 "" if ip is None else f", ip {port.status()['ip']}")
        return theirs

    def remove_port(self, port: Port, reason: str = "removed") -> None:
        """Unplug ``port``: stop reading it and close our end (its host sees end-of-file)."""
        if self._ports.get(port.mac) is not port:
            return
        del self._ports[port.mac]
        self._by_fd.pop(port.fd, None)
        if self._loop is not None:
            self._loop.unwatch(port.fd)
        port.sock.close()
        self.counters["ports_removed"] += 1
        log.info("switch: %s (mac %s) %s; rx %d tx %d, dropped rx %d tx %d", port.name,
                 _mac_text(port.mac), reason, port.rx_frames, port.tx_frames, port.rx_dropped, port.tx_dropped)

    def read_ports(self) -> None:
        """Read one batch from every port (what the loop's callbacks do, for use without a loop)."""
        for fd in list(self._by_fd):
            self.read_port(fd)

    def read_port(self, fd: int) -> None:
        """Read up to ``port_batch`` frames from the port on ``fd`` and forward them."""
        port = self._by_fd.get(fd)
        if port is None:
            return
        recv = port.sock.recv
        size = self._frame_max + 1  # one byte more: a longer frame shows as too long, not cut
        for _ in range(self.port_batch):
            try:
                frame = recv(size)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.remove_port(port, f"failed ({exc.strerror or exc})")
                return
            if not frame:
                self.remove_port(port, "closed by its host")
                return
            self._from_port(port, frame)

    def _from_port(self, port: Port, frame: bytes) -> None:
        if not ETHERNET_HEADER_LEN <= len(frame) <= self._frame_max or frame[6:12] != port.mac:
            port.rx_dropped += 1  # runt, too long, or not the port's own source address
            return
        dst = frame[:6]
        if dst == self.mac:
            self._queue(self._up, port, frame)
            return
        other = self._ports.get(dst)
        if other is not None:
            if other is port:
                port.rx_dropped += 1  # to itself: a switch filters it (IEEE 802.1D §7.7)
                return
            port.rx_frames += 1
            self._to_port(other, frame)
            return
        if dst[0] & 1:  # group address: everyone but the sender
            if not self._queue(self._up, port, frame):
                return
            for other in list(self._ports.values()):
                if other is not port:
                    self._to_port(other, frame)
            if len(self._down) < self.queue_limit:
                self._down.append((port, frame))
            else:
                self.counters["down_dropped"] += 1
            return
        self._queue(self._down, port, (port, frame))

    def _queue(self, queue: deque, port: Port, item) -> bool:
        if len(queue) >= self.queue_limit:
            port.rx_dropped += 1
            return False
        queue.append(item)
        port.rx_frames += 1
        return True

    def _to_port(self, port: Port, frame) -> None:
        try:
            port.sock.send(frame, socket.MSG_NOSIGNAL)
        except (BlockingIOError, InterruptedError):
            port.tx_dropped += 1  # its host is not keeping up: a switch drops, never waits
            return
        except OSError as exc:
            if exc.errno in _GONE:
                self.remove_port(port, "closed by its host")
            else:
                port.tx_dropped += 1
                log.warning("switch: sending to %s failed: %s (dropped)", port.name, exc)
            return
        port.tx_frames += 1

    def _to_ports(self, frame) -> None:
        for port in list(self._ports.values()):
            self._to_port(port, frame)

    def _flush_down(self, now: int) -> None:
        """Send the frames ports sent down; keep what the device refused (retried later)."""
        down = self._down
        frames = [f for _, f in down]
        try:
            taken = self.inner.transmit(frames, now)
        except OSError as exc:
            # The lower device failed; the daemon's own transmit will meet the same
            # error and the loop decides what it means.  These frames are lost.
            self.counters["down_dropped"] += len(down)
            down.clear()
            self._down_retry_at = None
            log.warning("switch: sending ports' frames down failed: %s (dropped)", exc)
            return
        self.counters["down_frames"] += taken
        if taken == len(down):
            down.clear()
            self._down_retry_at = None
        else:
            for _ in range(taken):
                down.popleft()
            self._down_retry_at = now + DOWN_RETRY_US

    # -- the device protocol --------------------------------------------------------------

    def receive(self, now: int) -> list:
        frames = self.inner.receive(now)
        if self._down:
            self._flush_down(now)
        ports = self._ports
        if ports and frames:
            out = []
            for frame in frames:
                if len(frame) >= ETHERNET_HEADER_LEN:
                    dst = bytes(frame[:6])
                    port = ports.get(dst)
                    if port is not None:
                        self._to_port(port, frame)
                        continue
                    if dst[0] & 1:
                        self._to_ports(frame)
                out.append(frame)  # ours, a group address, or for nobody: the stack counts it
            frames = out
        if self._up:
            up = self._up
            self.counters["up_frames"] += len(up)
            frames = list(frames)
            frames.extend(up)
            up.clear()
        return frames

    def transmit(self, frames: Sequence, now: int) -> int:
        if self._down:
            self._flush_down(now)
        ports = self._ports
        if not ports:
            return self.inner.transmit(frames, now)
        # In order, so that "the first ``taken`` frames" stays true: frames for
        # ports are always taken; a run of frames going down is offered whole,
        # and if the device takes only part of it we stop there.
        n = len(frames)
        start = 0
        for i in range(n):
            frame = frames[i]
            if len(frame) < ETHERNET_HEADER_LEN:
                continue
            port = ports.get(bytes(frame[:6]))
            if port is None:
                continue
            if i > start:
                taken = self._down_run(frames, start, i, now)
                if taken < i - start:
                    return start + taken
            self._to_port(port, frame)
            start = i + 1
        if start < n:
            return start + self._down_run(frames, start, n, now)
        return n

    def _down_run(self, frames: Sequence, start: int, end: int, now: int) -> int:
        run = frames[start:end] if start or end < len(frames) else frames
        taken = self.inner.transmit(run, now)
        if self._ports:
            for i in range(taken):
                frame = run[i]
                if len(frame) >= ETHERNET_HEADER_LEN and frame[0] & 1:  # group: every port too
                    self._to_ports(frame)
        return taken

    def poll_at(self) -> int | None:
        inner_at = self.inner.poll_at()
        if self._up or (self._down and self._down_retry_at is None):
            return 0  # frames wait to be handed over: due at once
        return earliest(inner_at, self._down_retry_at if self._down else None)

    def close(self) -> None:
        """Unplug every port (their hosts see end-of-file), then close the device below."""
        for port in list(self._ports.values()):
            self.remove_port(port, "closed with the daemon")
        self._up.clear()
        self._down.clear()
        self.inner.close()

    def status(self) -> dict:
        """The daemon's ``status`` section: ports and their counters."""
        return {"mac": _mac_text(self.mac), **self.counters, "queued_up": len(self._up),
                "queued_down": len(self._down), "ports": [p.status() for p in self._ports.values()]}

    def __repr__(self) -> str:
        return f"Switch({self.inner!r}, ports={len(self._ports)})"


# -- the daemon's ``attach`` command --------------------------------------------------------

class Attacher:
    """The control command ``attach {"ip": "A.B.C.D[/N]", "mac": "xx:..."}`` (a
    :class:`~pystack.runtime.control.ControlServer` argument handler).

    Checks the joining host's addresses against the link -- the IP must be a
    host address of the daemon's subnet (RFC 1122 §3.2.1.3: not the subnet's
    all-zeros or all-ones host part, except in a /31 or /32, RFC 3021 §2.2),
    not the daemon's, not one of ``reserved_ips`` (the kernel side of the
    TAP) and not another port's; the MAC (default: 02:50 followed by the IP,
    as the daemon's own) unicast and unused -- then adds a port and answers
    with the link's parameters and the host's end of the link as SCM_RIGHTS.
    Refusals are OSError: EADDRNOTAVAIL (not on this link), EADDRINUSE
    (taken), EINVAL (malformed), which the client raises again.
    """

    def __init__(self, switch: Switch, *, ip: int, prefix_len: int, mtu: int, gateway: int | None = None,
                 reserved_ips=(), reserved_macs=()) -> None:
        self.switch = switch
        self.ip = ip
        self.prefix_len = prefix_len
        self.mtu = mtu
        self.gateway = gateway
        self.reserved_ips = {i for i in reserved_ips if i is not None}
        self.reserved_macs = {bytes(m) for m in reserved_macs if m is not None}

    def __call__(self, arg: str):
        from pystack.runtime.control import Reply
        from pystack.runtime.daemon import default_mac
        from pystack.wire.ethernet import mac_from_str
        from pystack.wire.ipv4 import ip_from_str, ip_to_str

        try:
            req = json.loads(arg) if arg else None
        except ValueError:
            req = None
        if not isinstance(req, dict) or not isinstance(req.get("ip"), str):
            raise OSError(errno.EINVAL, 'attach wants a JSON object like {"ip": "10.77.0.3"}')
        text, slash, prefix = req["ip"].partition("/")
        try:
            ip = ip_from_str(text)
            prefix_len = int(prefix) if slash else self.prefix_len
        except ValueError:
            raise OSError(errno.EINVAL, f"{req['ip']!r} is not an IPv4 address") from None
        mask = (0xFFFFFFFF << (32 - self.prefix_len)) & 0xFFFFFFFF
        net = self.ip & mask
        subnet = f"{ip_to_str(net)}/{self.prefix_len}"
        if prefix_len != self.prefix_len:
            raise OSError(errno.EADDRNOTAVAIL, f"{req['ip']} is not on the link {subnet}")
        hostmask = ~mask & 0xFFFFFFFF
        if ip & mask != net or (self.prefix_len <= 30 and ip & hostmask in (0, hostmask)):
            raise OSError(errno.EADDRNOTAVAIL, f"{text} is not a host address of the link {subnet}")
        if ip == self.ip:
            raise OSError(errno.EADDRINUSE, f"{text} is the daemon's own address")
        if ip in self.reserved_ips:
            raise OSError(errno.EADDRINUSE, f"{text} is the kernel's address on the link")
        for port in self.switch.ports:
            if port.ip == ip:
                raise OSError(errno.EADDRINUSE, f"{text} is in use by {port.name}")
        mac_text = req.get("mac")
        if mac_text is None:
            mac = default_mac(text)
        else:
            try:
                mac = mac_from_str(mac_text)
            except (TypeError, ValueError):
                raise OSError(errno.EINVAL, f"{mac_text!r} is not a MAC address") from None
        if mac in self.reserved_macs:
            raise OSError(errno.EADDRINUSE, f"MAC {_mac_text(mac)} is the kernel's on the link")
        theirs = self.switch.add_port(mac, ip=ip)  # EINVAL / EADDRINUSE for the MAC
        port = self.switch.port(mac)
        info = {"port": port.name if port else None, "ip": text, "prefix_len": self.prefix_len,
                "mac": _mac_text(mac), "mtu": self.mtu,
                "gateway": ip_to_str(self.gateway) if self.gateway is not None else None,
                "daemon_ip": ip_to_str(self.ip), "daemon_mac": _mac_text(self.switch.mac)}
        return Reply(info, [theirs])


# -- the client ---------------------------------------------------------------------------

def attach(control_path: str, *, ip: str, mac=None, timeout: float = 5.0, batch: int = 64):
    """Join the link of the daemon answering on ``control_path`` as host ``ip``.

    ``ip``: "A.B.C.D" or "A.B.C.D/N" (N must be the link's prefix); ``mac``:
    bytes or text, default 02:50 followed by the IP.  Returns
    ``(device, info)``: a :class:`~pystack.phy.unixlink.UnixLinkDevice` (yours
    to close; closing it unplugs the host) and the link's parameters --
    ``ip``, ``prefix_len``, ``mac``, ``mtu``, ``gateway`` (or None),
    ``daemon_ip``, ``daemon_mac``, ``port``.

    Raises OSError(EADDRINUSE / EADDRNOTAVAIL / EINVAL) when the daemon
    refuses the addresses, :class:`~pystack.runtime.control.ControlError`
    when no daemon answers.
    """
    from pystack.phy.unixlink import UnixLinkDevice
    from pystack.runtime.control import ControlError, exchange

    if not isinstance(ip, str):
        raise TypeError(f"ip must be text like '10.77.0.3', not {type(ip).__name__}")
    req = {"ip": ip}
    if mac is not None:
        req["mac"] = _mac_text(mac) if isinstance(mac, (bytes, bytearray, memoryview)) else str(mac)
    answer, fds = exchange(control_path, "attach " + json.dumps(req), timeout, maxfds=1)
    try:
        if not answer.pop("ok"):
            message = str(answer.get("error", "attach refused"))
            code = answer.get("errno")
            if isinstance(code, int) and code > 0:
                raise OSError(code, message)
            raise ControlError(f"the daemon says: {message}")
        if len(fds) != 1 or not isinstance(answer.get("mtu"), int):
            raise ControlError(f"the daemon on {control_path} answered attach without a link")
        sock = socket.socket(fileno=fds.pop())
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    try:
        device = UnixLinkDevice(sock, mtu=answer["mtu"], batch=batch)
    except BaseException:
        sock.close()
        raise
    return device, answer


def join(control_path: str, ip: str, *, mac=None, timeout: float = 5.0, **kw):
    """A :class:`pystack.Stack` on the link of the daemon at ``control_path``, as host ``ip``.

    :func:`attach`, then ``Stack(ip=..., device=<the link>, mac=..., gateway=...)``
    with the link's prefix, MAC, gateway and MTU; ``kw`` goes to the Stack
    (``tcp``, ``batch``...).  The Stack owns the link: closing it unplugs the
    host.  Errors as :func:`attach`.
    """
    from pystack.runtime.stack import Stack

    device, info = attach(control_path, ip=ip, mac=mac, timeout=timeout)
    try:
        return Stack(ip=f"{info['ip']}/{info['prefix_len']}", device=device, mac=bytes.fromhex(
            info["mac"].replace(":", "")), gateway=info["gateway"], **kw)
    except BaseException:
        device.close()
        raise


__all__ = ["Attacher", "Port", "Switch", "attach", "join"]
