"""ARP neighbour cache: resolution, retries, queues, the RFC 826 merge rule, expiry, bounds.

The property test runs random operation sequences against a plain model and
checks that ``poll_at()`` is exactly the first instant at which a timer call
has an effect.
"""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pystack.iface.neighbor import COUNTERS, NeighborCache

IP = 0x0A000002  # 10.0.0.2
IP2 = 0x0A000003
MAC = bytes.fromhex("020000000002")
MAC2 = bytes.fromhex("020000000003")
SECOND = 1_000_000
LIFETIME = 60 * SECOND


def only_nonzero(counters):
    return {k: v for k, v in counters.items() if v}


# -- resolution -------------------------------------------------------------------


def test_resolution_flushes_queue_in_order():
    n = NeighborCache()
    assert n.lookup(IP, 0) is None
    assert n.enqueue(IP, "p1", 0) is True
    assert n.enqueue(IP, "p2", 10) is False
    assert n.enqueue(IP, "p3", 20) is False
    assert n.resolving() == [(IP, 3, 1)]
    assert n.update(IP, MAC, 30, create=True) == ["p1", "p2", "p3"]
    assert n.lookup(IP, 30) == MAC
    assert n.resolving() == []
    assert n.entries() == [(IP, MAC, 30 + LIFETIME)]
    assert n.requests_due(5 * SECOND) == []
    assert n.failed(5 * SECOND) == []
    assert only_nonzero(n.counters) == {}


def test_retries_one_second_apart_then_failure():
    n = NeighborCache()
    assert n.enqueue(IP, "p", 0) is True  # request 1
    assert n.poll_at() == SECOND
    assert n.requests_due(SECOND - 1) == []
    sent = [t for t in range(SECOND, 4 * SECOND, SECOND // 4) if n.requests_due(t)]
    assert sent == [SECOND, 2 * SECOND, 3 * SECOND]  # max_retries=3 retransmissions
    assert n.poll_at() == 4 * SECOND
    assert n.failed(4 * SECOND - 1) == []
    assert n.failed(4 * SECOND) == [(IP, ["p"])]
    assert n.counters["arp.unresolved"] == 1
    assert n.poll_at() is None
    assert n.enqueue(IP, "again", 4 * SECOND) is True  # a new resolution starts afresh


def test_late_call_keeps_spacing():
    """RFC 1122 §2.3.2.1: never more than one request per retry_interval per address."""
    n = NeighborCache()
    n.enqueue(IP, "p", 0)
    assert n.requests_due(1_500_000) == [IP]
    assert n.requests_due(2_400_000) == []
    assert n.poll_at() == 2_500_000
    assert n.requests_due(2_500_000) == [IP]


def test_failed_does_not_take_resolutions_with_requests_left():
    n = NeighborCache(max_retries=1)
    n.enqueue(IP, "p", 0)
    assert n.failed(SECOND) == []  # a retransmission is due, not a failure
    assert n.requests_due(SECOND) == [IP]
    assert n.requests_due(2 * SECOND) == []
    assert n.failed(2 * SECOND) == [(IP, ["p"])]


def test_zero_retries():
    n = NeighborCache(max_retries=0)
    assert n.enqueue(IP, "p", 0) is True
    assert n.requests_due(SECOND) == []
    assert n.failed(SECOND) == [(IP, ["p"])]


def test_several_addresses_independent():
    n = NeighborCache()
    n.enqueue(IP, "a", 0)
    n.enqueue(IP2, "b", 300_000)
    assert n.requests_due(SECOND) == [IP]
    assert n.poll_at() == 1_300_000
    assert n.requests_due(1_300_000) == [IP2]
    assert n.update(IP2, MAC2, 1_400_000, create=True) == ["b"]
    assert n.requests_due(2 * SECOND) == [IP]
    assert n.requests_due(3 * SECOND) == [IP]
    assert n.failed(4 * SECOND) == [(IP, ["a"])]


def test_queue_overflow_drops_oldest():
    n = NeighborCache(max_queued_per_ip=3)
    for i in range(5):
        n.enqueue(IP, i, i)
    assert n.counters["arp.queue_overflow"] == 2
    assert n.update(IP, MAC, 10, create=True) == [2, 3, 4]


def test_failure_counts_every_dropped_packet():
    n = NeighborCache(max_queued_per_ip=2, max_retries=0)
    for i in range(3):
        n.enqueue(IP, i, 0)
    assert n.failed(SECOND) == [(IP, [1, 2])]
    assert n.counters["arp.unresolved"] == 2
    assert n.counters["arp.queue_overflow"] == 1


# -- RFC 826 merge rule --------------------------------------------------------------


def test_unknown_sender_added_only_when_addressed_to_us():
    n = NeighborCache()
    assert n.update(IP, MAC, 0, create=False) == []
    assert n.lookup(IP, 0) is None
    assert n.update(IP, MAC, 0, create=True) == []
    assert n.lookup(IP, 0) == MAC


def test_known_sender_updated_and_refreshed_whatever_the_target():
    n = NeighborCache()
    n.update(IP, MAC, 0, create=True)
    n.update(IP, MAC2, 10 * SECOND, create=False)
    assert n.lookup(IP, 10 * SECOND) == MAC2
    assert n.entries() == [(IP, MAC2, 10 * SECOND + LIFETIME)]
    assert n.lookup(IP, LIFETIME) == MAC2  # the refresh moved the expiry


def test_resolution_completed_by_packet_not_addressed_to_us():
    """An incomplete entry is in the table: the merge rule applies to it."""
    n = NeighborCache()
    n.enqueue(IP, "p", 0)
    assert n.update(IP, MAC, 10, create=False) == ["p"]
    assert n.lookup(IP, 10) == MAC


@pytest.mark.parametrize("ip, mac", [
    (IP, bytes.fromhex("ffffffffffff")),
    (IP, bytes.fromhex("01005e000001")),
    (IP, bytes(6)),
    (0, MAC),
    (0xE0000001, MAC),
    (0xFFFFFFFF, MAC),
])
def test_unusable_sender_ignored(ip, mac):
    n = NeighborCache()
    if ip == IP:
        n.enqueue(IP, "p", 0)
    assert n.update(ip, mac, 0, create=True) == []
    assert n.counters["arp.bad_sender"] == 1
    assert n.entries() == []


# -- expiry --------------------------------------------------------------------------


def test_entry_expires_after_lifetime():
    n = NeighborCache()
    n.update(IP, MAC, 0, create=True)
    assert n.poll_at() == LIFETIME
    assert n.lookup(IP, LIFETIME - 1) == MAC
    assert n.lookup(IP, LIFETIME) is None
    assert n.counters["arp.expired"] == 1
    assert n.entries() == []
    assert n.poll_at() is None


def test_expire_call_removes_entries():
    n = NeighborCache(entry_lifetime=100)
    n.update(IP, MAC, 0, create=True)
    n.update(IP2, MAC2, 50, create=True)
    n.expire(100)
    assert n.entries() == [(IP2, MAC2, 150)]
    assert n.poll_at() == 150


def test_use_does_not_refresh():
    n = NeighborCache(entry_lifetime=100)
    n.update(IP, MAC, 0, create=True)
    for t in range(0, 100, 10):
        assert n.lookup(IP, t) == MAC
    assert n.lookup(IP, 100) is None


# -- static entries ------------------------------------------------------------------


def test_static_never_expires_and_is_not_overwritten():
    n = NeighborCache()
    assert n.add_static(IP, MAC) == []
    assert n.lookup(IP, 10**12) == MAC
    assert n.update(IP, MAC2, 10**12, create=True) == []
    assert n.counters["arp.static_conflict"] == 1
    assert n.update(IP, MAC, 10**12, create=True) == []
    assert n.counters["arp.static_conflict"] == 1
    assert n.lookup(IP, 10**12) == MAC
    assert n.entries() == [(IP, MAC, None)]
    assert n.poll_at() is None
    assert n.remove(IP) is True
    assert n.remove(IP) is False
    assert n.lookup(IP, 10**12) is None


def test_static_replaces_learned_and_completes_resolution():
    n = NeighborCache()
    n.update(IP, MAC, 0, create=True)
    assert n.add_static(IP, MAC2) == []
    assert n.entries() == [(IP, MAC2, None)]
    n.enqueue(IP2, "q", 0)
    assert n.add_static(IP2, MAC) == ["q"]
    assert n.requests_due(10 * SECOND) == [] and n.failed(10 * SECOND) == []
    assert n.add_static(IP2, MAC2) == []  # re-pin
    assert n.lookup(IP2, 10 * SECOND) == MAC2


def test_enqueue_for_resolved_address_is_misuse():
    n = NeighborCache()
    n.add_static(IP, MAC)
    n.update(IP2, MAC2, 0, create=True)
    for ip in (IP, IP2):
        with pytest.raises(ValueError, match="resolved"):
            n.enqueue(ip, "p", 0)


# -- bounds --------------------------------------------------------------------------


def test_max_entries_evicts_oldest_learned():
    n = NeighborCache(max_entries=3)
    n.add_static(1, MAC)
    n.update(2, MAC, 0, create=True)
    n.update(3, MAC, 10, create=True)
    n.update(2, MAC2, 20, create=False)  # refresh: 3 is now the oldest
    n.update(4, MAC, 30, create=True)
    assert [row[0] for row in n.entries()] == [1, 2, 4]
    assert n.counters["arp.evicted"] == 1
    assert n.enqueue(5, "p", 40) is True  # evicts 2
    assert [row[0] for row in n.entries()] == [1, 4]
    assert n.counters["arp.evicted"] == 2


def test_table_full_of_static_and_pending():
    n = NeighborCache(max_entries=2)
    n.add_static(1, MAC)
    assert n.enqueue(2, "p", 0) is True
    assert n.enqueue(3, "q", 0) is False  # refused
    assert n.counters["arp.table_full"] == 1
    assert n.resolving() == [(2, 1, 1)]
    assert n.update(4, MAC, 0, create=True) == []
    assert n.counters["arp.table_full"] == 2
    with pytest.raises(ValueError, match="full"):
        n.add_static(5, MAC)
    assert n.update(2, MAC2, 0, create=False) == ["p"]  # resolution fits in its own slot
    assert n.add_static(5, MAC) == []  # evicts learned 2
    assert [row[0] for row in n.entries()] == [1, 5]


# -- caller misuse ---------------------------------------------------------------------


@pytest.mark.parametrize("call, exc", [
    (lambda n: n.lookup(-1, 0), ValueError),
    (lambda n: n.lookup(1 << 32, 0), ValueError),
    (lambda n: n.lookup("10.0.0.1", 0), TypeError),
    (lambda n: n.lookup(IP, 1.0), TypeError),
    (lambda n: n.update(IP, MAC[:5], 0, create=True), ValueError),
    (lambda n: n.update(IP, "02:00:00:00:00:02", 0, create=True), TypeError),
    (lambda n: n.update(IP, MAC, 0, create=1), TypeError),
    (lambda n: n.enqueue(0xFFFFFFFF, "p", 0), ValueError),
    (lambda n: n.enqueue(0xE0000001, "p", 0), ValueError),
    (lambda n: n.add_static(IP, bytes.fromhex("ffffffffffff")), ValueError),
    (lambda n: n.add_static(0, MAC), ValueError),
])
def test_misuse(call, exc):
    n = NeighborCache()
    with pytest.raises(exc):
        call(n)
    assert n.entries() == [] and n.resolving() == []


def test_time_must_not_go_backwards():
    n = NeighborCache()
    n.lookup(IP, 100)
    with pytest.raises(ValueError, match="backwards"):
        n.requests_due(99)


@pytest.mark.parametrize("kwargs", [dict(entry_lifetime=0), dict(retry_interval=0), dict(max_retries=-1),
                                    dict(max_queued_per_ip=0), dict(max_entries=0), dict(max_entries=2.0)])
def test_bad_configuration(kwargs):
    with pytest.raises((ValueError, TypeError)):
        NeighborCache(**kwargs)


# -- model-based property test -----------------------------------------------------------


class Model:
    """The cache written the slow, obvious way: scan everything at every call."""

    def __init__(self, lifetime, retry, max_retries, max_queued, max_entries):
        self.lifetime, self.retry, self.max_retries = lifetime, retry, max_retries
        self.max_queued, self.max_entries = max_queued, max_entries
        self.static = {}
        self.learned = {}  # ip -> (mac, expires_at, learn sequence number)
        self.pending = {}  # ip -> [packets, requests sent, due]
        self.seq = 0
        self.counters = dict.fromkeys(COUNTERS, 0)

    def tick(self, now):
        for ip in [ip for ip, (_, expires_at, _) in self.learned.items() if expires_at <= now]:
            del self.learned[ip]
            self.counters["arp.expired"] += 1

    def room(self):
        if len(self.static) + len(self.learned) + len(self.pending) < self.max_entries:
            return True
        if not self.learned:
            return False
        del self.learned[min(self.learned, key=lambda ip: self.learned[ip][1:])]
        self.counters["arp.evicted"] += 1
        return True

    def learn(self, ip, mac, now):
        self.seq += 1
        self.learned[ip] = (mac, now + self.lifetime, self.seq)

    def lookup(self, ip, now):
        self.tick(now)
        if ip in self.static:
            return self.static[ip]
        return self.learned[ip][0] if ip in self.learned else None

    def update(self, ip, mac, now, create):
        self.tick(now)
        if mac[0] & 1 or mac == bytes(6):
            self.counters["arp.bad_sender"] += 1
            return []
        if ip in self.static:
            self.counters["arp.static_conflict"] += self.static[ip] != mac
            return []
        if ip in self.learned:
            self.learn(ip, mac, now)
            return []
        if ip in self.pending:
            packets = self.pending.pop(ip)[0]
            self.learn(ip, mac, now)
            return packets
        if create:
            if self.room():
                self.learn(ip, mac, now)
            else:
                self.counters["arp.table_full"] += 1
        return []

    def enqueue(self, ip, packet, now):
        self.tick(now)
        if ip in self.pending:
            queue = self.pending[ip][0]
            queue.append(packet)
            if len(queue) > self.max_queued:
                del queue[0]
                self.counters["arp.queue_overflow"] += 1
            return False
        if not self.room():
            self.counters["arp.table_full"] += 1
            return False
        self.pending[ip] = [[packet], 1, now + self.retry]
        return True

    def requests_due(self, now):
        self.tick(now)
        out = []
        for ip, state in self.pending.items():
            if state[2] <= now and state[1] <= self.max_retries:
                state[1] += 1
                state[2] = now + self.retry
                out.append(ip)
        return out

    def failed(self, now):
        self.tick(now)
        out = []
        for ip, (packets, sent, due) in list(self.pending.items()):
            if due <= now and sent > self.max_retries:
                del self.pending[ip]
                self.counters["arp.unresolved"] += len(packets)
                out.append((ip, packets))
        return out

    def add_static(self, ip, mac):
        if ip in self.static or self.learned.pop(ip, None) is not None:
            self.static[ip] = mac
            return []
        if ip in self.pending:
            self.static[ip] = mac
            return self.pending.pop(ip)[0]
        if not self.room():
            raise ValueError("full")
        self.static[ip] = mac
        return []

    def remove(self, ip):
        return self.static.pop(ip, None) is not None or self.learned.pop(ip, None) is not None

    def entries(self):
        rows = [(ip, mac, None) for ip, mac in self.static.items()]
        rows += [(ip, mac, expires_at) for ip, (mac, expires_at, _) in self.learned.items()]
        return sorted(rows, key=lambda row: row[0])

    def poll_at(self):
        times = [due for _, _, due in self.pending.values()]
        times += [expires_at for _, expires_at, _ in self.learned.values()]
        return min(times, default=None)


IPS = st.integers(1, 6)
MACS = st.sampled_from([MAC, MAC2, bytes.fromhex("020000000009"), bytes.fromhex("01005e000001")])
OPS = st.one_of(
    st.tuples(st.just("lookup"), IPS),
    st.tuples(st.just("update"), IPS, MACS, st.booleans()),
    st.tuples(st.just("enqueue"), IPS),
    st.tuples(st.just("requests_due")),
    st.tuples(st.just("failed")),
    st.tuples(st.just("expire")),
    st.tuples(st.just("add_static"), IPS, MACS),
    st.tuples(st.just("remove"), IPS),
)


def observe(cache, t):
    """Run every timer call at ``t`` on a copy; what they report."""
    c = copy.deepcopy(cache)
    due, failed = c.requests_due(t), c.failed(t)
    c.expire(t)
    return due, failed, c.counters


def test_observe_sees_expiry_and_retransmission():
    n = NeighborCache(entry_lifetime=10, retry_interval=3)
    n.update(IP, MAC, 0, create=True)
    n.enqueue(IP2, "p", 0)
    assert observe(n, 2) == ([], [], n.counters)
    assert observe(n, 3)[0] == [IP2]
    assert observe(n, 10)[2]["arp.expired"] == 1


@settings(max_examples=300, deadline=None)
@given(
    params=st.tuples(st.integers(1, 40), st.integers(1, 10), st.integers(0, 3), st.integers(1, 3), st.integers(1, 5)),
    steps=st.lists(st.tuples(OPS, st.integers(0, 12)), max_size=60),
)
def test_against_model_and_poll_at_exact(params, steps):
    lifetime, retry, max_retries, max_queued, max_entries = params
    cache = NeighborCache(entry_lifetime=lifetime, retry_interval=retry, max_retries=max_retries,
                          max_queued_per_ip=max_queued, max_entries=max_entries)
    model = Model(*params)
    now = 0
    for packet, (op, dt) in enumerate(steps):
        now += dt
        name, *args = op
        if name == "lookup":
            assert cache.lookup(args[0], now) == model.lookup(args[0], now)
        elif name == "update":
            ip, mac, create = args
            assert cache.update(ip, mac, now, create=create) == model.update(ip, mac, now, create)
        elif name == "enqueue":
            ip = args[0]
            if model.lookup(ip, now) is not None:
                with pytest.raises(ValueError):
                    cache.enqueue(ip, packet, now)
            else:
                assert cache.enqueue(ip, packet, now) == model.enqueue(ip, packet, now)
        elif name == "requests_due":
            assert cache.requests_due(now) == model.requests_due(now)
        elif name == "failed":
            assert cache.failed(now) == model.failed(now)
        elif name == "expire":
            cache.expire(now)
            model.tick(now)
        elif name == "add_static":
            ip, mac = args
            if mac[0] & 1:
                with pytest.raises(ValueError):
                    cache.add_static(ip, mac)
                continue
            model.tick(now)
            cache.expire(now)  # same starting point: add_static takes no `now`
            try:
                expected = model.add_static(ip, mac)
            except ValueError:
                with pytest.raises(ValueError):
                    cache.add_static(ip, mac)
            else:
                assert cache.add_static(ip, mac) == expected
        elif name == "remove":
            assert cache.remove(args[0]) == model.remove(args[0])

        assert cache.counters == model.counters
        assert cache.entries() == model.entries()
        assert cache.resolving() == sorted((ip, len(q), sent) for ip, (q, sent, _) in model.pending.items())
        assert len(cache.entries()) + len(cache.resolving()) <= max_entries
        assert all(n <= max_queued for _, n, _ in cache.resolving())

        # poll_at is exactly the first instant at which a timer call does something.
        at = cache.poll_at()
        assert at == model.poll_at()
        quiet = ([], [], cache.counters)
        if at is None:
            assert observe(cache, now + 10 * (lifetime + retry)) == quiet
        elif at > now:
            assert observe(cache, at - 1) == quiet
            assert observe(cache, at) != quiet
        else:  # overdue: the caller has not run the timer calls yet
            assert observe(cache, now) != quiet
