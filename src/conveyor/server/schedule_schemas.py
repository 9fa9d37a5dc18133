"""Pydantic models of the schedule endpoints' requests and responses.

They describe the endpoints in the OpenAPI document and check the JSON
types of request bodies. The engine checks the values (cron syntax, time
zones, ranges) and names the fix.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from .schemas import StrictModel

CatchUp = Literal["skip", "once", "all"]
Source = Literal["api", "code"]


class ScheduleFields(StrictModel):
    """The definition fields of a schedule; which are required depends on the request."""

    cron: str | None = Field(
        None,
        description="Five-field cron expression (minute hour day-of-month month "
        "day-of-week), read in `timezone`; exclusive with interval_s",
    )
    timezone: str | None = Field(
        None, description="IANA time zone of `cron`, e.g. Europe/Berlin; default UTC"
    )
    interval_s: float | None = Field(
        None, description="Seconds between ticks, at least 1, counted from start_at"
    )
    start_at: float | None = Field(
        None, description="First instant a tick may have; default: creation time"
    )
    end_at: float | None = Field(None, description="Last instant a tick may have")
    max_runs: int | None = Field(None, description="Finish after this many posted ticks")
    catch_up: CatchUp | None = Field(
        None,
        description="Ticks missed while no server ran: skip (default) fires none, "
        "once fires one message for all, all fires each up to catch_up_limit",
    )
    catch_up_limit: int | None = Field(
        None, description="With catch_up all: fire at most this many, the newest; default 100"
    )
    grace_s: float | None = Field(
        None,
        description="Misfire grace in seconds, 0 to 86400: a tick fired at most this "
        "late is on time; later ones follow catch_up; default 60",
    )
    body: Any = Field(None, description="The message body: any JSON value, at most 64 KiB")
    headers: dict[str, str] | None = Field(None, description="Message headers")
    priority: int | None = Field(None, description="-1000 to 1000; higher is delivered first")
    group: str | None = Field(None, description="FIFO group; required on fifo queues")
    delay_s: float | None = Field(None, description="Delay of each message after its tick")
    retention_s: float | None = Field(None, description="Shorter retention than the queue's")
    max_attempts: int | None = Field(None, description="Overrides the queue's max_attempts")


class CreateScheduleRequest(ScheduleFields):
    name: str = Field(description="1 to 80 letters, digits, '_', '.' or '-'")
    queue: str = Field(description="The queue each tick posts to; it must exist")
    paused: bool = Field(False, description="Store the schedule paused")


class PutScheduleRequest(ScheduleFields):
    queue: str = Field(description="The queue each tick posts to; it must exist")
    source: Source = Field(
        "api", description="code for schedules that code declares with @app.periodic"
    )


class UpdateScheduleRequest(ScheduleFields):
    queue: str | None = Field(None, description="Post to this queue from now on")


class ScheduleModel(BaseModel):
    """A stored schedule; `message` is the template of the messages it posts."""

    name: str
    queue: str
    cron: str | None
    timezone: str
    interval_s: float | None
    start_at: float
    end_at: float | None
    max_runs: int | None
    catch_up: CatchUp
    catch_up_limit: int
    grace_s: float = Field(description="A tick fired at most this many seconds late is on time")
    message: dict[str, Any] = Field(
        description="body, headers, priority, group, delay_s, retention_s, max_attempts"
    )
    source: Source
    paused: bool
    state: Literal["active", "paused", "finished"]
    run_count: int = Field(description="Ticks that posted a message")
    last_fire_at: float | None = Field(description="The last tick that fired")
    next_fire_at: float | None = Field(description="The next tick; null when finished")
    last_error: str | None = Field(description="Why the last tick posted nothing")
    created_at: float
    updated_at: float
    next_fire_times: list[float] = Field(description="The next few ticks")


class ScheduleList(BaseModel):
    schedules: list[ScheduleModel] = Field(description="By name")
    next_cursor: str | None = Field(
        description="Pass as `after` for the next page; null on the last page"
    )


class ScheduleDeleted(BaseModel):
    name: str
    deleted: bool


class ScheduleTickModel(BaseModel):
    tick_at: float = Field(description="The instant the tick is for")
    fired_at: float = Field(description="When a server fired it")
    message_id: str | None = Field(description="The posted message; null if the post failed")
    missed: int = Field(description="How many missed ticks it fired for; 0 when on time")


class ScheduleTickList(BaseModel):
    ticks: list[ScheduleTickModel] = Field(description="Newest first")
