"""Conveyor's own query parameters on a postgresql:// store URL.

`pool_size`, `listen`, `poll_interval` and `prepare` configure the store
and are removed from the URL before it reaches psycopg. Every other parameter
(`sslmode`, `options`, `application_name`, ...) passes through unchanged.

Messages built here name the parameter and its value, never the URL, so a
password in the URL cannot reach a log or an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

from ..errors import ValidationError

# Today's split: 8 writer threads and 4 connections kept for reads.
DEFAULT_POOL_SIZE = 12
MIN_POOL_SIZE = 2
# Far above what one process needs, so a larger value is more likely a
# typo. Each connection is a server process on PostgreSQL.
MAX_POOL_SIZE = 1000
# Connections never taken by writes, so peeks, stats and long-poll checks
# do not wait behind a burst of writes.
MAX_READ_CONNECTIONS = 4
# A long poll re-checks the store this often. NOTIFY wakes it sooner when
# another server commits, so the re-check only catches lost notifications.
DEFAULT_POLL_INTERVAL_S = 1.0
# Without LISTEN the re-check is the only way to see other servers' posts.
DEFAULT_POLL_INTERVAL_NO_LISTEN_S = 0.5
MIN_POLL_INTERVAL_S = 0.05
MAX_POLL_INTERVAL_S = 60.0

SWITCH_VALUES = {"on": True, "true": True, "off": False, "false": False}
OPTION_NAMES = ("pool_size", "listen", "poll_interval", "prepare", "maintenance")
# Why a deployment turns a switch off, for the error about a bad value.
SWITCH_OFF_USES = {
    "listen": "behind a proxy that pools transactions, where LISTEN does not work",
    "prepare": "behind a proxy that pools transactions and does not keep "
    "prepared statements, such as PgBouncer before 1.21",
    "maintenance": "when a database administrator schedules VACUUM and ANALYZE",
}


@dataclass(frozen=True)
class StoreOptions:
    """Connection settings of one PostgreSQL store process."""

    pool_size: int = DEFAULT_POOL_SIZE
    listen: bool = True
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S
    # Server-side prepared statements, which save parsing and planning.
    prepare: bool = True
    # The store vacuums and analyzes its own tables (postgres_maintenance.py).
    maintenance: bool = True

    @property
    def read_connections(self) -> int:
        """Connections that writes leave free: a third of the pool, 1 to 4."""
        return max(1, min(MAX_READ_CONNECTIONS, self.pool_size // 3))

    @property
    def write_threads(self) -> int:
        """Threads that run write transactions, each on one pooled connection."""
        return self.pool_size - self.read_connections


def parse_store_url(url: str) -> tuple[str, StoreOptions]:
    """Split a postgresql:// URL into the conninfo for psycopg and StoreOptions.

    Raises ValidationError naming the parameter, its value and the allowed
    values when a Conveyor parameter is invalid or given twice.
    """
    parts = urlsplit(url)
    kept: list[str] = []
    found: dict[str, str] = {}
    for pair in parts.query.split("&") if parts.query else []:
        raw_key, _, raw_value = pair.partition("=")
        key = unquote(raw_key)
        if key not in OPTION_NAMES:
            kept.append(pair)
            continue
        if key in found:
            raise ValidationError(
                f"invalid store URL: parameter {key} is given twice; keep one"
            )
        found[key] = unquote(raw_value)
    conninfo = urlunsplit(parts._replace(query="&".join(kept)))
    return conninfo, build_options(found)


def build_options(values: dict[str, str]) -> StoreOptions:
    """Check the raw parameter values and return the options they set."""
    listen = _parse_switch("listen", values.get("listen", "on"))
    prepare = _parse_switch("prepare", values.get("prepare", "on"))
    maintenance = _parse_switch("maintenance", values.get("maintenance", "on"))
    default_interval_s = (
        DEFAULT_POLL_INTERVAL_S if listen else DEFAULT_POLL_INTERVAL_NO_LISTEN_S
    )
    pool_size = DEFAULT_POOL_SIZE
    if "pool_size" in values:
        pool_size = _parse_pool_size(values["pool_size"])
    poll_interval_s = default_interval_s
    if "poll_interval" in values:
        poll_interval_s = _parse_poll_interval(values["poll_interval"])
    return StoreOptions(pool_size, listen, poll_interval_s, prepare, maintenance)


def _parse_pool_size(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not MIN_POOL_SIZE <= value <= MAX_POOL_SIZE:
        raise ValidationError(
            f"invalid store URL parameter pool_size={raw!r}: use a whole number "
            f"of connections from {MIN_POOL_SIZE} to {MAX_POOL_SIZE} "
            f"(default {DEFAULT_POOL_SIZE})"
        )
    return value


def _parse_switch(name: str, raw: str) -> bool:
    value = SWITCH_VALUES.get(raw.lower())
    if value is None:
        raise ValidationError(
            f"invalid store URL parameter {name}={raw!r}: use on (the default) "
            f"or off ({SWITCH_OFF_USES[name]})"
        )
    return value


def _parse_poll_interval(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = None
    # The comparison is False for NaN, so NaN is rejected too.
    if value is None or not MIN_POLL_INTERVAL_S <= value <= MAX_POLL_INTERVAL_S:
        raise ValidationError(
            f"invalid store URL parameter poll_interval={raw!r}: use seconds "
            f"from {MIN_POLL_INTERVAL_S:g} to {MAX_POLL_INTERVAL_S:g} (default "
            f"{DEFAULT_POLL_INTERVAL_S:g}, or {DEFAULT_POLL_INTERVAL_NO_LISTEN_S:g} "
            "with listen=off)"
        )
    return value


def redact_store_url(url: str) -> str:
    """Return the URL with its password, in the user part or a parameter, as ***.

    For log lines and start-up messages that show which store is used. A URL
    without a password comes back unchanged.
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = userinfo.split(":", 1)[0] + ":***@" + host
    pairs = []
    for pair in parts.query.split("&") if parts.query else []:
        key, equals, _ = pair.partition("=")
        pairs.append(f"{key}=***" if unquote(key) == "password" and equals else pair)
    query = "&".join(pairs)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))
