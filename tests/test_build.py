"""The package installs as pure Python when it cannot (or must not) build the fast path.

Each case copies the tracked source to a temporary directory, builds a wheel
there and installs it into a scratch target, so the checkout (and its
in-place extensions) is never involved.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _copy_source(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, check=True, timeout=60).stdout.split(b"\0")
    for name in filter(None, files):
        rel = Path(os.fsdecode(name))
        if not (ROOT / rel).is_file():
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dst / rel)


@pytest.mark.parametrize("env", [
    pytest.param({"PYSTACK_NO_EXTENSIONS": "1"}, id="PYSTACK_NO_EXTENSIONS"),
    pytest.param({"CC": "false", "LDSHARED": "false"}, id="no-compiler"),
])
def test_builds_pure_package(tmp_path, env):
    src, site = tmp_path / "src", tmp_path / "site"
    _copy_source(src)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(src)],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout + build.stderr
    assert "pure-Python package only" in build.stdout + build.stderr  # setup.py says which build it made
    [wheel] = tmp_path.glob("pystack-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.endswith(".so")], names
    assert "pystack/wire/_checksum_py.py" in names

    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    # -S: no site-packages, so the checkout's editable install (whose import
    # hook would find the in-tree extensions by name) cannot leak in.
    probe = subprocess.run(
        [sys.executable, "-S", "-c",
         "import pystack, pystack.wire.checksum as c, pystack.wire.headers, pystack.storage.assembler; "
         "print(pystack.IMPLEMENTATION, c.checksum(bytes.fromhex('4500007300004000401100' '00c0a80001c0a800c7')))"],
        env={**{k: v for k, v in os.environ.items() if k != "PYSTACK_NO_EXTENSIONS"}, "PYTHONPATH": str(site)},
        cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == ["py", str(0xB861)]
