"""The one error the tooling raises for a service it could not install, start or reach."""

from __future__ import annotations


class ServiceError(RuntimeError):
    """A service could not be installed, started or reached."""
