"""`python -m scripts.svc start|stop|status NAME`: see devstack/services/cli.py."""

import sys

from devstack.services.cli import main

if __name__ == "__main__":
    sys.exit(main())
