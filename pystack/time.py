"""Time in pystack: integer microseconds, passed in.

Nothing below the runtime reads a clock.  Every call that depends on time
takes ``now``, an int of microseconds from any fixed origin (the runtime uses
``time.monotonic_ns() // 1000``; tests use a manual clock), and each part
answers ``poll_at()`` with the next instant it needs a call.  Integers are
exact and cheap, so no Instant/Duration classes stand in the hot path.
"""

from __future__ import annotations


def advance(previous: int | None, now) -> int:
    """``now``, checked as the next instant after ``previous`` (None: the first call).

    TypeError unless ``now`` is an int; ValueError if it goes backwards,
    which the sans-I/O parts rely on never happening (their timer queues are
    kept in order of ``now``).
    """
    if type(now) is not int:
        raise TypeError(f"now must be an int of microseconds, not {type(now).__name__}")
    if previous is not None and now < previous:
        raise ValueError(f"now went backwards: {now} < {previous}")
    return now
