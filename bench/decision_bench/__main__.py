"""`python -m bench.decision_bench`."""

import sys

from bench.decision_bench.cli import main

sys.exit(main())
