from __future__ import annotations

import pytest

from app.flags.base import FlagSnapshot
from app.flags.local import parse_local_flags


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, FlagSnapshot(False, False, 0, "local")),
        (
            {b"shadow": b"1", b"l2": b"1", b"l1_percent": b"50"},
            FlagSnapshot(True, True, 50, "local"),
        ),
        ({"shadow": "1", "l2": "0", "l1_percent": "10"}, FlagSnapshot(True, False, 10, "local")),
        ({b"shadow": b"yes", b"l2": b"true"}, FlagSnapshot(False, False, 0, "local")),
        ({b"l1_percent": b"150"}, FlagSnapshot(False, False, 0, "local")),
        ({b"l1_percent": b"-1"}, FlagSnapshot(False, False, 0, "local")),
        ({b"l1_percent": b"ten"}, FlagSnapshot(False, False, 0, "local")),
        ({b"l1_percent": b" 100 "}, FlagSnapshot(False, False, 100, "local")),
    ],
    ids=["empty", "all-on", "str-fields", "non-numeric-booleans", "over-100", "negative",
         "garbage-percent", "padded"],
)
def test_unknown_or_malformed_fields_mean_off(fields: dict, expected: FlagSnapshot) -> None:
    assert parse_local_flags(fields) == expected
