"""The CI guard itself: with CI=true a skipped namespace test fails the run."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_skipped_netns_test_fails_the_run_in_ci():
    # The same namespace tests, run as `nobody`, skip ("needs root"): in CI that must fail.
    run = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-m", "netns",
         "tests/test_kernel_frames.py"],
        cwd=ROOT, env={**os.environ, "CI": "true"}, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "skipped while CI=true" in run.stdout
    assert "skipped" in run.stdout.splitlines()[-1]
