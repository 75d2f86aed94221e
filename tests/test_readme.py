"""The README's runnable examples run and print what the README says they print.

Every ```python block followed by "prints" and a ``` block is run in a fresh
interpreter (none of them needs root: the socket example joins two stacks by
an in-memory pipe) and its output compared with the README's.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import pystack

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
EXAMPLES = re.findall(r"```python\n(.*?)```\n\nprints\n\n```\n(.*?)```", README, re.S)


def test_the_readme_has_its_examples():
    assert len(EXAMPLES) >= 2, "README lost a runnable example and the output it documents"


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_example_prints_what_the_readme_says(index):
    code, expected = EXAMPLES[index]
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    if index == 0:
        first, rest = expected.split("\n", 1)
        assert first == "c"  # the README shows the fast path; the pure package prints "py"
        expected = f"{pystack.IMPLEMENTATION}\n{rest}"
    assert run.stdout == expected
