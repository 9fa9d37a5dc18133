"""Long-poll wake-ups across servers: LISTEN on the store's channel.

Every PostgreSQL store sends `pg_notify(channel, "<sender> <queue>")` inside
each write transaction that makes a message ready, and PostgreSQL delivers it
when that transaction commits. The listener thread of every store on the
same schema receives it and wakes its own long polls on that queue. A store
wakes its own waiters directly after commit, so it skips notifications that
carry its own sender token.

Notifications are a shortcut, not a guarantee: while the listener is
reconnecting some are lost, and the engine's once-a-second re-check finds
those messages instead.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

import psycopg
from psycopg import sql

logger = logging.getLogger(__name__)

# How often the listener thread checks whether it should stop, in seconds.
STOP_CHECK_S = 0.5
RECONNECT_DELAY_S = 1.0


class NotificationListener:
    """A thread with its own connection that turns notifications into wake-ups."""

    def __init__(
        self,
        conninfo: str,
        channel: str,
        sender: str,
        on_commit: Callable[[set[str]], None],
        description: str,
    ) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._sender = sender
        self._on_commit = on_commit
        self._description = description
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="conveyor-postgres-listener", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    if failures:
                        logger.info(
                            "Listener on %s reconnected after %d failed attempts",
                            self._description, failures,
                        )
                        failures = 0
                    self._receive(conn)
            except psycopg.Error as exc:
                failures += 1
                # Log the first failure and then every 60th, so an outage
                # that lasts minutes does not flood the log.
                if failures == 1 or failures % 60 == 0:
                    logger.warning(
                        "Listener on %s failed (attempt %d), retrying in %.0fs; long "
                        "polls fall back to their 1 s re-check meanwhile: %s",
                        self._description, failures, RECONNECT_DELAY_S, exc,
                    )
                self._stopping.wait(RECONNECT_DELAY_S)

    def _receive(self, conn: psycopg.Connection) -> None:
        while not self._stopping.is_set():
            # The generator ends after STOP_CHECK_S, so the loop can stop.
            for notify in conn.notifies(timeout=STOP_CHECK_S):
                sender, _, queue = notify.payload.partition(" ")
                if sender != self._sender and queue:
                    self._on_commit({queue})
