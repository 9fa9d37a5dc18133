"""Shared fixtures: engines over every store, and a clock tests can move."""

from __future__ import annotations

import time
from typing import Callable, Iterator

import pytest

from conveyor.engine import Engine

# Every store the conformance suite runs against. The PostgreSQL store will
# join this list when it exists.
STORES = ["sqlite"]


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


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/conveyor.db"
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
