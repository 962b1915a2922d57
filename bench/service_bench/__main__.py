"""Keeps `python -m bench.service_bench` working now that the benchmark is a package."""

import sys

from bench.service_bench.cli import main

sys.exit(main())
