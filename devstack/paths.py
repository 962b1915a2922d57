"""Where the tooling finds the repository and keeps its run state (pid files, logs)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# AI_CACHE_RUN_DIR: tests that drive `python -m scripts.svc` point it at a temporary folder,
# so their state files never meet a developer's .run/.
RUN_DIR = Path(os.environ.get("AI_CACHE_RUN_DIR", REPO_ROOT / ".run"))
LOG_DIR = RUN_DIR / "logs"
