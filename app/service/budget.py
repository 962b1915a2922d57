"""A token bucket: at most `per_second` events a second, in bursts of at most one second's
worth. Pure: the caller passes the time in."""

from __future__ import annotations


class RateBudget:
    def __init__(self, per_second: float, now: float) -> None:
        """`per_second <= 0` means no limit."""
        self._rate = per_second
        self._capacity = max(per_second, 1.0)
        self._tokens = self._capacity
        self._at = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one (refilled for the time since the last call)."""
        if self._rate <= 0:
            return True
        self._tokens = min(self._capacity, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True
