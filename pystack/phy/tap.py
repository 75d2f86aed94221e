"""Opening a Linux TAP device (``IFF_TAP | IFF_NO_PI``, non-blocking).

Only the ioctl that binds a file descriptor to a TAP interface lives here;
addresses, MTU and link state are set through netlink (pyroute2) by the
runtime.  The device is created in the network namespace of the calling
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


def open_tap(name: str) -> int:
    """Open (creating if needed) TAP device ``name`` and return its non-blocking fd.

    Raises PermissionError without CAP_NET_ADMIN, FileNotFoundError without
    /dev/net/tun, ValueError for a name the kernel cannot hold.
    """
    raw = name.encode()
    if not raw or len(raw) >= IFNAMSIZ or b"/" in raw or b" " in raw:
        raise ValueError(f"invalid interface name {name!r} (1 to {IFNAMSIZ - 1} bytes, no '/' or space)")
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", raw, IFF_TAP | IFF_NO_PI))
    except BaseException:
        os.close(fd)
        raise
    return fd
