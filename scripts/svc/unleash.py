"""`python -m scripts.svc.unleash …`: see devstack/services/unleash_cli.py."""

import sys

from devstack.services.unleash_cli import main

if __name__ == "__main__":
    sys.exit(main())
