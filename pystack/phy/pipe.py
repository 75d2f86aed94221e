"""An in-memory Ethernet cable: two endpoint devices joined back to back.

Tests and simulations join two stacks with a :class:`Pipe` and drive both
with a manual clock.  A frame transmitted on one endpoint at ``now`` is
received on the other at ``now + latency``, in the order it was sent.
Frames are copied on transmit, so the sender may reuse its buffers at once.
Faults (loss, reordering, rate limits) are not the pipe's business: wrap an
endpoint in a :class:`~pystack.phy.fault_injector.FaultInjector`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from pystack.phy.device import ETHERNET_HEADER_LEN, earliest


class PipeEnd:
    """One end of a :class:`Pipe`; implements the device protocol."""

    def __init__(self, pipe: "Pipe", name: str) -> None:
        self._pipe = pipe
        self.name = name
        self.peer: PipeEnd
        # (due, frame) in send order.  Due times are non-decreasing as long as
        # the sender's ``now`` never goes back; receive() keeps send order
        # regardless, releasing from the head only.
        self._inbox: deque[tuple[int, bytes]] = deque()
        self.closed = False

    @property
    def mtu(self) -> int:
        return self._pipe.mtu

    @property
    def pending(self) -> int:
        """Frames sent toward this end that it has not received yet."""
        return len(self._inbox)

    def receive(self, now: int) -> list:
        if self.closed:
            raise ValueError(f"receive on closed pipe end {self.name}")
        inbox = self._inbox
        out = []
        while inbox and inbox[0][0] <= now:
            out.append(inbox.popleft()[1])
        return out

    def transmit(self, frames: Sequence, now: int) -> int:
        """Queue ``frames`` for the peer; takes them all unless ``capacity`` is reached.

        A frame longer than ``mtu + 14`` raises ValueError: a stack that
        sends one has a bug, and a real link would drop it silently.
        """
        if self.closed:
            raise ValueError(f"transmit on closed pipe end {self.name}")
        limit = self._pipe.mtu + ETHERNET_HEADER_LEN
        peer = self.peer
        if peer.closed:
            return len(frames)
        inbox = peer._inbox
        room = len(frames) if self._pipe.capacity is None else max(0, self._pipe.capacity - len(inbox))
        taken = min(room, len(frames))
        for i in range(taken):
            if len(frames[i]) > limit:
                raise ValueError(
                    f"frame {i} of {len(frames[i])} bytes exceeds the pipe's {limit}-byte limit "
                    f"(mtu {self._pipe.mtu} + {ETHERNET_HEADER_LEN}); nothing was sent")
        due = now + self._pipe.latency
        for i in range(taken):
            inbox.append((due, bytes(frames[i])))
        return taken

    def poll_at(self) -> int | None:
        return self._inbox[0][0] if self._inbox else None

    def close(self) -> None:
        """Close this end: frames in flight to it are discarded; frames sent to it later vanish."""
        self.closed = True
        self._inbox.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<PipeEnd {self.name} pending={len(self._inbox)}{' closed' if self.closed else ''}>"


class Pipe:
    """Two devices, ``a`` and ``b``, joined back to back with a fixed ``latency`` in µs.

    ``capacity`` (frames in flight per direction, None for unbounded) lets a
    test exercise a sender's handling of a device that takes only part of a
    batch.
    """

    def __init__(self, mtu: int = 1500, latency: int = 0, capacity: int | None = None) -> None:
        if not isinstance(mtu, int) or mtu < 68:
            # RFC 791: every internet module must forward a 68-octet datagram.
            raise ValueError(f"mtu must be an int >= 68, got {mtu!r}")
        if not isinstance(latency, int) or latency < 0:
            raise ValueError(f"latency must be an int >= 0 (microseconds), got {latency!r}")
        if capacity is not None and (not isinstance(capacity, int) or capacity < 1):
            raise ValueError(f"capacity must be None or an int >= 1, got {capacity!r}")
        self.mtu = mtu
        self.latency = latency
        self.capacity = capacity
        self.a = PipeEnd(self, "a")
        self.b = PipeEnd(self, "b")
        self.a.peer = self.b
        self.b.peer = self.a

    def poll_at(self) -> int | None:
        """The earlier of the two ends' deadlines."""
        return earliest(self.a.poll_at(), self.b.poll_at())

    def close(self) -> None:
        self.a.close()
        self.b.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Pipe(mtu={self.mtu}, latency={self.latency}, capacity={self.capacity})"
