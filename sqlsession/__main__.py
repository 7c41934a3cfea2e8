"""``python -m sqlsession``: the same as the ``sqlsession`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
