"""The implementation switch: pure on request, fast when expected."""

import os
import subprocess
import sys

import pytest

from conftest import EXPECT_EXTENSIONS
from pystack import _accel


def _implementation_in_subprocess(**env):
    out = subprocess.run(
        [sys.executable, "-c", "import pystack; print(pystack.IMPLEMENTATION)"],
        env={**os.environ, **env}, capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.strip()


def test_extensions_loaded_when_expected():
    """The guard: CI (or PYSTACK_EXPECT_EXTENSIONS=1) must run the Cython fast path."""
    if not EXPECT_EXTENSIONS:
        pytest.skip("extensions not expected (set PYSTACK_EXPECT_EXTENSIONS=1 or CI=true)")
    assert _accel.IMPLEMENTATION == "c", f"fast path expected but not active: {_accel.REASON}"
    for name in _accel.FAST_MODULES:
        assert _accel.fast_module(name).__file__.endswith(".so")


def test_env_var_forces_pure():
    assert _implementation_in_subprocess(PYSTACK_NO_EXTENSIONS="1") == "py"


def test_select_refuses_unknown_module():
    with pytest.raises(ValueError, match="unknown fast-path module"):
        _accel.select("nope", _accel)


def test_import_opens_nothing_and_starts_no_thread():
    """ARCHITECTURE: importing pystack (every facade included) starts no thread."""
    code = ("import os, sys, pystack, pystack.wire.checksum, pystack.wire.headers, "
            "pystack.storage.assembler, pystack.phy.tapio; "
            "print(len(os.listdir('/proc/self/task')), 'numpy' in sys.modules, len(os.listdir('/proc/self/fd')))")
    baseline = subprocess.run([sys.executable, "-c", "import os; print(len(os.listdir('/proc/self/fd')))"],
                              capture_output=True, text=True, check=True, timeout=60).stdout.split()
    threads, numpy_loaded, fds = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout.split()
    assert threads == "1"
    assert numpy_loaded == "False"  # numpy's import would start OpenBLAS threads
    assert fds == baseline[0]
