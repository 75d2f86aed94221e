"""Linux TAP devices (``IFF_TAP | IFF_NO_PI``, non-blocking): opening one, and using it as a device.

:func:`open_tap` is the ioctl that binds a file descriptor to a TAP
interface; :class:`TapDevice` wraps that fd in the device protocol
(:mod:`pystack.phy.device`), reading and writing frames in batches through
:mod:`pystack.phy.tapio`.  Addresses, MTU and link state are set through
netlink (pyroute2) by the runtime.  The device is created in the network namespace of the calling
thread (see :meth:`pystack.runtime.netns.NetNamespace.entered`).
"""

from __future__ import annotations

import fcntl
import os
import struct

# linux/if_tun.h
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFNAMSIZ = 16


def check_ifname(name: str) -> str:
    """``name`` if the kernel accepts it as a fixed interface name, else ValueError.

    The kernel's rule (dev_valid_name() in net/core/dev.c): 1 to IFNAMSIZ-1
    bytes, not "." or "..", no '/', ':' or whitespace.  We also refuse '%',
    which the kernel would treat as a template ("tap%d" becomes "tap0"),
    leaving us holding a name that matches no device.
    """
    raw = name.encode()
    if (not raw or len(raw) >= IFNAMSIZ or name in (".", "..")
            or any(c in "/:%" or c.isspace() for c in name)):
        raise ValueError(f"invalid interface name {name!r} (1 to {IFNAMSIZ - 1} bytes, "
                         "not '.' or '..', no '/', ':', '%' or whitespace)")
    return name


def open_tap(name: str) -> int:
    """Open (creating if needed) TAP device ``name`` and return its non-blocking fd.

    Raises PermissionError without CAP_NET_ADMIN, FileNotFoundError without
    /dev/net/tun, ValueError for a name the kernel cannot hold.
    """
    raw = check_ifname(name).encode()
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", raw, IFF_TAP | IFF_NO_PI))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _frame_size(mtu: int) -> int:
    # The largest frame is mtu + 14; one spare byte lets FrameBatch tell a
    # frame that filled its slot (truncated, so longer than we allow) from a
    # maximal one.  Slots are rounded up to 64 bytes to keep them cache-line aligned.
    return (mtu + 14 + 1 + 63) // 64 * 64


class TapDevice:
    """A TAP interface as a :class:`~pystack.phy.device.Device`, moving frames in batches.

    Opens (creating if needed) TAP ``name`` in the calling thread's network
    namespace.  ``mtu`` sizes the receive buffer; the interface's own MTU,
    addresses and link state are the runtime's to set, through netlink.

    ``receive`` makes one batch read: every frame waiting, up to ``batch``.
    A full batch means more may be waiting, so the runtime calls ``receive``
    again while a full batch comes back (and otherwise waits for the fd to
    become readable).  A frame longer than the buffer slot (``mtu + 14``
    rounded up) cannot be whole; it is dropped and counted in ``truncated``.
    ``transmit`` writes frames until the kernel queue is full and returns
    how many it wrote.  ``poll_at`` is always None: a TAP holds nothing for
    later; readiness comes from ``fileno()``.
    """

    def __init__(self, name: str, mtu: int = 1500, batch: int = 64) -> None:
        from pystack.phy.tapio import FrameBatch, write_batch

        if not isinstance(mtu, int) or not 68 <= mtu <= 65535:
            # RFC 791: 68 is the least an IPv4 link may carry, 65535 the largest datagram.
            raise ValueError(f"mtu must be an int in 68..65535, got {mtu!r}")
        if not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be an int >= 1, got {batch!r}")
        self.name = name
        self.mtu = mtu
        self.batch = batch
        self.truncated = 0
        self._write_batch = write_batch
        self._rx = FrameBatch(batch, _frame_size(mtu))
        self._fd = open_tap(name)

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError(f"TapDevice {self.name} is closed")
        return self._fd

    def receive(self, now: int) -> list:
        rx = self._rx
        before = rx.truncated
        if not rx.read(self.fileno()):
            return []
        frames = rx.frames()
        if rx.truncated != before:
            limit = rx.frame_size
            kept = [f for f in frames if len(f) < limit]
            self.truncated += len(frames) - len(kept)
            frames = kept
        return frames

    def transmit(self, frames, now: int) -> int:
        if not frames:
            return 0
        return self._write_batch(self.fileno(), frames)

    def poll_at(self) -> None:
        return None

    def close(self) -> None:
        """Close the fd; the kernel removes the (non-persistent) interface with it."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> "TapDevice":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TapDevice({self.name!r}, mtu={self.mtu}, batch={self.batch})"
