"""One helper the benchmark modules share: print a module's summary lines after its run.

pytest captures output during a test; a module-scoped fixture's teardown calls
:func:`write_summary` to put its ratios under the pytest-benchmark table.
"""

from __future__ import annotations

import contextlib


def write_summary(request, prefix: str, lines: list[str]) -> None:
    """Write ``lines`` (each prefixed, e.g. "tcp benchmark: ") to the terminal, bypassing capture."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if not lines or reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        reporter.write_line("")
        for line in lines:
            reporter.write_line(prefix + line)
