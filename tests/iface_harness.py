"""Shared pieces of the sans-I/O interface tests (tests/iface, tests/socket).

An interface A (10.77.0.1) under test and its peer P (10.77.0.2) on the same
link; ``make()`` builds A with P's MAC known; the ``impl`` fixture runs a
test once with the pure and once with the Cython frame parse/emit (ids py and
c). Import the fixtures by name into a test module to use them.
"""

from __future__ import annotations

import pytest

from conftest import implementations
from pystack.iface import interface as interface_mod
from pystack.iface.interface import Interface, InterfaceConfig
from pystack.wire.ipv4 import ip_from_str

A_MAC = bytes.fromhex("020000000001")  # the interface under test
A_IP = ip_from_str("10.77.0.1")
P_MAC = bytes.fromhex("020000000002")  # its peer on the link
P_IP = ip_from_str("10.77.0.2")
SUBNET_BCAST = ip_from_str("10.77.0.255")
SEC = 1_000_000

headers_impl = implementations("headers", "pystack.wire._headers_py")


@pytest.fixture
def impl(headers_impl, monkeypatch):
    """Run a test with the pure and with the Cython fast path (ids py and c)."""
    monkeypatch.setattr(interface_mod, "parse_frame", headers_impl.parse_frame)
    monkeypatch.setattr(interface_mod, "emit_udp", headers_impl.emit_udp)
    return headers_impl


def make(peer_known: bool = True, **overrides) -> Interface:
    """Interface A (overrides go to InterfaceConfig), with P's MAC in its cache unless peer_known is False."""
    cfg = dict(mac=A_MAC, ip=A_IP, prefix_len=24)
    cfg.update(overrides)
    iface = Interface(InterfaceConfig(**cfg))
    if peer_known:
        iface.neighbors.add_static(P_IP, P_MAC)
    return iface
