"""`python -m scripts.demo` (what `scripts/demo` runs): see devstack/demo/cli.py."""

import sys

from devstack.demo.cli import main

if __name__ == "__main__":
    sys.exit(main())
