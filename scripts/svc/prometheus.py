"""`python -m scripts.svc.prometheus …`: see devstack/services/prometheus_cli.py."""

import sys

from devstack.services.prometheus_cli import main

if __name__ == "__main__":
    sys.exit(main())
