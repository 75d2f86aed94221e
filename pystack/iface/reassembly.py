"""IPv4 fragment reassembly (RFC 791 §3.2; RFC 815; RFC 1122 §3.3.2).

Owns the datagrams being reassembled: their fragments' bytes, fragment zero's
header, the reassembly timers, and the limits that keep all of it bounded.
It takes plain values (the caller has already parsed and checked the IP
header) and returns plain bytes; it sends nothing and reads no clock.

Theory of operation
-------------------
A datagram is identified by (source, destination, protocol, identification)
(RFC 791 §3.2, "Reassembly").  Each one holds its data as a sorted list of
*disjoint* pieces ``[start, end)`` of the IP payload.  This is the dual of
RFC 815's hole descriptors: RFC 815 lists what is missing, we list what is
present.  A fragment ``[s, e)`` is placed with a binary search for the first
piece ending after ``s``; walking right from there it meets every piece it
overlaps, compares the overlapping bytes, and collects the gaps between them.
Only the gaps are stored (copied), so pieces stay disjoint and

    received == sum of piece lengths == bytes of [0, total) present,

which makes the completion test ``received == total`` exact once the last
fragment (MF=0) has told us ``total``.  On completion the pieces are joined
once: total work is linear in the datagram size whatever the arrival order
(in order, reversed, shuffled, duplicated), and pieces are never merged or
moved, so no arrival order costs quadratic copying.

Overlap policy (deliberate deviation from RFC 791's "last one wins"):
overlapping fragments whose overlapping bytes are *identical* are accepted
(a retransmitted or re-fragmented duplicate; RFC 8200 §4.5 likewise allows
exact duplicates to be dropped while keeping the datagram).  An overlap whose
bytes *differ* discards the whole datagram ("reasm.overlap"): a receiver that
picks either copy can be made to see a different TCP header from the one a
filter saw (RFC 1858 §4, the overlapping-fragment attack), and RFC 5722 §4
(for IPv6) requires the entire datagram, "including those [fragments] not yet
received", to be silently discarded.  The same treatment applies to a datagram
found inconsistent ("reasm.inconsistent") or too big ("reasm.too_big").

A discarded datagram therefore leaves a *tombstone*: its data is freed at
once, but its key stays until its timer ends so its remaining fragments are
dropped ("reasm.after_discard") instead of starting a new datagram that could
only time out.  Tombstones expire silently (no ICMP) and count toward
``max_datagrams``.

Timer: started by the first fragment to arrive and never extended; this
follows RFC 1122 §3.3.2 ("SHOULD be a fixed value, not set from the remaining
TTL"), not RFC 791's ``TIMER <- MAX(TIMER, TTL)``.  The default of 30 s
(Linux's ``ipfrag_time``) is shorter than the 60-120 s RFC 1122 §3.3.2
recommends, deliberately: a shorter hold frees memory sooner and narrows the
window in which a reused identification (RFC 4963 §2) is mis-assembled.  When
the timer runs out the datagram is discarded and, if fragment zero had
arrived, its header plus the first 8 data bytes are handed back so the
interface can send ICMP Time Exceeded code 1 (RFC 792; RFC 1122 §3.3.2).

Limits and eviction.  ``max_datagram`` bounds the reassembled datagram,
fragment zero's header included (RFC 791 §3.1: Total Length is 16 bits; a
larger one is the "ping of death"); RFC 1122 §3.3.2's EMTU_R is the same
kind of number.  ``memory`` charges every stored piece its length plus
:data:`PIECE_COST` (an estimate of the Python objects that hold it), and
fragment zero's header its length, so a flood of 8-byte fragments cannot hold
many times ``memory_limit`` in real memory.  When a fragment would take the
total over ``memory_limit``, or a new datagram would exceed ``max_datagrams``,
the *oldest* other datagrams are evicted ("reasm.evicted") until it fits;
if it still cannot fit (its own datagram alone is over the limit), its
datagram is evicted too.  Evicting the oldest rather than refusing the newest
means a sender that fills the table with datagrams that never complete cannot
block all reassembly for a whole timeout: the oldest datagram is the one most
likely to have lost a fragment, and a datagram whose fragments arrive close
together still completes.  Evicted datagrams leave no tombstone and get no
ICMP (RFC 1122 §3.3.2 asks for one only on timeout).

``now`` must never decrease.  Because every timer has the same length,
creation order is deadline order: the dict of datagrams, kept in insertion
order, is both the expiry queue and the eviction queue.  :meth:`add` also
expires what is due, so a datagram past its deadline never completes nor
counts against the limits; the ICMP quotes that produces wait for the next
:meth:`expire`, and :meth:`poll_at` reports them as already due.
"""

from __future__ import annotations

from bisect import bisect_right

from pystack.time import advance

#: Memory charged per stored piece on top of its bytes: a ``bytes`` object
#: header (33 B), two ints (28 B each) and three list slots (8 B each).
PIECE_COST = 128

#: Bytes of original data quoted after the header in ICMP errors (RFC 792).
QUOTE_DATA = 8

#: Largest fragment offset in bytes: a 13-bit field in 8-octet units (RFC 791 §3.1).
MAX_OFFSET = 0x1FFF * 8

COUNTERS = (
    "reasm.ok",  # datagrams completed
    "reasm.timeout",  # datagrams whose timer ran out (RFC 1122 §3.3.2)
    "reasm.duplicate",  # fragments that brought no new byte
    "reasm.overlap",  # datagrams discarded: overlapping bytes differ (RFC 5722 §4)
    "reasm.inconsistent",  # datagrams discarded: last fragments disagree on the length
    "reasm.too_big",  # fragments/datagrams past max_datagram (RFC 791 §3.1 Total Length)
    "reasm.bad_length",  # fragments: MF set and length not a multiple of 8, or empty
    "reasm.evicted",  # datagrams evicted for memory_limit / max_datagrams
    "reasm.after_discard",  # fragments of a datagram already discarded (RFC 5722 §4)
    "reasm.quote_dropped",  # ICMP quotes not collected by expire() in time
)


class _Datagram:
    """One datagram under reassembly, or a tombstone (``dead``).

    Invariants: ``starts``/``ends``/``pieces`` are parallel lists sorted by
    start, pieces are non-empty and disjoint (``ends[i] <= starts[i+1]``), so
    ``ends`` is sorted too; ``received == sum(len(p) for p in pieces)``;
    ``max_end == ends[-1]`` (0 when empty); ``total`` is None or
    ``max_end <= total``; ``charge`` is what this datagram adds to
    ``FragmentReassembler.memory``.  A dead datagram holds no data.
    """

    __slots__ = ("deadline", "starts", "ends", "pieces", "received", "total", "header", "charge", "dead")

    def __init__(self, deadline: int) -> None:
        self.deadline = deadline
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.pieces: list[bytes] = []
        self.received = 0
        self.total: int | None = None
        self.header: bytes | None = None
        self.charge = 0
        self.dead = False

    @property
    def max_end(self) -> int:
        return self.ends[-1] if self.ends else 0

    def quote(self) -> bytes:
        """Fragment zero's header + the first 8 data bytes (needs ``header``)."""
        out = [self.header]
        need = QUOTE_DATA
        for start, piece in zip(self.starts, self.pieces):
            if need == 0 or start != QUOTE_DATA - need:
                break
            out.append(piece[:need])
            need -= len(out[-1])
        return b"".join(out)


_OVERLAP = object()


def _gaps(dg: _Datagram, start: int, data: memoryview):
    """The parts of ``[start, start+len(data))`` no piece covers, as (start, end).

    Returns :data:`_OVERLAP` when a byte the fragment shares with a stored
    piece differs from it.
    """
    end = start + len(data)
    starts, ends, pieces = dg.starts, dg.ends, dg.pieces
    i = bisect_right(ends, start)  # first piece ending after `start`
    gaps = []
    pos = start
    while i < len(starts) and starts[i] < end:
        p_start, p_end = starts[i], ends[i]
        if p_start > pos:
            gaps.append((pos, p_start))
        lo, hi = max(p_start, start), min(p_end, end)
        if data[lo - start:hi - start] != pieces[i][lo - p_start:hi - p_start]:
            return _OVERLAP
        pos = hi
        i += 1
    if pos < end:
        gaps.append((pos, end))
    return gaps


def _check_int(name: str, value, lo: int, hi: int | None = None) -> int:
    if type(value) is not int:
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < lo or (hi is not None and value > hi):
        bound = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


class FragmentReassembler:
    """Reassembles IPv4 fragments into whole IP payloads (see the module docstring)."""

    def __init__(self, timeout: int = 30_000_000, max_datagram: int = 65535,
                 memory_limit: int = 4 << 20, max_datagrams: int = 64) -> None:
        self.timeout = _check_int("timeout", timeout, 1)
        # The largest reassembled datagram, header included: RFC 791 §3.1's
        # 16-bit Total Length, or a host's EMTU_R (RFC 1122 §3.3.2).
        self.max_datagram = _check_int("max_datagram", max_datagram, 28, 65535)
        self.memory_limit = _check_int("memory_limit", memory_limit, 1)
        self.max_datagrams = _check_int("max_datagrams", max_datagrams, 1)
        # Insertion order == creation order == deadline order (module docstring).
        self._datagrams: dict[tuple[int, int, int, int], _Datagram] = {}
        self._tombstones = 0  # how many values of _datagrams are dead
        self._memory = 0  # == sum(dg.charge for dg in _datagrams.values())
        # Quotes of datagrams that timed out inside add(), kept for expire():
        # (deadline, quote), oldest first, at most max_datagrams of them.
        self._quotes: list[tuple[int, bytes]] = []
        self._now: int | None = None
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)

    # -- state ----------------------------------------------------------------

    @property
    def memory(self) -> int:
        """Bytes charged: held data + PIECE_COST per piece + kept headers."""
        return self._memory

    @property
    def pending(self) -> int:
        """Datagrams in progress (tombstones not included)."""
        return len(self._datagrams) - self._tombstones

    def poll_at(self) -> int | None:
        """The next instant :meth:`expire` has work, or None."""
        if self._quotes:
            return self._quotes[0][0]
        for dg in self._datagrams.values():
            return dg.deadline
        return None

    # -- time -----------------------------------------------------------------

    def _advance(self, now) -> None:
        self._now = advance(self._now, now)
        datagrams = self._datagrams
        while datagrams:
            key = next(iter(datagrams))
            dg = datagrams[key]
            if dg.deadline > now:
                break
            del datagrams[key]
            if dg.dead:
                self._tombstones -= 1
                continue
            self._memory -= dg.charge
            self.counters["reasm.timeout"] += 1
            if dg.header is not None:  # RFC 1122 §3.3.2: only if fragment zero arrived
                if len(self._quotes) >= self.max_datagrams:
                    del self._quotes[0]
                    self.counters["reasm.quote_dropped"] += 1
                self._quotes.append((dg.deadline, dg.quote()))

    def expire(self, now: int) -> list[bytes]:
        """Drop datagrams whose timer ran out; return the ICMP quotes.

        Each quote is fragment zero's IP header + its first 8 data bytes, one
        per expired datagram whose fragment zero had arrived, for an ICMP Time
        Exceeded, code 1 "fragment reassembly time exceeded" (RFC 792; RFC 1122
        §3.3.2).
        """
        self._advance(now)
        quotes = [q for _, q in self._quotes]
        self._quotes.clear()
        return quotes

    # -- removal ----------------------------------------------------------------

    def _remove(self, key) -> None:
        dg = self._datagrams.pop(key)
        if dg.dead:
            self._tombstones -= 1
        self._memory -= dg.charge

    def _discard(self, dg: _Datagram, reason: str) -> None:
        """Free ``dg``'s data and keep its key as a tombstone (RFC 5722 §4)."""
        self.counters[reason] += 1
        self._memory -= dg.charge
        dg.starts, dg.ends, dg.pieces = [], [], []
        dg.header = None
        dg.received = dg.charge = 0
        dg.dead = True
        self._tombstones += 1

    def _evict_oldest(self, spare, live_only: bool) -> None:
        """Remove the oldest datagram other than ``spare`` (a live one if ``live_only``)."""
        for victim, dg in self._datagrams.items():
            if victim != spare and not (live_only and dg.dead):
                break
        else:
            raise RuntimeError("nothing to evict")  # unreachable: callers checked there is something
        self._remove(victim)
        if not dg.dead:  # a tombstone holds nothing: forgetting it early is no drop
            self.counters["reasm.evicted"] += 1

    # -- input ------------------------------------------------------------------

    def add(self, now: int, src: int, dst: int, proto: int, ident: int, frag_offset: int,
            more_fragments: bool, payload, header) -> bytes | None:
        """Add one fragment; return the whole IP payload once it is complete, else None.

        As :meth:`add_with_header`, without fragment zero's header.
        """
        done = self.add_with_header(now, src, dst, proto, ident, frag_offset, more_fragments,
                                    payload, header)
        return None if done is None else done[1]

    def add_with_header(self, now: int, src: int, dst: int, proto: int, ident: int, frag_offset: int,
                        more_fragments: bool, payload, header) -> tuple[bytes, bytes] | None:
        """Add one fragment; once the datagram is complete return ``(header, payload)``, else None.

        ``header`` is fragment zero's IP header exactly as it arrived (MF set,
        its own total length and checksum): the interface needs it to hand
        the reassembled datagram up (TTL, TOS, options) and to quote it in an
        ICMP error (RFC 792; RFC 1122 §3.2.2).  The second item is the whole
        reassembled IP payload.

        ``frag_offset`` is in bytes (the header field times 8).  ``payload`` is
        the fragment's data and ``header`` its IP header (options included),
        both bytes-like; what is kept is copied.  The caller hands over only
        real fragments: offset 0 with MF clear is a whole datagram and raises
        ValueError.
        """
        _check_int("src", src, 0, 0xFFFFFFFF)
        _check_int("dst", dst, 0, 0xFFFFFFFF)
        _check_int("proto", proto, 0, 0xFF)
        _check_int("ident", ident, 0, 0xFFFF)
        _check_int("frag_offset", frag_offset, 0, MAX_OFFSET)
        if frag_offset % 8:
            raise ValueError(f"frag_offset is in bytes and must be a multiple of 8, got {frag_offset}")
        if type(more_fragments) is not bool:
            raise TypeError(f"more_fragments must be a bool, not {type(more_fragments).__name__}")
        if frag_offset == 0 and not more_fragments:
            raise ValueError("not a fragment (offset 0, MF clear): deliver the datagram directly")
        try:
            data = memoryview(payload).cast("B")
            hdr = memoryview(header).cast("B")
        except TypeError:
            raise TypeError("payload and header must be bytes-like objects") from None
        if not 20 <= len(hdr) <= 60 or len(hdr) % 4:
            raise ValueError(f"header must be an IPv4 header of 20..60 bytes, a multiple of 4, got {len(hdr)}")
        self._advance(now)
        counters = self.counters

        size = len(data)
        end = frag_offset + size
        # RFC 791 §3.2: every fragment but the last carries a multiple of 8
        # octets.  An empty fragment carries nothing; no sender makes one and
        # Linux drops them too (deviation: an empty last fragment is dropped).
        if size == 0 or (more_fragments and size % 8):
            counters["reasm.bad_length"] += 1
            return None

        key = (src, dst, proto, ident)
        dg = self._datagrams.get(key)
        if dg is not None and dg.dead:
            counters["reasm.after_discard"] += 1
            return None

        # Ping of death: the reassembled header + payload must fit (RFC 791 §3.1).
        header_len = len(dg.header) if dg is not None and dg.header is not None else len(hdr)
        too_big = end + header_len > self.max_datagram
        if dg is not None and frag_offset == 0 and dg.max_end + len(hdr) > self.max_datagram:
            too_big = True
        if too_big:
            if dg is None:
                counters["reasm.too_big"] += 1
            else:
                self._discard(dg, "reasm.too_big")
            return None

        if dg is None:
            gaps = [(frag_offset, end)]
        else:
            # RFC 791 §3.2: the last fragment fixes the length; nothing may lie beyond it.
            if not more_fragments and (end < dg.max_end or (dg.total is not None and dg.total != end)):
                self._discard(dg, "reasm.inconsistent")
                return None
            if more_fragments and dg.total is not None and end > dg.total:
                self._discard(dg, "reasm.inconsistent")
                return None
            gaps = _gaps(dg, frag_offset, data)
            if gaps is _OVERLAP:
                self._discard(dg, "reasm.overlap")
                return None
            if not gaps and (more_fragments or dg.total == end):
                counters["reasm.duplicate"] += 1
                return None

        keep_header = frag_offset == 0 and (dg is None or dg.header is None)
        cost = sum(hi - lo for lo, hi in gaps) + PIECE_COST * len(gaps) + (len(hdr) if keep_header else 0)

        # Make room (module docstring, "Limits and eviction").
        if (dg.charge if dg is not None else 0) + cost > self.memory_limit:
            counters["reasm.evicted"] += 1  # this datagram alone is over the limit
            if dg is not None:
                self._remove(key)
            return None
        if dg is None:
            while len(self._datagrams) >= self.max_datagrams:
                self._evict_oldest(key, live_only=False)
        while self._memory + cost > self.memory_limit:
            self._evict_oldest(key, live_only=True)

        if dg is None:
            dg = self._datagrams[key] = _Datagram(now + self.timeout)
        starts, ends, pieces = dg.starts, dg.ends, dg.pieces
        for lo, hi in gaps:
            i = bisect_right(starts, lo)
            starts.insert(i, lo)
            ends.insert(i, hi)
            pieces.insert(i, bytes(data[lo - frag_offset:hi - frag_offset]))
            dg.received += hi - lo
        if keep_header:
            dg.header = bytes(hdr)
        if not more_fragments:
            dg.total = end
        dg.charge += cost
        self._memory += cost

        if dg.total is not None and dg.received == dg.total:
            self._remove(key)
            counters["reasm.ok"] += 1
            # dg.header is set: completion needs offset 0, and only fragment
            # zero can bring it (pieces cover [0, total)).
            return dg.header, b"".join(pieces)
        return None
