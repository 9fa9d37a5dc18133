"""A cache of the served queues' settings, refreshed in the background.

The worker needs each queue's visibility timeout (to request and extend
leases), max_attempts (for logs) and backoff (to compute retry delays).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from ..errors import ConveyorError
from ..settings import FIELDS, QueueSettings, build_settings

logger = logging.getLogger(__name__)

REFRESH_INTERVAL_S = 30.0


class QueueSettingsCache:
    """The last known settings of each served queue."""

    def __init__(self, client: Any, queues: list[str]) -> None:
        self._client = client
        self._settings: dict[str, QueueSettings] = {q: QueueSettings() for q in queues}
        self._loaded: set[str] = set()
        self._refreshed_at = time.monotonic()
        self._lock = threading.Lock()

    def get(self, queue: str) -> QueueSettings:
        return self._settings.get(queue) or QueueSettings()

    def min_visibility_timeout_s(self) -> float:
        return min(s.visibility_timeout_s for s in self._settings.values())

    def load(self, queue: str) -> None:
        """Read one queue's settings now; errors propagate to the caller."""
        info = self._client.get_queue(queue)
        settings = _parse_settings(queue, info.settings)
        with self._lock:
            old = self._settings.get(queue) if queue in self._loaded else None
            self._settings[queue] = settings
            self._loaded.add(queue)
        if old is not None and old != settings:
            logger.info("Settings of queue %s changed; the worker uses the new ones", queue)

    def refresh_if_due(self) -> None:
        """Reload every queue's settings if REFRESH_INTERVAL_S passed; log failures."""
        now = time.monotonic()
        if now - self._refreshed_at < REFRESH_INTERVAL_S:
            return
        self._refreshed_at = now
        for queue in list(self._settings):
            try:
                self.load(queue)
            except (ConveyorError, OSError) as exc:
                logger.info(
                    "Could not refresh the settings of queue %s; keeping the last "
                    "known ones: %s", queue, exc,
                )


def _parse_settings(queue: str, values: dict[str, Any]) -> QueueSettings:
    known = {key: value for key, value in values.items() if key in FIELDS}
    try:
        return build_settings(known)
    except ConveyorError as exc:
        logger.warning(
            "Queue %s reported settings this worker cannot read (%s); using defaults",
            queue, exc,
        )
        return QueueSettings()
