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
        return (
            f"shadow={'on' if self.shadow else 'off'} l2={'on' if self.l2 else 'off'} "
            f"l1={self.l1_percent}%"
        )
