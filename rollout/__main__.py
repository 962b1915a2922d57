"""`python -m rollout …` is the `rollout` console script."""

from __future__ import annotations

import sys

from rollout.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
