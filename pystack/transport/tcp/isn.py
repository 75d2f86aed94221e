"""Initial sequence numbers (RFC 6528) and per-connection timestamp offsets.

Owns the one secret a TCP layer keeps for the life of the stack and the two
values derived from it per connection:

* the ISN, RFC 6528 §3: ``ISN = M + F(localip, localport, remoteip,
  remoteport, secretkey)`` where M is a clock ticking every 4 µs (RFC 9293
  §3.4.1, MUST-8: a clock-driven ISN) and F a keyed hash, here BLAKE2s keyed
  with a random 16-byte secret (RFC 6528 §3 asks for a keyed PRF such as
  MD5 with a secret; BLAKE2's keyed mode is one, in ``hashlib``).  So each
  4-tuple walks its own sequence space and an off-path attacker cannot
  predict it (MUST-9 via RFC 6528);
* the TSval offset of RFC 7323 §5.4 / §7.1 ("a random offset per
  connection"), from the same key with another personalisation, so the
  timestamp clock reveals nothing about uptime.

A test or a replayed simulation passes a fixed ``secret`` and gets the same
numbers every run.  Pure: ``now`` comes in, nothing reads a clock.
"""

from __future__ import annotations

import hashlib
import os
import struct

_TUPLE = struct.Struct("!IHIH")
_MASK = 0xFFFFFFFF

#: RFC 9293 §3.4.1: the ISN clock's low bit changes every 4 microseconds.
ISN_TICK_US = 4


class IsnGenerator:
    """ISNs and timestamp offsets for 4-tuples, keyed by one per-stack secret."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes | None = None) -> None:
        if secret is None:
            secret = os.urandom(16)
        if not isinstance(secret, (bytes, bytearray)) or not 1 <= len(secret) <= 32:
            raise ValueError("secret must be 1 to 32 bytes (a BLAKE2s key)")
        self._secret = bytes(secret)

    def _f(self, person: bytes, lip: int, lport: int, rip: int, rport: int) -> int:
        h = hashlib.blake2s(_TUPLE.pack(lip, lport, rip, rport), digest_size=4, key=self._secret,
                            person=person)
        return int.from_bytes(h.digest(), "big")

    def isn(self, now: int, lip: int, lport: int, rip: int, rport: int) -> int:
        """RFC 6528 §3: M (``now`` in 4 µs ticks) + F(4-tuple, secret), mod 2**32."""
        return (now // ISN_TICK_US + self._f(b"isn", lip, lport, rip, rport)) & _MASK

    def ts_offset(self, lip: int, lport: int, rip: int, rport: int) -> int:
        """A per-connection TSval offset (RFC 7323 §5.4, §7.1)."""
        return self._f(b"tsoff", lip, lport, rip, rport)
