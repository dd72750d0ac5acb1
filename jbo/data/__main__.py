"""``python -m jbo.data ...``: see :mod:`jbo.data.cli`."""

import sys

from jbo.data.cli import main

if __name__ == "__main__":
    sys.exit(main())
