"""The README's library example runs and prints what the README says it prints."""

import re
import subprocess
import sys
from pathlib import Path

import pystack

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_library_example_prints_what_the_readme_says():
    match = re.search(r"```python\n(.*?)```\n\nprints\n\n```\n(.*?)```", README, re.S)
    assert match, "README lost its example and the output it documents"
    code, expected = match.groups()
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    first, rest = expected.split("\n", 1)
    assert first == "c"  # the README shows the fast path; the pure package prints "py"
    assert run.stdout == f"{pystack.IMPLEMENTATION}\n{rest}"
