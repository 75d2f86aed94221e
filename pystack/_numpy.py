"""numpy, imported on first use.

pystack uses numpy only for byte buffers (the batch TAP buffers), never for
linear algebra.  Importing numpy starts OpenBLAS's thread pool, and importing
pystack must start no thread, so the modules that need numpy call
:func:`numpy` when they first build a buffer.  If numpy is not imported yet,
OpenBLAS is asked for a single thread unless the user chose a number
(OPENBLAS_NUM_THREADS is read once, when numpy first loads): idle pool
threads only add noise on the small machines pystack is measured on.
"""

import os
import sys


def numpy():
    """The numpy module, imported now if it was not yet."""
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import numpy as np

    return np
