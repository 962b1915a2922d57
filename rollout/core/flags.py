"""The flag settings a stage asks for: the one value the controller writes and compares."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FlagSettings:
    """Desired (or observed) state of the three rollout flags of DESIGN.md §3."""

    shadow: bool = False
    l2: bool = False
    l1_percent: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.l1_percent <= 100:
            raise ValueError(f"l1_percent must be within 0..100, got {self.l1_percent}")

    def describe(self) -> str:
        """The one way flag settings are written for people (logs, notes, CLI, page)."""
        return (
            f"shadow {'on' if self.shadow else 'off'} \u00b7 L2 {'on' if self.l2 else 'off'} "
            f"\u00b7 L1 {self.l1_percent} %"
        )
