"""Chooses, once, between the Cython fast path and its pure-Python twins.

Every hot module has two implementations with one API: a pure-Python twin
(``pystack/<pkg>/_<name>_py.py``) and a Cython module ``pystack._fast.<name>``.
The facade modules (``pystack.wire.checksum``, ``pystack.wire.headers``,
``pystack.storage.assembler``, ``pystack.phy.tapio``) call :func:`select` and
re-export the chosen one.

The choice is all or nothing and made at first import: the fast path is used
only when *every* extension in :data:`FAST_MODULES` imports, so the stack
never runs a mix of the two.  Pure wins when in doubt.  ``PYSTACK_NO_EXTENSIONS=1``
forces pure.  :data:`IMPLEMENTATION` says which one is active (``"c"`` or
``"py"``) and :data:`REASON` why.

Both implementations stay reachable by name for tests and benchmarks:
:func:`fast_module` imports the extension directly, whatever was chosen.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

#: The Cython extensions; each has a pure twin with the same API.
FAST_MODULES = ("checksum", "headers", "assembler", "tapio")


def fast_module(name: str) -> ModuleType:
    """Import ``pystack._fast.<name>`` (raises ImportError when it is not built)."""
    if name not in FAST_MODULES:
        raise ValueError(f"unknown fast-path module {name!r}; known: {', '.join(FAST_MODULES)}")
    return importlib.import_module(f"pystack._fast.{name}")


def _choose() -> tuple[str, dict[str, ModuleType], str]:
    if os.environ.get("PYSTACK_NO_EXTENSIONS", "") not in ("", "0"):
        return "py", {}, "PYSTACK_NO_EXTENSIONS is set"
    loaded = {}
    for name in FAST_MODULES:
        try:
            loaded[name] = fast_module(name)
        except Exception as exc:  # ImportError, or a broken build (ABI mismatch...): pure wins
            return "py", {}, f"pystack._fast.{name} did not import ({exc.__class__.__name__}: {exc})"
    return "c", loaded, "all fast-path extensions imported"


IMPLEMENTATION, _LOADED, REASON = _choose()


def select(name: str, pure: ModuleType) -> ModuleType:
    """The module a facade should re-export for fast-path module ``name``."""
    if name not in FAST_MODULES:
        raise ValueError(f"unknown fast-path module {name!r}")
    return _LOADED.get(name, pure)
