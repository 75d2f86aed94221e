"""The device protocol every frame mover implements, and the base of stackable wrappers.

A *device* moves whole Ethernet frames.  It never reads a clock: every call
that may depend on time takes ``now``, integer microseconds on the caller's
clock, and a device that holds frames for later says when through
:meth:`Device.poll_at`.  Wrappers (fault injector, pcap writer, tracer)
implement the same protocol around an inner device, so they nest::

    FaultInjector(Tracer(PcapWriter(TapDevice("pst0"))), rx, tx, seed=7)

Frame ownership, the contract that lets the TAP path stay zero-copy:

* ``receive`` may return memoryviews into the device's own buffer; they are
  valid only until the next ``receive`` on the same device.  A consumer that
  keeps a frame longer copies it.
* ``transmit`` may be handed views into the caller's buffers, which the
  caller reuses once the call returns; a device that keeps a frame past the
  call (a queue, a delay line) copies it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

#: Ethernet II header: destination, source, EtherType (IEEE 802.3 clause 3.2).
#: A device's ``mtu`` is the largest IP packet; its largest frame is ``mtu + ETHERNET_HEADER_LEN``.
ETHERNET_HEADER_LEN = 14


@runtime_checkable
class Device(Protocol):
    """What the interface layer needs from anything that moves frames."""

    mtu: int

    def receive(self, now: int) -> list:
        """The frames that have arrived by ``now`` (possibly none), oldest first."""
        ...

    def transmit(self, frames: Sequence, now: int) -> int:
        """Send ``frames`` in order; return how many were taken (the rest stay with the caller)."""
        ...

    def poll_at(self) -> int | None:
        """The earliest ``now`` at which ``receive`` may yield a frame with no new input, or None."""
        ...

    def close(self) -> None:
        """Release the device; calling it twice is harmless."""
        ...


class Wrapper:
    """A device that forwards everything to ``inner``; subclasses override what they change.

    ``mtu``, ``poll_at`` and ``close`` reach the inner device, and so does
    ``fileno`` when the inner device has one (``hasattr(wrapper, "fileno")``
    is true exactly when the innermost device is backed by a file
    descriptor), so a runtime can wait on the fd through any stack of
    wrappers.
    """

    def __init__(self, inner: Device) -> None:
        self.inner = inner

    @property
    def mtu(self) -> int:
        return self.inner.mtu

    def receive(self, now: int) -> list:
        return self.inner.receive(now)

    def transmit(self, frames: Sequence, now: int) -> int:
        return self.inner.transmit(frames, now)

    def poll_at(self) -> int | None:
        return self.inner.poll_at()

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str):
        # Only called for attributes not found normally; forwarding just
        # ``fileno`` keeps a typo from silently reaching the inner device.
        if name == "fileno":
            fileno = getattr(self.__dict__.get("inner"), "fileno", None)
            if fileno is not None:
                return fileno
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"


def earliest(*deadlines: int | None) -> int | None:
    """The smallest of ``deadlines`` that is not None, or None when all are."""
    best = None
    for t in deadlines:
        if t is not None and (best is None or t < best):
            best = t
    return best
