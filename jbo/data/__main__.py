"""``python -m jbo.data ...``: the same parser as ``jbo data ...`` (:mod:`jbo.cli`)."""

import sys

from jbo.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", *sys.argv[1:]]))
