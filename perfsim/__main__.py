"""``python -m perfsim``: the same as the ``perfsim`` console script."""

import sys

from perfsim.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
