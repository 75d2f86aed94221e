"""Shared test machinery.

* Both implementations of every fast-path module run in one pytest run, with
  ids ``py`` and ``c`` (see :func:`implementations`).  When the extensions are
  expected (``CI=true`` or ``PYSTACK_EXPECT_EXTENSIONS=1``) a ``c`` case whose
  extension does not import *fails*; otherwise it is skipped.
* Tests marked ``netns`` need root and /dev/net/tun; they create their own
  network namespace.  When ``CI=true`` a skipped ``netns`` test fails the run.
"""

from __future__ import annotations

import importlib
import os

import pytest

from pystack import _accel


def truthy(name: str) -> bool:
    return os.environ.get(name, "").lower() not in ("", "0", "false", "no")


IN_CI = truthy("CI")
EXPECT_EXTENSIONS = (IN_CI or truthy("PYSTACK_EXPECT_EXTENSIONS")) and not truthy("PYSTACK_NO_EXTENSIONS")


def load_implementation(kind: str, name: str, pure_module: str):
    """The ``py`` twin (``pure_module``) or the ``c`` extension ``pystack._fast.<name>``."""
    if kind == "py":
        return importlib.import_module(pure_module)
    try:
        return _accel.fast_module(name)
    except ImportError as exc:
        if EXPECT_EXTENSIONS:
            pytest.fail(f"pystack._fast.{name} was expected but did not import: {exc}")
        pytest.skip(f"pystack._fast.{name} is not built ({exc})")


def implementations(name: str, pure_module: str):
    """Make a fixture parametrized over both implementations of fast-path module ``name``.

    Usage in a test module::

        checksum = implementations("checksum", "pystack.wire._checksum_py")

        def test_x(checksum): ...
    """

    @pytest.fixture(params=["py", "c"], name=f"{name}_impl")
    def fixture(request):
        return load_implementation(request.param, name, pure_module)

    return fixture


def require(missing: str | None) -> None:
    """Skip the test for an unmet need of the environment (root, /dev/net/tun, a
    tool ci/common.sh installs) -- except in CI, where every such need is met by
    construction and an unmet one fails the test instead of hiding it."""
    if missing:
        if IN_CI:
            pytest.fail(f"{missing}: required when CI=true")
        pytest.skip(missing)


def netns_available() -> str | None:
    """None when namespace tests can run here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "needs root"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun"
    return None


@pytest.fixture
def netns():
    """A fresh network namespace, removed when the test ends (also on failure)."""
    require(netns_available())
    from pystack.runtime.netns import NetNamespace

    with NetNamespace() as ns:
        yield ns


# -- fail the run when a namespace test was skipped in CI --------------------


def pytest_collection_modifyitems(config, items):
    # A test that takes the netns fixture needs a namespace whether or not its
    # author remembered the marker.
    for item in items:
        if "netns" in getattr(item, "fixturenames", ()) and item.get_closest_marker("netns") is None:
            item.add_marker(pytest.mark.netns)


_skipped_netns: list[str] = []


def pytest_configure(config):
    # SIGTERM (a CI timeout, `kill`) would end the run without unwinding: the
    # namespaces, TAPs and daemons the fixtures made would stay.  Turned into
    # KeyboardInterrupt, pytest stops the way it does on Ctrl-C and every
    # fixture's teardown runs.
    import signal

    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        pid = os.getpid()

        def interrupt(signum, frame):
            if os.getpid() != pid:
                # A forked child (pyroute2 forks to make a namespace, then ends the
                # child with SIGTERM): it must die as before, not unwind pytest's
                # copy of the fixtures -- that would remove the parent's namespaces.
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
            raise KeyboardInterrupt(f"signal {signum}")

        signal.signal(signal.SIGTERM, interrupt)


def pytest_runtest_logreport(report):
    if report.skipped and "netns" in report.keywords:
        _skipped_netns.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if IN_CI and _skipped_netns:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if IN_CI and _skipped_netns:
        terminalreporter.section("tests needing a TAP device or network namespace were skipped", red=True)
        terminalreporter.write_line(f"FAILED: {len(_skipped_netns)} such test(s) skipped while CI=true:", red=True)
        for nodeid in _skipped_netns:
            terminalreporter.write_line(f"  {nodeid}")
