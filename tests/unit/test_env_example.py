"""`.env.example` names every setting of the service and of the controller, and loads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.settings import Settings
from devstack.paths import REPO_ROOT
from rollout.settings import RolloutSettings

EXAMPLE = REPO_ROOT / ".env.example"


def named() -> set[str]:
    return set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)[=:]", EXAMPLE.read_text(), re.MULTILINE))


@pytest.mark.parametrize("model", [Settings, RolloutSettings])
def test_every_setting_is_in_the_example(model: type[Settings] | type[RolloutSettings]) -> None:
    missing = {name.upper() for name in model.model_fields} - named()
    assert not missing, f"add to .env.example: {sorted(missing)}"


def test_the_example_loads_and_satisfies_rollout_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in named():
        monkeypatch.delenv(name, raising=False)
    Settings(_env_file=EXAMPLE)
    controller = RolloutSettings(_env_file=EXAMPLE)
    assert controller.missing_for_run() == []
