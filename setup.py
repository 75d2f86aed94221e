"""Build script: declares the Cython fast path and says which build it made.

Every ``pystack/_fast/*.pyx`` becomes an extension ``pystack._fast.<name>``.
The extensions are optional: with ``PYSTACK_NO_EXTENSIONS=1``, without Cython,
or without a working C compiler, the package installs pure Python and the
pure twins (``pystack/**/_*_py.py``) are used.  The last line the build prints
says which of the two it made, and why.

The extensions are compiled with ``-g -fno-omit-frame-pointer`` (and never
stripped) so ``perf record -g`` resolves their functions and call chains.
"""

import glob
import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
NO_EXTENSIONS = os.environ.get("PYSTACK_NO_EXTENSIONS", "") not in ("", "0")
CFLAGS = ["-O2", "-g", "-fno-omit-frame-pointer", "-Wno-unused-function"]


def _say(msg):
    # Printed to stderr so it shows through pip's output with -v and in build logs.
    print(f"pystack setup: {msg}", file=sys.stderr)


def _extensions():
    if NO_EXTENSIONS:
        _say("PYSTACK_NO_EXTENSIONS is set: building the pure-Python package only")
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        _say("Cython is not installed: building the pure-Python package only")
        return []
    from setuptools import Extension

    # Relative paths (setuptools wants them), found from this file, not the cwd.
    os.chdir(HERE)
    sources = sorted(glob.glob(os.path.join("pystack", "_fast", "*.pyx")))
    only = os.environ.get("PYSTACK_ONLY")  # developer aid: build just these (comma-separated)
    if only:
        wanted = set(only.split(","))
        sources = [s for s in sources if os.path.splitext(os.path.basename(s))[0] in wanted]
    exts = [
        Extension(
            "pystack._fast." + os.path.splitext(os.path.basename(src))[0],
            [src],
            extra_compile_args=CFLAGS,
            extra_link_args=["-g"],
        )
        for src in sources
    ]
    return cythonize(
        exts,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "embedsignature": True,
        },
    )


class OptionalBuildExt(build_ext):
    """Build every extension or none, and report which happened.

    A partial fast path would be worse than none: ``pystack._accel`` uses the
    extensions only when all of them import, so one failure means pure Python.
    """

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler, missing headers, ...
            self._fail(exc)
            return
        _say("built the Cython fast path: " + ", ".join(e.name for e in self.extensions))

    def _fail(self, exc):
        _say(f"could not build the Cython fast path ({exc.__class__.__name__}: {exc}); "
             "installing the pure-Python package only")
        for ext in self.extensions:
            try:
                os.remove(self.get_ext_fullpath(ext.name))
            except OSError:
                pass


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
