"""Named counters: what the stack did and, above all, every reason it dropped something.

Owns :class:`Stats`, one flat table of ``"<layer>.<what>"`` counters (layers:
``ethernet``, ``arp``, ``ipv4``, ``reasm``, ``icmp``, ``udp``, ``tcp``,
``iface``).  ``pystack status`` prints them grouped by layer, the way
``netstat -s`` does, zero counters included: every reason in
:data:`pystack.errors.REASONS` is registered at 0 from the start, and each
part of the stack registers its own names (``incr(name, 0)``) when it is
built, so a counter that never moved still shows.

Parts that keep their own counter dicts (the neighbour cache, the fragment
reassembler: ``counters`` attributes, kept so those classes stand alone) are
*included* rather than copied: :meth:`Stats.include` links the dict, and
every read sums it in live.  Nothing is copied on the hot path and nothing
can drift out of step.

Pure data: no clock, no I/O, no locks (one thread, the runtime loop, owns
the stack; :meth:`snapshot` hands other threads a copy).
"""

from __future__ import annotations

from collections.abc import Mapping

from pystack.errors import REASONS


class Stats:
    """A table of named non-negative counters (see the module docstring)."""

    __slots__ = ("_counts", "_included")

    def __init__(self) -> None:
        self._counts: dict[str, int] = dict.fromkeys(REASONS, 0)
        self._included: list[Mapping[str, int]] = []

    def incr(self, name: str, n: int = 1) -> None:
        """Add ``n`` (default 1; 0 registers the name) to counter ``name``."""
        counts = self._counts
        try:
            counts[name] += n
        except KeyError:
            if not isinstance(name, str) or "." not in name:
                raise ValueError(f"counter names are '<layer>.<what>', got {name!r}") from None
            counts[name] = n

    def include(self, counters: Mapping[str, int]) -> None:
        """Read ``counters`` (a dict another part keeps up to date) as part of this table.

        A name present in several places reads as the sum.  The dict is kept
        by reference: later changes show at once.
        """
        if not isinstance(counters, Mapping):
            raise TypeError(f"include() takes a mapping of counters, not {type(counters).__name__}")
        if not any(counters is c for c in self._included):
            self._included.append(counters)

    def __getitem__(self, name: str) -> int:
        """The counter's value; 0 for a name never incremented."""
        value = self._counts.get(name, 0)
        for counters in self._included:
            value += counters.get(name, 0)
        return value

    def __contains__(self, name: object) -> bool:
        return name in self._counts or any(name in c for c in self._included)

    def snapshot(self) -> dict[str, int]:
        """A copy of every counter, sorted by name."""
        merged = dict(self._counts)
        for counters in self._included:
            for name, value in counters.items():
                merged[name] = merged.get(name, 0) + value
        return dict(sorted(merged.items()))

    def by_layer(self) -> dict[str, dict[str, int]]:
        """The snapshot grouped by layer: ``"ipv4.rx"`` -> ``{"ipv4": {"rx": n}}``."""
        out: dict[str, dict[str, int]] = {}
        for name, value in self.snapshot().items():
            layer, _, what = name.partition(".")
            out.setdefault(layer, {})[what] = value
        return out

    def __repr__(self) -> str:
        moved = {k: v for k, v in self.snapshot().items() if v}
        return f"Stats({moved!r})"
