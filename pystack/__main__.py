"""``python -m pystack``: the same command as the ``pystack`` console script (:mod:`pystack.cli`)."""

import sys

from pystack.cli import main

if __name__ == "__main__":
    sys.exit(main())
