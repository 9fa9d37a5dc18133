"""PostgreSQL schemas that the harness creates for one system and drops after it.

Each PostgreSQL-based system keeps its tables in a schema of its own with a
random name, in the database that ``--postgres-url`` names. The harness
creates the schema before the system starts and drops it, with everything in
it, when the system is done.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

CONNECT_TIMEOUT_SECONDS = 10


def validate_loopback_postgres_url(url: str) -> None:
    """Raise ValueError unless ``url`` is a postgresql:// URL whose hosts are all loopback."""
    if not url.startswith(("postgresql://", "postgres://")):
        raise ValueError(f"invalid --postgres-url {url!r}: expected "
                         "postgresql://USER@HOST:PORT/DATABASE")
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as error:
        raise ValueError(f"invalid --postgres-url {url!r}: {error}") from None
    if "options" in params:
        raise ValueError(f"invalid --postgres-url {url!r}: leave out options; the "
                         "harness sets search_path to a schema of its own")
    # Without a host, libpq would take PGHOST or a Unix socket, which the
    # harness cannot check.
    hosts = [host for host in params.get("host", "").split(",") if host]
    addresses = [address for address in params.get("hostaddr", "").split(",") if address]
    if not hosts:
        raise ValueError(f"invalid --postgres-url {url!r}: name the host, such as "
                         "postgresql://postgres@127.0.0.1:5432/test")
    for host in hosts + addresses:
        if not _is_loopback(host):
            raise ValueError(f"invalid --postgres-url {url!r}: host {host!r} is not a "
                             "loopback address; the benchmark only loads addresses "
                             "such as 127.0.0.1")
    # libpq takes these from the environment for what the URL leaves out, and
    # a service file or PGHOSTADDR could point the connection elsewhere.
    for variable in ("PGHOSTADDR", "PGSERVICE", "PGSERVICEFILE"):
        if variable in os.environ and "hostaddr" not in params:
            raise ValueError(f"environment variable {variable} is set; unset it, so "
                             f"that --postgres-url {url!r} alone decides the server")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_info(url: str) -> dict[str, str]:
    """Return the server's version and the settings that affect commit cost.

    Raises psycopg.OperationalError if the server cannot be reached.
    """
    names = ["server_version", "synchronous_commit", "fsync", "wal_sync_method",
             "shared_buffers", "autovacuum"]
    with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_SECONDS,
                         autocommit=True) as conn:
        info = {name: conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0]
                for name in names}
        # data_directory is readable only by superusers and members of
        # pg_read_all_settings.
        try:
            info["data_directory"] = conn.execute("SHOW data_directory").fetchone()[0]
        except psycopg.errors.InsufficientPrivilege:
            info["data_directory"] = "not readable by this user"
    return info


def _check_loopback_server(conn: psycopg.Connection) -> None:
    """Raise RuntimeError unless the server's end of the connection is a loopback address."""
    address = conn.execute("SELECT host(inet_server_addr())").fetchone()[0]
    # NULL means a Unix socket, which is local too.
    if address is not None and not ipaddress.ip_address(address).is_loopback:
        raise RuntimeError(f"the PostgreSQL connection reached the server at {address}, "
                           "which is not a loopback address; the benchmark only loads "
                           "127.0.0.1 or ::1")


class Schema:
    """A schema with a random name, created on construction and dropped by ``drop``."""

    def __init__(self, base_url: str, prefix: str) -> None:
        self.base_url = base_url
        self.name = f"{prefix}_{secrets.token_hex(4)}"
        with self.connect(search_path=False) as conn:
            _check_loopback_server(conn)
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.name)))
        self.dropped = False

    @property
    def url(self) -> str:
        """Return the base URL with ``search_path`` set to this schema, for libpq and Conveyor."""
        separator = "&" if "?" in self.base_url else "?"
        options = quote(f"-csearch_path={self.name}", safe="")
        return f"{self.base_url}{separator}options={options}"

    def connect(self, search_path: bool = True) -> psycopg.Connection:
        """Open an autocommit connection, with this schema first in its search path if ``search_path``."""
        return psycopg.connect(self.url if search_path else self.base_url,
                               connect_timeout=CONNECT_TIMEOUT_SECONDS, autocommit=True)

    def drop(self) -> None:
        """Drop the schema and every object in it. Safe to call more than once."""
        if self.dropped:
            return
        try:
            with self.connect(search_path=False) as conn:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
                             .format(sql.Identifier(self.name)))
        except psycopg.Error as error:
            raise RuntimeError(
                f"dropping schema {self.name} failed: {error}; drop it by hand with "
                f"DROP SCHEMA {self.name} CASCADE"
            ) from error
        self.dropped = True

    def analyze(self) -> None:
        """Run ANALYZE on every table of the schema, so the planner has current statistics."""
        with self.connect() as conn:
            tables = [row[0] for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename",
                (self.name,),
            )]
            for table in tables:
                conn.execute(sql.SQL("ANALYZE {}.{}").format(
                    sql.Identifier(self.name), sql.Identifier(table)))

    def vacuum(self, table: str) -> None:
        """Run VACUUM on one table of the schema, so its dead rows' space can be reused."""
        with self.connect() as conn:
            conn.execute(sql.SQL("VACUUM {}.{}").format(
                sql.Identifier(self.name), sql.Identifier(table)))

    def table_sizes(self, table: str) -> dict:
        """Return the on-disk bytes of a table and of each of its indexes, and its row counts.

        ``table_bytes`` is ``pg_table_size`` (heap, TOAST, free space and
        visibility maps). Live and dead row counts come from the statistics
        collector, which lags behind the latest writes by up to a second or so.
        """
        qualified = f"{self.name}.{table}"
        with self.connect() as conn:
            total, heap, indexes = conn.execute(
                "SELECT pg_total_relation_size(%s::regclass), pg_table_size(%s::regclass), "
                "pg_indexes_size(%s::regclass)",
                (qualified, qualified, qualified),
            ).fetchone()
            per_index = conn.execute(
                "SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) "
                "FROM pg_index WHERE indrelid = %s::regclass ORDER BY 1",
                (qualified,),
            ).fetchall()
            live, dead = conn.execute(
                "SELECT n_live_tup, n_dead_tup FROM pg_stat_user_tables "
                "WHERE schemaname = %s AND relname = %s",
                (self.name, table),
            ).fetchone() or (None, None)
        return {
            "total_bytes": total,
            "table_bytes": heap,
            "indexes_bytes": indexes,
            # Index names without the schema, which differs in every run.
            "index_bytes": {name.split(".")[-1]: size for name, size in per_index},
            "live_rows": live,
            "dead_rows": dead,
        }
