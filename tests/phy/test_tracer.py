"""Tracer: one log line per frame, nothing formatted when the level is off."""

from __future__ import annotations

import logging
import types

import pytest

from pystack.phy.pipe import Pipe
from pystack.phy.tracer import Tracer


@pytest.fixture
def fake_pretty(monkeypatch):
    """Stand in for pystack.wire.pretty, counting the summaries it builds."""
    calls = []

    def summarize(frame):
        calls.append(bytes(frame))
        return f"summary of {bytes(frame)[:4].hex()}"

    module = types.ModuleType("pystack.wire.pretty")
    module.summarize = summarize
    monkeypatch.setitem(__import__("sys").modules, "pystack.wire.pretty", module)
    return calls


def test_one_line_per_frame_each_way(fake_pretty, caplog):
    pipe = Pipe()
    dev = Tracer(pipe.a)
    caplog.set_level(logging.DEBUG, logger="pystack.trace")
    assert dev.transmit([b"\x01" * 60, b"\x02" * 60], 0) == 2
    pipe.b.transmit([b"\x03" * 60], 0)
    assert dev.receive(0) == [b"\x03" * 60]
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("pystack.trace", logging.DEBUG, "tx summary of 01010101"),
        ("pystack.trace", logging.DEBUG, "tx summary of 02020202"),
        ("pystack.trace", logging.DEBUG, "rx summary of 03030303"),
    ]


def test_only_frames_taken_are_traced(fake_pretty, caplog):
    pipe = Pipe(capacity=1)
    dev = Tracer(pipe.a)
    caplog.set_level(logging.DEBUG, logger="pystack.trace")
    assert dev.transmit([b"\x01" * 60, b"\x02" * 60], 0) == 1
    assert [r.getMessage() for r in caplog.records] == ["tx summary of 01010101"]


def test_nothing_formatted_when_disabled(fake_pretty, caplog):
    pipe = Pipe()
    dev = Tracer(pipe.a)
    caplog.set_level(logging.INFO, logger="pystack.trace")
    dev.transmit([b"\x01" * 60] * 3, 0)
    pipe.b.transmit([b"\x02" * 60] * 3, 0)
    dev.receive(0)
    assert fake_pretty == []
    assert caplog.records == []


def test_custom_logger_and_level(fake_pretty, caplog):
    logger = logging.getLogger("test.tracer.custom")
    pipe = Pipe()
    dev = Tracer(pipe.a, logger=logger, level=logging.INFO)
    caplog.set_level(logging.INFO, logger="test.tracer.custom")
    dev.transmit([b"\x07" * 60], 0)
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("test.tracer.custom", logging.INFO, "tx summary of 07070707")]


def test_real_summaries(caplog):
    pytest.importorskip("pystack.wire.pretty")
    pipe = Pipe()
    dev = Tracer(pipe.a)
    caplog.set_level(logging.DEBUG, logger="pystack.trace")
    arp = bytes.fromhex("ffffffffffff 020000000001 0806 0001 0800 06 04 0001"
                        "020000000001 0a4d0001 000000000000 0a4d0002") + bytes(18)
    dev.transmit([arp], 0)
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("tx 02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff") and "10.77.0.2" in line


def test_falls_back_to_length_when_pretty_is_missing(monkeypatch, caplog):
    monkeypatch.setitem(__import__("sys").modules, "pystack.wire.pretty", None)  # import raises ImportError
    pipe = Pipe()
    dev = Tracer(pipe.a)
    caplog.set_level(logging.DEBUG, logger="pystack.trace")
    dev.transmit([b"\x01" * 60], 0)
    assert [r.getMessage() for r in caplog.records] == ["tx 60 bytes"]


def test_forwards_poll_at_mtu_close():
    pipe = Pipe(mtu=1280, latency=5)
    dev = Tracer(pipe.a)
    pipe.b.transmit([b"x" * 60], 0)
    assert dev.mtu == 1280 and dev.poll_at() == 5
    dev.close()
    assert pipe.a.closed
