"""The demo leaves the checkout as it found it: its chart goes under .run/demo unless
--write-docs asks for the README's figure."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.demo.cli import parse_args
from devstack.demo.outcome import chart_path_for
from devstack.demo.profiles import DEFAULT_CHART, DEMO_DIR


@pytest.mark.parametrize(("argv", "expected"), [
    ([], DEMO_DIR / "rollout-demo.png"),
    (["--fault"], DEMO_DIR / "rollout-demo-fault.png"),
    (["--write-docs"], DEFAULT_CHART),
    (["--write-docs", "--fault"], DEMO_DIR / "rollout-demo-fault.png"),
    (["--chart", "/tmp/x.png", "--write-docs"], Path("/tmp/x.png")),
])
def test_the_chart_goes_to_docs_only_when_asked(argv: list[str], expected: Path) -> None:
    args, _ = parse_args(argv)
    assert chart_path_for(args) == expected
