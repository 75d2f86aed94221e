"""Network namespaces that pystack creates, and always removes.

Everything pystack runs against the kernel (tests, benchmarks, the demo)
lives in a namespace made here, so no address, device or packet ever
touches the root namespace.  Namespaces are created and entered through
pyroute2 (``pyroute2.netns``), never by shelling out to ``ip``.

A :class:`NetNamespace` is removed when its ``with`` block ends, however it
ends; as a last resort an ``atexit`` hook removes any that are still open
(for example after an uncaught KeyboardInterrupt outside the block).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import secrets
import threading
from collections.abc import Iterator

from pyroute2 import IPRoute, netns

log = logging.getLogger("pystack.runtime")
_live: set[str] = set()
_live_lock = threading.Lock()


class NetNamespace:
    """A named network namespace created on ``__enter__`` and removed on ``__exit__``.

    ``name`` defaults to ``pystack-<pid>-<random>`` so concurrent runs never
    collide and a leftover can be traced to the process that made it.
    """

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"pystack-{os.getpid()}-{secrets.token_hex(3)}"
        self._created = False

    def __enter__(self) -> "NetNamespace":
        netns.create(self.name)
        self._created = True
        with _live_lock:
            _live.add(self.name)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if not self._created:
            return
        self._created = False
        with _live_lock:
            _live.discard(self.name)
        try:
            netns.remove(self.name)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not remove network namespace %s: %s", self.name, exc)

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Run the block with the calling thread inside this namespace.

        File descriptors opened in the block (sockets, a TAP fd) stay bound to
        the namespace after the thread leaves it.
        """
        netns.pushns(self.name)
        try:
            yield
        finally:
            netns.popns()

    def iproute(self) -> IPRoute:
        """A pyroute2 netlink handle bound to this namespace (close it, or use ``with``)."""
        return IPRoute(netns=self.name)


@atexit.register
def _remove_leftovers() -> None:
    with _live_lock:
        names = list(_live)
        _live.clear()
    for name in names:
        with contextlib.suppress(Exception):
            netns.remove(name)
