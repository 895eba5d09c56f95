"""`python -m services.sandbox [NAME ...] [options]`: the same as `ferry sandbox`.

With no NAME it runs `all`, which is what `ferry up --sandbox` starts. It needs no broker.
"""

import sys

from services.sandbox.cli import main

if __name__ == "__main__":
    sys.exit(main())
