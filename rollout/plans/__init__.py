"""Rollout plans bundled with the controller (YAML, loaded by `rollout.core.plan_loader`)."""

from __future__ import annotations

from pathlib import Path
from typing import Final

DEFAULT_PLAN_FILE: Final = "default.yaml"


def default_plan_path() -> Path:
    """The plan used when `ROLLOUT_PLAN` is not set: DESIGN.md §7 as YAML."""
    return Path(__file__).with_name(DEFAULT_PLAN_FILE)
