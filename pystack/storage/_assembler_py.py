"""TCP receive reassembly buffer, pure-Python twin of ``pystack._fast.assembler``.

An :class:`Assembler` owns the receive side of one TCP connection's byte
stream: the ring that holds in-order data the application has not read yet,
the out-of-order data received beyond RCV.NXT (stored at its place in the
ring, so it needs no second copy once the gap fills), the set of those
out-of-order ranges with how recently each changed (for SACK, RFC 2018 §4),
and the D-SACK report of the last insert (RFC 2883 §4).  It does not decide
whether a segment is acceptable (RFC 9293 §3.10.7.4, that is the
connection's job); it trims to the window and stores what fits.

Positions.  Sequence numbers wrap at 2**32 (RFC 9293 §3.4), so inside the
buffer every byte is named by an *absolute* stream position: position 0 is
the ``rcv_nxt`` given to the constructor, and position p has sequence number
``(rcv_nxt0 + p) mod 2**32``.  A segment's sequence number is turned into a
position by the signed difference from RCV.NXT (RFC 9293 §3.4: a distance of
2**31 or more is "before").  Absolute positions never wrap, so ranges compare
with plain ``<``, and byte p lives in ring slot ``p % capacity``.

Copying.  ``insert`` copies the part of the segment that fits the window
into the ring, once.  Bytes it overlaps were sent before with the same
sequence numbers and so, per RFC 9293 §3.10.7.4, the same content; they are
simply overwritten.  ``peek`` returns a read-only memoryview into the ring;
``read``/``read_into`` copy out.

Memory (decision).  ``capacity`` is the window the connection offers, not
what is allocated: the ring is allocated on the first insert, grows by
doubling (from :data:`MIN_RING` bytes, at most to ``capacity``) when data
lands beyond its end, and is released whenever reading empties the buffer
(nothing unread, no out-of-order data).  So an idle connection holds no
ring at all -- a preallocated 256 KiB ring per connection made a thousand
idle connections cost 256 MB -- and one that exchanges small messages
holds a few KiB only while they wait to be read.  After a release the
next ring starts at the size the last one reached (``_hint``), so a bulk
receiver that drains its buffer every batch allocates one ring per batch
(no regrowth, no copy), not a chain of doublings.  Growing moves the held
bytes to their new slots (``p % size`` changes with ``size``), one copy
per live byte, at most log2(capacity / MIN_RING) times per ring.
"""

from __future__ import annotations

from operator import index as _index

_SEQ_MOD = 1 << 32
_SEQ_MASK = _SEQ_MOD - 1
_HALF = 1 << 31

#: Largest capacity: the largest window TCP can offer is 65535 << 14 < 2**30
#: (RFC 7323 §2.3), and sequence comparison needs the window below 2**31
#: (RFC 7323 §2.3, RFC 9293 §3.4).
MAX_CAPACITY = 1 << 30
#: The first ring's size (or ``capacity`` when smaller): one page.
MIN_RING = 4096


def _ring_size(need: int, start: int, cap: int) -> int:
    """The ring size for ``need`` bytes: ``start`` doubled until it holds them, at most ``cap``."""
    size = start if start > MIN_RING else MIN_RING
    while size < need:
        size <<= 1
    return size if size < cap else cap


def _as_int(name: str, value) -> int:
    """Any integer (int, bool, numpy integer) as an exact int, else TypeError; as the Cython twin."""
    if type(value) is int:
        return value
    try:
        return _index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, not {type(value).__name__}") from None


class Assembler:
    """Reassembles one TCP byte stream in a ring of ``capacity`` bytes.

    See the module docstring; :attr:`dsack`, :meth:`sack_blocks` give what an
    ACK should carry.  ``peek`` views are read-only and are invalidated by
    the next ``insert``, ``consume``, ``read`` or ``read_into``.  Integer
    arguments take any integer (``int``, ``bool``, numpy integers), kept as
    an ``int``; anything else raises TypeError.
    """

    __slots__ = (
        "_buf", "_view", "_rview", "_cap", "_size", "_hint", "_isn", "_read", "_nxt", "_ranges",
        "_max_ranges", "_clock", "_ooo", "_refused", "_dsack",
    )

    def __init__(self, capacity: int, rcv_nxt: int = 0, max_ranges: int = 32) -> None:
        capacity = _as_int("capacity", capacity)
        rcv_nxt = _as_int("rcv_nxt", rcv_nxt)
        max_ranges = _as_int("max_ranges", max_ranges)
        if not 0 < capacity <= MAX_CAPACITY:
            raise ValueError(f"capacity must be in 1..{MAX_CAPACITY}, got {capacity}")
        if not 0 <= rcv_nxt <= _SEQ_MASK:
            raise ValueError(f"rcv_nxt must be in 0..2**32-1, got {rcv_nxt}")
        if max_ranges < 1:
            raise ValueError(f"max_ranges must be >= 1, got {max_ranges}")
        # The ring: None until the first insert and after a release (see
        # "Memory" in the module docstring).  A ring is never resized in
        # place (growing makes a new one), so views of an old one stay valid.
        self._buf: bytearray | None = None
        self._view: memoryview | None = None
        self._rview: memoryview | None = None  # made by peek() when first needed
        self._size = 0  # len(_buf), 0 when there is none
        self._hint = 0  # the size the last released ring had reached
        self._cap = capacity
        self._isn = rcv_nxt  # sequence number of absolute position 0
        # Invariant (positions are absolute, see the module docstring):
        #   0 <= _read <= _nxt <= _read + _cap
        #   in-order unread data is [_read, _nxt), in ring slots p % _size;
        #   _ranges is the out-of-order data, a list of [start, end, stamp],
        #   sorted, disjoint and not touching one another or the in-order
        #   data:  _nxt < s0 < e0 < s1 < e1 < ... < e_last <= _read + _cap;
        #   hence len(_ranges) <= _cap // 2; and len(_ranges) <= _max_ranges,
        #   kept by refusing new ranges, never by dropping held ones;
        #   stamp is the _clock value of the insert that last added to or
        #   duplicated the range: unique, larger is more recent;
        #   _ooo == sum(e - s for s, e, _ in _ranges);
        #   every held byte fits the ring: (e_last or _nxt) - _read <= _size;
        #   no ring (_size == 0) only when nothing is held (_read == _nxt, no ranges).
        self._read = 0
        self._nxt = 0
        self._ranges: list[list[int]] = []
        self._max_ranges = max_ranges
        self._clock = 0
        self._ooo = 0
        self._refused = 0
        self._dsack: tuple[int, int] | None = None

    # -- state ---------------------------------------------------------------

    @property
    def capacity(self) -> int:
        return self._cap

    @property
    def allocated(self) -> int:
        """Bytes of ring allocated now (0 while nothing is held; at most ``capacity``)."""
        return self._size

    @property
    def rcv_nxt(self) -> int:
        return (self._isn + self._nxt) & _SEQ_MASK

    @property
    def readable(self) -> int:
        return self._nxt - self._read

    @property
    def window(self) -> int:
        return self._cap - (self._nxt - self._read)

    @property
    def ooo_bytes(self) -> int:
        return self._ooo

    @property
    def range_count(self) -> int:
        return len(self._ranges)

    @property
    def refused(self) -> int:
        return self._refused

    @property
    def dsack(self) -> tuple[int, int] | None:
        d = self._dsack
        if d is None:
            return None
        isn = self._isn
        return ((isn + d[0]) & _SEQ_MASK, (isn + d[1]) & _SEQ_MASK)

    # -- receiving -----------------------------------------------------------

    def insert(self, seq: int, data) -> int:
        """Store ``data`` (contiguous bytes-like) whose first byte has number ``seq``.

        Bytes before RCV.NXT and at or beyond RCV.NXT + window are trimmed
        (RFC 9293 §3.10.7.4).  What is left is merged with the held ranges;
        when it starts at RCV.NXT, RCV.NXT advances over every range that is
        now contiguous.  Out-of-order data that would start a new disjoint
        range while ``max_ranges`` are held is not stored (``refused`` + 1);
        in-order data is always stored.  :attr:`dsack` becomes the first
        block of ``data`` that had been received already (RFC 2883 §4).
        Returns how far RCV.NXT advanced.
        """
        seq = _as_int("seq", seq)
        if not 0 <= seq <= _SEQ_MASK:
            raise ValueError(f"seq must be in 0..2**32-1, got {seq}")
        mv = memoryview(data).cast("B")
        n = len(mv)
        nxt = self._nxt
        # RFC 9293 §3.4: the signed 32-bit distance from RCV.NXT.
        start = nxt + (((seq - self._isn - nxt + _HALF) & _SEQ_MASK) - _HALF)
        end = start + n
        # RFC 2883 §4: the first block of this segment that was already
        # received; below RCV.NXT comes first, held ranges after.
        dsack = (start, min(end, nxt)) if start < nxt and n else None
        self._dsack = dsack
        lo = start if start > nxt else nxt
        hi = self._read + self._cap  # RFC 9293 §3.10.7.4: trim to the window
        if end < hi:
            hi = end
        if lo >= hi:
            return 0
        ranges = self._ranges
        if lo == nxt:
            self._copy_in(mv, lo - start, lo, hi)
            # Advance over every held range the new data reaches or touches.
            new_nxt = hi
            k = 0
            for r in ranges:
                rs, re = r[0], r[1]
                if rs > new_nxt:
                    break
                if dsack is None and rs < hi:
                    dsack = self._dsack = (rs, re if re < hi else hi)
                if re > new_nxt:
                    new_nxt = re
                self._ooo -= re - rs
                k += 1
            if k:
                del ranges[:k]
            self._nxt = new_nxt
            return new_nxt - nxt
        # Out of order: merge with every range it overlaps or touches.
        i = 0
        count = len(ranges)
        while i < count and ranges[i][1] < lo:
            i += 1
        j = i
        while j < count and ranges[j][0] <= hi:
            j += 1
        if i == j and count >= self._max_ranges:
            self._refused += 1
            return 0
        self._copy_in(mv, lo - start, lo, hi)
        self._clock += 1
        new_s, new_e = lo, hi
        for r in ranges[i:j]:
            rs, re = r[0], r[1]
            if dsack is None and rs < hi and lo < re:
                dsack = self._dsack = (rs if rs > lo else lo, re if re < hi else hi)
            if rs < new_s:
                new_s = rs
            if re > new_e:
                new_e = re
            self._ooo -= re - rs
        ranges[i:j] = [[new_s, new_e, self._clock]]
        self._ooo += new_e - new_s
        return 0

    def _grow(self, need: int) -> None:
        """A ring of at least ``need`` bytes, the held bytes moved to their slots in it."""
        old, old_size = self._view, self._size
        size = _ring_size(need, old_size * 2 if old_size else self._hint, self._cap)
        buf = bytearray(size)
        view = memoryview(buf)
        if old_size:
            # Every held position, holes included: [_read, end of the last range or _nxt).
            p = self._read
            end = self._ranges[-1][1] if self._ranges else self._nxt
            while p < end:
                o, q = p % old_size, p % size
                n = min(end - p, old_size - o, size - q)
                view[q:q + n] = old[o:o + n]
                p += n
        self._buf, self._view, self._rview, self._size = buf, view, None, size

    def _release_if_empty(self) -> None:
        """Drop the ring when nothing is held (see "Memory" in the module docstring)."""
        if self._size and self._read == self._nxt and not self._ranges:
            self._hint = self._size
            self._buf = self._view = self._rview = None
            self._size = 0

    def _copy_in(self, mv: memoryview, offset: int, lo: int, hi: int) -> None:
        # Copy mv[offset:offset + hi - lo] to ring slots of positions [lo, hi),
        # growing the ring first if they (or a held range) would not fit.
        top = hi
        if self._ranges and self._ranges[-1][1] > top:
            top = self._ranges[-1][1]
        if top - self._read > self._size:
            self._grow(top - self._read)
        cap = self._size
        p = lo % cap
        n = hi - lo
        first = cap - p
        view = self._view
        if n <= first:
            view[p:p + n] = mv[offset:offset + n]
        else:
            view[p:cap] = mv[offset:offset + first]
            view[0:n - first] = mv[offset + first:offset + n]

    def sack_blocks(self, max_blocks: int = 4) -> list[tuple[int, int]]:
        """Held out-of-order ranges as (left, right) sequence numbers.

        RFC 2018 §4: the block holding the most recently received segment
        first, then the others most recently changed first; at most
        ``max_blocks``.
        """
        max_blocks = _as_int("max_blocks", max_blocks)
        if max_blocks < 0:
            raise ValueError(f"max_blocks must be >= 0, got {max_blocks}")
        isn = self._isn
        by_recency = sorted(self._ranges, key=lambda r: r[2], reverse=True)
        return [((isn + s) & _SEQ_MASK, (isn + e) & _SEQ_MASK) for s, e, _ in by_recency[:max_blocks]]

    # -- reading -------------------------------------------------------------

    def peek(self) -> memoryview:
        """A read-only view of the readable bytes that are contiguous in the ring.

        Shorter than :attr:`readable` when the data wraps the ring's end;
        consume it and peek again.  Invalid after the next mutating call.
        """
        cap = self._size
        if not cap:
            return memoryview(b"")
        rview = self._rview
        if rview is None:
            rview = self._rview = self._view.toreadonly()
        p = self._read % cap
        n = min(self._nxt - self._read, cap - p)
        return rview[p:p + n]

    def consume(self, n: int) -> None:
        """Drop ``n`` readable bytes (the application has taken them)."""
        n = _as_int("n", n)
        if not 0 <= n <= self._nxt - self._read:
            raise ValueError(f"cannot consume {n} bytes: {self._nxt - self._read} readable")
        self._read += n
        self._release_if_empty()

    def read(self, n: int = -1) -> bytes:
        """Copy out and consume up to ``n`` readable bytes (all when ``n < 0``)."""
        n = _as_int("n", n)
        avail = self._nxt - self._read
        if n < 0 or n > avail:
            n = avail
        if n == 0:
            return b""
        cap = self._size
        p = self._read % cap
        first = cap - p
        view = self._view
        if n <= first:
            out = view[p:p + n].tobytes()
        else:
            out = view[p:cap].tobytes() + view[0:n - first].tobytes()
        self._read += n
        self._release_if_empty()
        return out

    def read_into(self, buf) -> int:
        """Copy readable bytes into the writable buffer ``buf``; consume and return the count."""
        out = memoryview(buf)
        if out.readonly:
            raise TypeError("read_into needs a writable buffer")
        out = out.cast("B")
        n = min(len(out), self._nxt - self._read)
        if n == 0:
            return 0
        cap = self._size
        p = self._read % cap
        first = cap - p
        ring = self._view
        if n <= first:
            out[:n] = ring[p:p + n]
        else:
            out[:first] = ring[p:cap]
            out[first:n] = ring[0:n - first]
        self._read += n
        self._release_if_empty()
        return n

    def __repr__(self) -> str:
        return (f"<Assembler rcv_nxt={self.rcv_nxt} readable={self.readable} "
                f"window={self.window} ooo_bytes={self._ooo} ranges={len(self._ranges)}>")
