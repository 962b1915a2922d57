"""Errors of the database layer, shared by the notes repository and the outbox."""

from __future__ import annotations


class DatabaseError(Exception):
    """The notes database failed; the request cannot be answered correctly."""
