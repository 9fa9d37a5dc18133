"""The engine's schedule operations: checked input, then one store transaction.

`Engine` inherits these methods; the HTTP client has the same names, so
SDK code runs unchanged over either transport.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

from . import validation as check
from .errors import ValidationError
from .models import Schedule
from .schedule_input import DEFINITION_FIELDS, check_definition, check_source
from .schedule_input import convert_sdk_values, validate_schedule_name
from .settings import validate_queue_name

if TYPE_CHECKING:
    from .scheduler import Scheduler
    from .store.schedules import ScheduleStore

logger = logging.getLogger(__name__)

MAX_SCHEDULES_LISTED = 1000
MAX_TICKS_LISTED = 1000
# A scheduler step fires at most this many schedules before it looks again.
FIRE_BATCH = 100


class ScheduleMethods:
    """Schedule operations over `self.store.schedules` at `self.clock()`."""

    clock: Callable[[], float]
    _scheduler: Scheduler | None

    @property
    def _schedules(self) -> ScheduleStore:
        return self.store.schedules  # type: ignore[attr-defined]

    def create_schedule(
        self, name: str, queue: str, *, paused: bool = False, **fields: Any
    ) -> Schedule:
        """Store a new schedule that posts to `queue`; ScheduleAlreadyExists if the name is taken.

        `fields` are the keys of schedule_input.DEFINITION_FIELDS. The
        timing is `cron` (five fields) with `timezone` (IANA name, default
        UTC), or `interval_s`. Its limits are `start_at` and `end_at` (Unix
        seconds), `max_runs`, `catch_up` (skip, once or all) and
        `catch_up_limit`. The message template is `body`, `headers`,
        `priority`, `group`, `delay_s`, `retention_s` and `max_attempts`.
        """
        validate_schedule_name(name)
        _check_flag("paused", paused)
        fields = convert_sdk_values(fields)
        now = self.clock()
        spec = check_definition({**fields, "queue": queue}, now)
        schedule = self._schedules.create(name, spec, "api", paused, now).result()
        self._wake_scheduler()
        return schedule

    def put_schedule(
        self, name: str, queue: str, *, source: str = "api", **fields: Any
    ) -> Schedule:
        """Create a schedule or replace its whole definition; idempotent.

        An unchanged definition keeps its next tick and run count. A changed
        one keeps its run count and pause state, and its next tick is
        computed from now. `source` is "code" for schedules declared with
        `@app.periodic` and "api" otherwise. The fields are those of
        create_schedule.
        """
        validate_schedule_name(name)
        check_source(source)
        fields = convert_sdk_values(fields)
        fields = {**fields, "queue": queue}
        _check_field_names(fields)
        schedule, outcome = self._schedules.put(name, fields, source, self.clock()).result()
        if outcome != "unchanged":
            self._wake_scheduler()
        return schedule

    def update_schedule(self, name: str, **changes: Any) -> Schedule:
        """Change some definition fields; a None value clears an optional one.

        The next tick is computed again from now; the run count stays.
        """
        validate_schedule_name(name)
        if not changes:
            raise ValidationError(
                f"no changes given for schedule {name!r}; set at least one of "
                f"{', '.join(DEFINITION_FIELDS)}"
            )
        _check_field_names(changes)
        changes = convert_sdk_values(changes)
        if "queue" in changes:
            validate_queue_name(changes["queue"])
        schedule = self._schedules.update(name, changes, self.clock()).result()
        self._wake_scheduler()
        return schedule

    def get_schedule(self, name: str) -> Schedule:
        return self._schedules.get(validate_schedule_name(name))

    def list_schedules(
        self,
        queue: str | None = None,
        source: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[Schedule]:
        """Return schedules by name, optionally only those of a queue or a source.

        `after` pages: pass the last name of the previous page to get the
        schedules whose names sort after it.
        """
        if queue is not None:
            validate_queue_name(queue)
        if source is not None:
            check_source(source)
        if after is not None:
            validate_schedule_name(after)
        check.check_int("limit", limit, 1, MAX_SCHEDULES_LISTED)
        return self._schedules.list(queue, source, limit, after)

    def pause_schedule(self, name: str) -> Schedule:
        """Stop firing a schedule until it is resumed."""
        validate_schedule_name(name)
        return self._schedules.set_paused(name, True, self.clock()).result()

    def resume_schedule(self, name: str) -> Schedule:
        """Fire a paused schedule again; ticks missed meanwhile follow its catch-up policy."""
        validate_schedule_name(name)
        schedule = self._schedules.set_paused(name, False, self.clock()).result()
        self._wake_scheduler()
        return schedule

    def delete_schedule(self, name: str) -> None:
        """Delete a schedule and its recorded ticks; messages it posted stay."""
        self._schedules.delete(validate_schedule_name(name)).result()

    def list_schedule_ticks(self, name: str, limit: int = 100) -> list[dict[str, Any]]:
        """Return a schedule's recorded ticks, newest first.

        Each has `tick_at` and `fired_at` (Unix seconds), the posted
        `message_id` (None when the post failed) and `missed`: how many
        missed ticks it fired for (0: it fired on time).
        """
        validate_schedule_name(name)
        check.check_int("limit", limit, 1, MAX_TICKS_LISTED)
        self._schedules.get(name)
        return self._schedules.ticks(name, limit)

    # For the scheduler loop ---------------------------------------------

    def run_schedules(self) -> int:
        """Fire every schedule due now, one transaction each; return the messages posted."""
        now = self.clock()
        posted = 0
        for name in self._schedules.due_names(now, FIRE_BATCH):
            posted += self._schedules.fire(name, now).result()
        return posted

    def next_schedule_due_at(self) -> float | None:
        """Return the earliest next tick of any active schedule, or None."""
        return self._schedules.next_due_at()

    def prune_schedule_ticks(self) -> int:
        """Delete recorded ticks older than a week, keeping each schedule's latest."""
        return self._schedules.prune_ticks(self.clock()).result()

    def _wake_scheduler(self) -> None:
        if self._scheduler is not None:
            self._scheduler.wake()


def _check_flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValidationError(f"invalid {name} {value!r}: use true or false")


def _check_field_names(fields: dict[str, Any]) -> None:
    unknown = sorted(set(fields) - set(DEFINITION_FIELDS))
    if unknown:
        raise ValidationError(
            f"unknown schedule fields {', '.join(map(repr, unknown))}: use "
            f"{', '.join(DEFINITION_FIELDS)}"
        )
