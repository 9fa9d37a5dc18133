"""The SDK's queue clients: pick a transport from a URL with `connect`.

`connect("sqlite:///path.db")` returns an in-process `Engine` on the store
file; `connect("http://host:port")` returns an `HTTPClient` for a running
`conveyor server`. Both have the same methods (create_queue, update_queue,
pause_queue, resume_queue, get_queue, list_queues, delete_queue,
purge_queue, post, reserve, ack, nack, touch, complete, progress, cancel,
redrive, start_redrive_job, list_redrive_jobs, get_redrive_job,
cancel_redrive_job, breaker, force_breaker, peek, get_message, get_result,
get_logs, stats, create_schedule, put_schedule, update_schedule,
get_schedule, list_schedules, pause_schedule, resume_schedule,
delete_schedule, list_schedule_ticks, close) with the same arguments,
return types and exceptions. An in-process Engine stores redrive jobs and
schedules but runs them only when opened with redrive_jobs=True and
schedules=True, as `conveyor server` does.
"""

from __future__ import annotations

import os
from typing import Union

from ..engine import Engine
from ..errors import ValidationError
from .http import DEFAULT_TIMEOUT_S, HTTPClient, redact_url

Client = Union[Engine, HTTPClient]

TOKEN_ENV = "CONVEYOR_TOKEN"


def connect(
    url: str, token: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
) -> Client:
    """Open a queue client for a store or server URL.

    `sqlite:///relative.db` and `sqlite:////absolute.db` open the store file
    in this process (the token and timeout are not used). `http://` and
    `https://` URLs reach a server; the token defaults to $CONVEYOR_TOKEN
    and `timeout_s` bounds connecting and each read. The caller closes the
    client.
    """
    if not isinstance(url, str):
        raise ValidationError(f"invalid Conveyor URL {url!r}: expected a string")
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        return Engine(url)
    if scheme in ("http", "https"):
        return HTTPClient(
            url, token=token or os.environ.get(TOKEN_ENV) or None, timeout_s=timeout_s
        )
    raise ValidationError(
        f"invalid Conveyor URL {redact_url(url)!r}: use http://HOST:PORT for a server or "
        "sqlite:///path/to/file.db for a store file"
    )


__all__ = ["Client", "HTTPClient", "connect"]
