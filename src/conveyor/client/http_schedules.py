"""The HTTP client's schedule methods, with the names and arguments of the engine's."""

from __future__ import annotations

from typing import Any, Callable
from urllib.parse import quote

from ..models import Schedule
from ..schedule_input import convert_sdk_values


class HTTPScheduleMethods:
    """Schedule calls over /v1/schedules; `HTTPClient` inherits them."""

    _request: Callable[..., Any]

    def create_schedule(
        self, name: str, queue: str, *, paused: bool = False, **fields: Any
    ) -> Schedule:
        """Store a new schedule that posts to `queue`; see Engine.create_schedule."""
        fields = convert_sdk_values(fields)
        body = {**fields, "name": name, "queue": queue, "paused": paused}
        return Schedule(**self._request("POST", "/schedules", body))

    def put_schedule(
        self, name: str, queue: str, *, source: str = "api", **fields: Any
    ) -> Schedule:
        """Create a schedule or replace its whole definition; idempotent."""
        fields = convert_sdk_values(fields)
        body = {**fields, "queue": queue, "source": source}
        return Schedule(**self._request("PUT", _schedule_path(name), body))

    def update_schedule(self, name: str, **changes: Any) -> Schedule:
        """Change some definition fields; a None value clears an optional one."""
        changes = convert_sdk_values(changes)
        return Schedule(**self._request("PATCH", _schedule_path(name), changes))

    def get_schedule(self, name: str) -> Schedule:
        return Schedule(**self._request("GET", _schedule_path(name)))

    def list_schedules(
        self,
        queue: str | None = None,
        source: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[Schedule]:
        """Return schedules by name, optionally only those of a queue or a source.

        `after` pages: pass the last name of the previous page.
        """
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = after
        if queue is not None:
            params["queue"] = queue
        if source is not None:
            params["source"] = source
        data = self._request("GET", "/schedules", params=params)
        return [Schedule(**item) for item in data["schedules"]]

    def pause_schedule(self, name: str) -> Schedule:
        return Schedule(**self._request("POST", _schedule_path(name, "pause")))

    def resume_schedule(self, name: str) -> Schedule:
        """Fire a paused schedule again; ticks missed meanwhile follow its catch-up policy."""
        return Schedule(**self._request("POST", _schedule_path(name, "resume")))

    def delete_schedule(self, name: str) -> None:
        """Delete a schedule and its recorded ticks; messages it posted stay."""
        self._request("DELETE", _schedule_path(name))

    def list_schedule_ticks(self, name: str, limit: int = 100) -> list[dict[str, Any]]:
        """Return a schedule's recorded ticks, newest first."""
        data = self._request("GET", _schedule_path(name, "ticks"), params={"limit": limit})
        return data["ticks"]


def _schedule_path(name: str, action: str | None = None) -> str:
    path = "/schedules/" + quote(str(name), safe="")
    return f"{path}/{action}" if action else path
