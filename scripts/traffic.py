"""`python -m scripts.traffic …`: see devstack/traffic/cli.py."""

import sys

from devstack.traffic.cli import main

if __name__ == "__main__":
    sys.exit(main())
