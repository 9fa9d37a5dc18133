"""Log lines of Conveyor's processes, with times in ISO 8601 UTC.

The CLI (and so `conveyor server` and `conveyor worker`) and worker child
processes log `2026-03-02T08:00:00.123Z LEVEL logger: message`, so lines
from servers in different time zones compare directly.
"""

from __future__ import annotations

import logging
import time


class UTCFormatter(logging.Formatter):
    """A formatter whose `%(asctime)s` is ISO 8601 in UTC with milliseconds."""

    def formatTime(  # noqa: N802 - overrides logging.Formatter.formatTime
        self, record: logging.LogRecord, datefmt: str | None = None
    ) -> str:
        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{seconds}.{int(record.msecs):03d}Z"


def configure_logging(level: str | int, line_format: str) -> None:
    """Send log records to stderr in `line_format` with UTC times, as logging.basicConfig does.

    Like basicConfig, it does nothing when the root logger has handlers already.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(UTCFormatter(line_format))
    logging.basicConfig(level=level, handlers=[handler])
