"""A wrapper that logs one line per frame crossing a device: ``rx <summary>`` / ``tx <summary>``.

The summary is :func:`pystack.wire.pretty.summarize` (which never raises);
this module does not parse frames itself.  Tracing costs one ``isEnabledFor`` check per batch
when the level is off: no summary is built and nothing is formatted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from pystack.phy.device import Device, Wrapper

TRACE_LOGGER = "pystack.trace"


def _length_only(frame) -> str:
    return f"{len(frame)} bytes"


class Tracer(Wrapper):
    """Logs every frame ``inner`` receives, and every frame it takes for transmission."""

    def __init__(self, inner: Device, logger: logging.Logger | None = None, level: int = logging.DEBUG) -> None:
        super().__init__(inner)
        self.logger = logger if logger is not None else logging.getLogger(TRACE_LOGGER)
        self.level = level
        self._summarize: Callable | None = None

    def _summary(self, frame) -> str:
        summarize = self._summarize
        if summarize is None:
            # Imported on first use, not at module import, so tracing never
            # makes phy/ depend on wire/ being importable; resolved once per
            # Tracer, since a failed import is not cached by Python and would
            # be retried (with a path search) on every frame.
            try:
                from pystack.wire.pretty import summarize
            except ImportError:
                summarize = _length_only
            self._summarize = summarize
        return summarize(frame)

    def receive(self, now: int) -> list:
        frames = self.inner.receive(now)
        if frames and self.logger.isEnabledFor(self.level):
            log, level, summary = self.logger.log, self.level, self._summary
            for frame in frames:
                log(level, "rx %s", summary(frame))
        return frames

    def transmit(self, frames: Sequence, now: int) -> int:
        taken = self.inner.transmit(frames, now)
        if taken and self.logger.isEnabledFor(self.level):
            log, level, summary = self.logger.log, self.level, self._summary
            for i in range(taken):
                log(level, "tx %s", summary(frames[i]))
        return taken
