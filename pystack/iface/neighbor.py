"""The ARP neighbour cache: IPv4 address -> Ethernet address (RFC 826; RFC 1122 §2.3.2).

Owns the translation table, the resolutions in progress with the packets
waiting on them, and their timers.  It sends nothing: the interface asks it
which ARP requests to (re)transmit and which resolutions failed, and builds
the frames itself.  Packets waiting for resolution are opaque objects.

Theory of operation
-------------------
An address is in at most one of three places:

* ``_static``: entries the administrator set; never expire, never changed by
  the network (deviation from RFC 826's merge rule, as Linux's permanent
  entries: a static entry is how an administrator pins a neighbour against
  ARP spoofing).
* ``_dynamic``: learned entries, each valid while ``now < expires_at``.  The
  timeout is restarted only when ARP traffic from the neighbour is seen, not
  when the entry is used (RFC 1122 §2.3.2.1, "Timeout" mechanism), and the
  lifetime is configurable (RFC 1122 §2.3.2.1 SHOULD).
* ``_pending``: resolutions in progress ("incomplete" entries), each with its
  queue of packets, the number of requests sent and the instant ``due`` of
  its next step.

Resolution: :meth:`enqueue` of the first packet for an unknown address
starts one and tells the caller to send a request now.  Every
``retry_interval`` (default 1 s, the rate RFC 1122 §2.3.2.1 recommends as
the maximum per destination) :meth:`requests_due` names it again, up to
``max_retries`` retransmissions; ``retry_interval`` after the last request
without answer, :meth:`failed` hands back its packets so the interface can
send ICMP Host Unreachable to local senders.  With the defaults, requests go
out at 0, 1, 2 and 3 s and the resolution fails at 4 s.  An ARP packet from
the address (:meth:`update`) completes it and returns the packets, in order.

Merge rule (RFC 826, "Packet Reception"): a sender already known -- resolved
or incomplete -- is updated and refreshed whatever the ARP packet's target;
an unknown sender is added only when the packet was addressed to us
(``create=True``).  Senders that no host may claim (a group or zero MAC,
0.0.0.0, multicast, reserved or broadcast IPs) are ignored and counted
("arp.bad_sender"): caching them would send unicast traffic to a group.

Bounds: ``max_entries`` covers all three places together.  A new learned
entry or a new resolution evicts the *oldest* learned entry when the table
is full ("arp.evicted"); when only static entries and resolutions remain,
the new one is refused ("arp.table_full"): an incomplete entry lives at most
``(max_retries + 1) * retry_interval``, and evicting one would waste the
requests already sent.  Each resolution queues at most ``max_queued_per_ip``
packets; the oldest goes first when full ("arp.queue_overflow"), so the
latest is always kept (RFC 1122 §2.3.2.2 SHOULD save at least the latest).

``now`` must never decrease.  Every call that takes ``now`` first removes
the learned entries that expired ("arp.expired").  Because every entry gets
the same lifetime and a refresh moves it to the end, ``_dynamic``'s
insertion order is expiry order: expiring and evicting both take from the
front.
"""

from __future__ import annotations

from collections import deque

from pystack.time import advance

COUNTERS = (
    "arp.expired",  # learned entries whose lifetime ended (RFC 1122 §2.3.2.1)
    "arp.evicted",  # learned entries removed to make room (max_entries)
    "arp.table_full",  # new entries or resolutions refused: only static/incomplete left
    "arp.queue_overflow",  # packets dropped, oldest first, from a full queue (RFC 1122 §2.3.2.2)
    "arp.unresolved",  # packets dropped because resolution failed
    "arp.bad_sender",  # ARP senders ignored: group/zero MAC, unusable IP
    "arp.static_conflict",  # ARP claims that disagree with a static entry
)

_BROADCAST_IP = 0xFFFFFFFF
_FIRST_MULTICAST_IP = 0xE0000000  # 224.0.0.0: class D and E are never a host (RFC 1112 §4)


class _Resolution:
    """An address being resolved.

    Invariants: ``queue`` holds 1..max_queued_per_ip packets, oldest first;
    ``1 <= sent <= max_retries + 1``; ``due`` is when the next request is
    due (``sent <= max_retries``) or when the resolution fails (``sent ==
    max_retries + 1``).
    """

    __slots__ = ("queue", "sent", "due")

    def __init__(self, packet, due: int) -> None:
        self.queue = deque((packet,))
        self.sent = 1
        self.due = due


def _check_int(name: str, value, lo: int, hi: int | None = None) -> int:
    if type(value) is not int:
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < lo or (hi is not None and value > hi):
        bound = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def _check_ip(ip) -> int:
    return _check_int("ip", ip, 0, _BROADCAST_IP)


def _check_mac(mac) -> bytes:
    if not isinstance(mac, (bytes, bytearray, memoryview)):
        raise TypeError(f"mac must be bytes, not {type(mac).__name__}")
    mac = bytes(mac)
    if len(mac) != 6:
        raise ValueError(f"mac must be 6 bytes, got {len(mac)}")
    return mac


def _usable(ip: int, mac: bytes) -> bool:
    """Whether a host may own ``ip`` at ``mac`` (unicast, non-zero on both sides)."""
    return ip != 0 and ip < _FIRST_MULTICAST_IP and not mac[0] & 1 and mac != bytes(6)


class NeighborCache:
    """ARP translation table with resolution queues (see the module docstring)."""

    def __init__(self, entry_lifetime: int = 60_000_000, retry_interval: int = 1_000_000,
                 max_retries: int = 3, max_queued_per_ip: int = 16, max_entries: int = 1024) -> None:
        self.entry_lifetime = _check_int("entry_lifetime", entry_lifetime, 1)
        self.retry_interval = _check_int("retry_interval", retry_interval, 1)
        self.max_retries = _check_int("max_retries", max_retries, 0)
        self.max_queued_per_ip = _check_int("max_queued_per_ip", max_queued_per_ip, 1)
        self.max_entries = _check_int("max_entries", max_entries, 1)
        self._static: dict[int, bytes] = {}
        # ip -> (mac, expires_at); insertion order == expires_at order.
        self._dynamic: dict[int, tuple[bytes, int]] = {}
        self._pending: dict[int, _Resolution] = {}
        self._now: int | None = None
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)

    # -- time -----------------------------------------------------------------

    def _advance(self, now) -> None:
        self._now = advance(self._now, now)
        dynamic = self._dynamic
        while dynamic:
            ip = next(iter(dynamic))
            if dynamic[ip][1] > now:
                break
            del dynamic[ip]
            self.counters["arp.expired"] += 1

    def expire(self, now: int) -> None:
        """Remove the learned entries whose lifetime ended ("arp.expired")."""
        self._advance(now)

    def poll_at(self) -> int | None:
        """The next instant a call has work: an expiry, a retransmission or a failure."""
        times = [r.due for r in self._pending.values()]
        for _, expires_at in self._dynamic.values():
            times.append(expires_at)
            break
        return min(times) if times else None

    # -- room -------------------------------------------------------------------

    def _make_room(self) -> bool:
        """Ensure one free slot, evicting the oldest learned entry if needed."""
        if len(self._static) + len(self._dynamic) + len(self._pending) < self.max_entries:
            return True
        if not self._dynamic:
            return False
        del self._dynamic[next(iter(self._dynamic))]
        self.counters["arp.evicted"] += 1
        return True

    def _learn(self, ip: int, mac: bytes, now: int) -> None:
        self._dynamic.pop(ip, None)  # re-insert at the end: keeps expiry order
        self._dynamic[ip] = (mac, now + self.entry_lifetime)

    # -- queries ----------------------------------------------------------------

    def lookup(self, ip: int, now: int) -> bytes | None:
        """The MAC of ``ip`` if a static or unexpired learned entry exists."""
        _check_ip(ip)
        self._advance(now)
        mac = self._static.get(ip)
        if mac is not None:
            return mac
        entry = self._dynamic.get(ip)
        return entry[0] if entry is not None else None

    def entries(self) -> list[tuple[int, bytes, int | None]]:
        """(ip, mac, expires_at) of every entry by ip; ``expires_at`` None when static."""
        rows = [(ip, mac, None) for ip, mac in self._static.items()]
        rows += [(ip, mac, expires_at) for ip, (mac, expires_at) in self._dynamic.items()]
        rows.sort(key=lambda row: row[0])
        return rows

    def resolving(self) -> list[tuple[int, int, int]]:
        """(ip, packets queued, requests sent) of every resolution in progress, by ip."""
        return sorted((ip, len(r.queue), r.sent) for ip, r in self._pending.items())

    # -- ARP input ----------------------------------------------------------------

    def update(self, ip: int, mac: bytes, now: int, create: bool) -> list:
        """Apply RFC 826's merge rule for an ARP packet's sender (``ip``, ``mac``).

        ``create`` is True when the packet was addressed to us (its target
        protocol address is ours).  Returns the packets that were waiting
        for ``ip``, oldest first, now sendable to ``mac``.
        """
        _check_ip(ip)
        mac = _check_mac(mac)
        if type(create) is not bool:
            raise TypeError(f"create must be a bool, not {type(create).__name__}")
        self._advance(now)
        if not _usable(ip, mac):
            self.counters["arp.bad_sender"] += 1
            return []
        static = self._static.get(ip)
        if static is not None:
            if static != mac:
                self.counters["arp.static_conflict"] += 1
            return []
        if ip in self._dynamic:  # RFC 826: already in the table -> update, merge_flag
            self._learn(ip, mac, now)
            return []
        resolution = self._pending.pop(ip, None)
        if resolution is not None:  # an incomplete entry is in the table too
            self._learn(ip, mac, now)
            return list(resolution.queue)
        if create:  # RFC 826: "Am I the target?" and not merged -> add
            if self._make_room():
                self._learn(ip, mac, now)
            else:
                self.counters["arp.table_full"] += 1
        return []

    # -- IP output ----------------------------------------------------------------

    def enqueue(self, ip: int, packet, now: int) -> bool:
        """Queue ``packet`` until ``ip`` resolves; True when a request should go out now.

        Call only after :meth:`lookup` found nothing (ValueError otherwise).
        A full queue drops its oldest packet ("arp.queue_overflow"); a full
        table refuses a new resolution and drops the packet ("arp.table_full").
        """
        _check_ip(ip)
        if ip == 0 or ip >= _FIRST_MULTICAST_IP:
            raise ValueError(f"{ip:#010x} is not a unicast address; ARP cannot resolve it")
        self._advance(now)
        if ip in self._static or ip in self._dynamic:
            raise ValueError(f"{ip:#010x} is resolved; look it up and send directly")
        resolution = self._pending.get(ip)
        if resolution is not None:
            if len(resolution.queue) >= self.max_queued_per_ip:
                resolution.queue.popleft()
                self.counters["arp.queue_overflow"] += 1
            resolution.queue.append(packet)
            return False
        if not self._make_room():
            self.counters["arp.table_full"] += 1
            return False
        self._pending[ip] = _Resolution(packet, now + self.retry_interval)
        return True

    def requests_due(self, now: int) -> list[int]:
        """Addresses whose ARP request should be retransmitted now.

        At most one per ``retry_interval`` per address (RFC 1122 §2.3.2.1,
        flooding prevention): the next one is due ``retry_interval`` after
        this call, however late the call came.
        """
        self._advance(now)
        due = []
        for ip, r in self._pending.items():
            if r.due <= now and r.sent <= self.max_retries:
                r.sent += 1
                r.due = now + self.retry_interval
                due.append(ip)
        return due

    def failed(self, now: int) -> list[tuple[int, list]]:
        """Resolutions that ran out of requests: (ip, its packets, oldest first).

        The packets are dropped ("arp.unresolved"); the interface may send
        ICMP Destination Unreachable, Host Unreachable, to their local senders.
        """
        self._advance(now)
        gone = [ip for ip, r in self._pending.items() if r.due <= now and r.sent > self.max_retries]
        out = []
        for ip in gone:
            packets = list(self._pending.pop(ip).queue)
            self.counters["arp.unresolved"] += len(packets)
            out.append((ip, packets))
        return out

    # -- administration -------------------------------------------------------------

    def add_static(self, ip: int, mac: bytes) -> list:
        """Pin ``ip`` to ``mac`` for good; returns packets that were waiting for ``ip``.

        Replaces a learned entry or completes a resolution; raises ValueError
        for an address no host may own, or when the table holds only static
        entries and resolutions.
        """
        _check_ip(ip)
        mac = _check_mac(mac)
        if not _usable(ip, mac):
            raise ValueError(f"{ip:#010x} at {mac.hex(':')} is not a unicast neighbour")
        if ip in self._static:
            self._static[ip] = mac
            return []
        if self._dynamic.pop(ip, None) is not None:
            self._static[ip] = mac
            return []
        resolution = self._pending.pop(ip, None)
        if resolution is not None:
            self._static[ip] = mac
            return list(resolution.queue)
        if not self._make_room():
            raise ValueError(f"neighbour table full: {self.max_entries} static entries and resolutions")
        self._static[ip] = mac
        return []

    def remove(self, ip: int) -> bool:
        """Forget the static or learned entry for ``ip``; False if there was none."""
        _check_ip(ip)
        return self._static.pop(ip, None) is not None or self._dynamic.pop(ip, None) is not None
