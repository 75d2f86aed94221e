"""A link to a daemon's switch: the device of a stack that joined a running ``pystack up``.

Owns the client end of one switch port (:mod:`pystack.runtime.switch`): an
``AF_UNIX``/``SOCK_SEQPACKET`` socket whose every message is one whole
Ethernet frame (unix(7): SOCK_SEQPACKET keeps message boundaries and is
connection-oriented, so the daemon going away shows as end-of-file).  The
socket arrives over the daemon's control socket (SCM_RIGHTS); this module
only moves frames over it, in the device protocol of :mod:`pystack.phy.device`.

* ``receive`` reads every message waiting, up to ``batch``, into one
  preallocated buffer (``batch`` slots of ``mtu + 14`` rounded up, plus one
  spare byte that tells a frame longer than the link allows -- dropped and
  counted in ``truncated`` -- from a maximal one) and returns views of it,
  valid until the next ``receive`` (the device protocol's contract).
* ``transmit`` sends frame by frame until the socket buffer is full
  (EAGAIN) and returns how many it sent; the runtime keeps the rest and
  waits for the fd to be writable.  Unlike the switch's side, which drops
  what a full port cannot take (a switch does not wait for one host), the
  host end waits, as a NIC's full transmit ring does.
* The daemon closing its end (end-of-file, ECONNRESET, EPIPE) is the link
  going away: ``receive``/``transmit`` raise OSError(ENODEV), which stops the
  runtime loop (it treats ENODEV as "the device is gone").  An empty
  message reads as end-of-file too; the switch never sends one.
* ``poll_at`` is None: readiness comes from ``fileno()``.

No clock and no thread here; ``now`` is accepted for the protocol and unused.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence

from pystack.phy.device import ETHERNET_HEADER_LEN

_GONE = (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN)


def _slot_size(mtu: int) -> int:
    # mtu + 14, one spare byte to detect a longer frame, rounded up to 64 bytes.
    return (mtu + ETHERNET_HEADER_LEN + 1 + 63) // 64 * 64


class UnixLinkDevice:
    """A :class:`~pystack.phy.device.Device` over a connected SOCK_SEQPACKET socket.

    ``sock``: a ``socket.socket`` or a file descriptor (an int, owned from
    now on).  ``mtu`` is the link's (the daemon's answer says it); ``batch``
    bounds the frames one ``receive`` returns.
    """

    def __init__(self, sock, *, mtu: int = 1500, batch: int = 64) -> None:
        if not isinstance(mtu, int) or isinstance(mtu, bool) or not 68 <= mtu <= 65535:
            # RFC 791: 68 is the least an IPv4 link may carry, 65535 the largest datagram.
            raise ValueError(f"mtu must be an int in 68..65535, got {mtu!r}")
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise ValueError(f"batch must be an int >= 1, got {batch!r}")
        if isinstance(sock, int):
            sock = socket.socket(fileno=sock)
        if not isinstance(sock, socket.socket):
            raise TypeError(f"sock must be a socket or a file descriptor, not {type(sock).__name__}")
        if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_SEQPACKET:
            sock.close()
            raise ValueError("a UnixLinkDevice needs an AF_UNIX SOCK_SEQPACKET socket")
        sock.setblocking(False)
        self._sock = sock
        self.mtu = mtu
        self.batch = batch
        self.truncated = 0
        self.rx_frames = 0
        self.tx_frames = 0
        self._slot = _slot_size(mtu)
        self._buf = bytearray(self._slot * batch)
        self._view = memoryview(self._buf)
        self._max_frame = mtu + ETHERNET_HEADER_LEN

    def fileno(self) -> int:
        fd = self._sock.fileno()
        if fd < 0:
            raise ValueError("UnixLinkDevice is closed")
        return fd

    @property
    def closed(self) -> bool:
        return self._sock.fileno() < 0

    def receive(self, now: int) -> list:
        recv_into = self._sock.recv_into
        view, slot, limit = self._view, self._slot, self._max_frame
        frames = []
        off = 0
        for _ in range(self.batch):
            try:
                n = recv_into(view[off:off + slot], slot)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in _GONE:
                    raise OSError(errno.ENODEV, "the daemon closed the link") from exc
                raise
            if n == 0:
                if frames:
                    break  # hand these over first; the next call reports the end
                raise OSError(errno.ENODEV, "the daemon closed the link")
            if n > limit:
                self.truncated += 1  # longer than the link allows: cannot be whole
                continue
            frames.append(view[off:off + n])
            off += slot
        self.rx_frames += len(frames)
        return frames

    def transmit(self, frames: Sequence, now: int) -> int:
        send = self._sock.send
        taken = 0
        for frame in frames:
            try:
                send(frame, socket.MSG_NOSIGNAL)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in _GONE:
                    raise OSError(errno.ENODEV, "the daemon closed the link") from exc
                raise
            taken += 1
        self.tx_frames += taken
        return taken

    def poll_at(self) -> None:
        return None

    def close(self) -> None:
        """Close the socket (the daemon removes the port when it sees the end); idempotent."""
        self._sock.close()

    def __enter__(self) -> "UnixLinkDevice":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"UnixLinkDevice(fd={self._sock.fileno()}, mtu={self.mtu}, batch={self.batch})"


__all__ = ["UnixLinkDevice"]
