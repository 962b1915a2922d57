"""The controller's HTTP API as the CLI speaks it: typed answers, one-line failures."""

from __future__ import annotations

from typing import Any, Final, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from rollout.cli.errors import EXIT_BAD_INPUT, CliError
from rollout.records import LogEntry
from rollout.runtime_types import CommandName
from rollout.settings import RolloutSettings
from rollout.status import StatusView

HTTP_TIMEOUT: Final = httpx.Timeout(10.0, connect=3.0)
_M = TypeVar("_M", bound=BaseModel)


class _History(BaseModel):
    entries: list[LogEntry]


class ControllerClient:
    def __init__(self, settings: RolloutSettings) -> None:
        self.base_url = settings.controller_url
        self._token = settings.api_token

    def status(self) -> StatusView:
        return _parsed(StatusView, self._get("/api/status"), "/api/status")

    def history(self, limit: int) -> list[LogEntry]:
        data = self._get(f"/api/history?limit={limit}")
        return _parsed(_History, data, "/api/history").entries

    def command(self, name: CommandName, body: dict[str, Any]) -> dict[str, Any]:
        """POST a command; the controller's answer, or CliError saying why it refused."""
        if self._token is None:
            raise CliError("ROLLOUT_API_TOKEN is not set: commands need the controller's "
                           "static token or a JWT with role operator", EXIT_BAD_INPUT)
        try:
            response = httpx.post(f"{self.base_url}/api/{name}", json=body,
                                  timeout=HTTP_TIMEOUT,
                                  headers={"Authorization": f"Bearer {self._token}"})
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach the controller at {self.base_url}: {exc} "
                           "(is `rollout run` up? set ROLLOUT_URL)") from None
        data = _json_or_text(response)
        if response.status_code == 200 and isinstance(data, dict):
            return data
        detail = data.get("detail") if isinstance(data, dict) else str(data)
        if response.status_code == 422 and isinstance(data, dict):
            problems = "; ".join(f"{e['field']}: {e['message']}"
                                 for e in data.get("errors", []))
            raise CliError(f"{detail}{': ' + problems if problems else ''}", EXIT_BAD_INPUT)
        if response.status_code == 401:
            raise CliError(f"unauthorized: {detail} (check ROLLOUT_API_TOKEN)")
        if response.status_code == 403:
            raise CliError(f"forbidden: {detail}")
        if response.status_code == 409:
            raise CliError(f"refused: {detail}")
        raise CliError(f"the controller answered {response.status_code}: {detail}")

    def _get(self, path: str) -> Any:
        try:
            response = httpx.get(f"{self.base_url}{path}", timeout=HTTP_TIMEOUT)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach the controller at {self.base_url}: {exc} "
                           "(unset ROLLOUT_URL to read the state from Redis)") from None
        data = _json_or_text(response)
        if response.status_code != 200:
            detail = data.get("detail") if isinstance(data, dict) else data
            raise CliError(f"the controller answered {response.status_code}: {detail}")
        return data


def _parsed(model: type[_M], data: Any, path: str) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise CliError(f"{path} answered something this CLI cannot read "
                       f"({exc.error_count()} problems; is the controller another "
                       "version?)") from None


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {"detail": response.text[:500]}
