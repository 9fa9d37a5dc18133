"""Shared fixtures: engines over every store, and a clock tests can move."""

from __future__ import annotations

import os
import secrets
import time
from typing import Callable, Iterator

import psycopg
import pytest
from psycopg import sql

from conveyor.engine import Engine

# Every store the conformance suite runs against.
STORES = ["sqlite", "postgres"]

# The PostgreSQL server the tests use; each test gets its own schema in it.
POSTGRES_URL = os.environ.get(
    "CONVEYOR_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def create_postgres_schema() -> tuple[str, Callable[[], None]]:
    """Create a fresh schema; return a store URL that uses it and a function that drops it."""
    schema = f"conveyor_test_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))

    def drop() -> None:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))

    separator = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}", drop


class FakeClock:
    """A clock that only moves when a test advances it."""

    def __init__(self, start: float | None = None) -> None:
        self.now = start if start is not None else time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A store URL on a schema of its own, dropped at teardown."""
    url, drop = create_postgres_schema()
    yield url
    drop()


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/conveyor.db"
    elif request.param == "postgres":
        url, drop = create_postgres_schema()
        yield url
        drop()
    else:
        raise AssertionError(f"unknown store {request.param}")


@pytest.fixture
def make_engine(store_url: str) -> Iterator[Callable[..., Engine]]:
    """Open engines on the test's store; all are closed at teardown."""
    engines: list[Engine] = []

    def make(**kwargs) -> Engine:
        kwargs.setdefault("sweep", False)
        engine = Engine(store_url, **kwargs)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


@pytest.fixture
def engine(make_engine, clock: FakeClock) -> Engine:
    """An engine on a fake clock, without the background sweeper."""
    return make_engine(clock=clock)


@pytest.fixture
def live_engine(make_engine) -> Engine:
    """An engine on the real clock, for long polls."""
    return make_engine()
