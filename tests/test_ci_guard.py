"""The CI guard itself: with CI=true a test needing a TAP or namespace never passes by skipping.

Each case runs a small test file beside a copy of our conftest, in a scratch
directory, as a separate pytest run with CI=true.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(tmp_path, body: str, ci: str = "true") -> subprocess.CompletedProcess:
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_case.py").write_text("import pytest\nfrom conftest import require\n\n" + body)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(tmp_path)],
        cwd=tmp_path, env={**os.environ, "CI": ci, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=120)


def test_marked_test_that_skips_fails_the_run(tmp_path):
    body = '@pytest.mark.netns\ndef test_x():\n    pytest.skip("pretend there is no namespace")\n'
    run = _run(tmp_path, body)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "skipped while CI=true" in run.stdout
    assert _run(tmp_path, body, ci="").returncode == 0  # outside CI a skip is a skip


def test_netns_fixture_users_are_marked_even_without_the_marker(tmp_path):
    body = ('@pytest.fixture\ndef netns():\n    pytest.skip("pretend there is no namespace")\n\n'
            'def test_x(netns):\n    pass\n')
    run = _run(tmp_path, body)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "test_case.py::test_x" in run.stdout


def test_unmet_requirement_fails_in_ci_and_skips_outside(tmp_path):
    body = 'def test_x():\n    require("needs a tool")\n'
    run = _run(tmp_path, body)
    assert run.returncode == 1 and "needs a tool: required when CI=true" in run.stdout, run.stdout
    assert _run(tmp_path, body, ci="").returncode == 0


def test_nothing_required_passes(tmp_path):
    assert _run(tmp_path, 'def test_x():\n    require(None)\n    require(False)\n').returncode == 0
