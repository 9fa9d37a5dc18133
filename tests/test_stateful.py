"""A hypothesis state machine that checks the engine against a small model.

The model tracks each message's state, receive count and current receipt on
a standard queue with no backoff, so every failure returns a message to
ready at once (or to the DLQ after its last attempt).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Callable

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from conftest import STORES, FakeClock, create_postgres_schema
from conveyor.engine import Engine
from conveyor.models import NewMessage

MAX_ATTEMPTS = 3
LEASE_S = 10.0


@dataclass
class ModelMessage:
    state: str = "ready"
    receive_count: int = 0
    receipt: str | None = None
    reserved_until: float = 0.0


def engine_for(
    store: str, directory: str, clock: FakeClock
) -> tuple[Engine, Callable[[], None]]:
    """Open an engine on a fresh store; return it and a function that removes the store."""
    if store == "sqlite":
        engine = Engine(f"sqlite:///{directory}/model.db", clock=clock, sweep=False)
        return engine, lambda: None
    if store == "postgres":
        url, drop = create_postgres_schema()
        return Engine(url, clock=clock, sweep=False), drop
    raise AssertionError(f"unknown store {store}")


def make_machine(store: str) -> type[RuleBasedStateMachine]:
    class QueueMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.directory = tempfile.TemporaryDirectory()
            self.clock = FakeClock(1_000_000.0)
            self.engine, self.remove_store = engine_for(
                store, self.directory.name, self.clock
            )
            self.engine.create_queue(
                "q",
                {
                    "max_attempts": MAX_ATTEMPTS,
                    "backoff_base_s": 0.0,
                    "visibility_timeout_s": LEASE_S,
                },
            )
            self.model: dict[str, ModelMessage] = {}
            self.stale: list[tuple[str, str]] = []

        def teardown(self) -> None:
            self.engine.close()
            self.remove_store()
            self.directory.cleanup()

        def _expire_leases(self) -> None:
            for message in self.model.values():
                if message.state == "reserved" and message.reserved_until <= self.clock.now:
                    self._fail(message)

        def _fail(self, message: ModelMessage) -> None:
            if message.receipt is not None:
                self.stale.append((self._id_of(message), message.receipt))
            message.receipt = None
            message.state = "ready" if message.receive_count < MAX_ATTEMPTS else "dead"

        def _id_of(self, target: ModelMessage) -> str:
            return next(i for i, m in self.model.items() if m is target)

        def _reserved(self) -> list[str]:
            return [i for i, m in self.model.items() if m.state == "reserved"]

        @rule(count=st.integers(1, 5))
        def post(self, count: int) -> None:
            results = self.engine.post("q", [NewMessage({"n": i}) for i in range(count)])
            for result in results:
                self.model[result.id] = ModelMessage()

        @rule(count=st.integers(1, 4))
        def reserve(self, count: int) -> None:
            self._expire_leases()
            got = self.engine.reserve("q", count)
            ready = sorted(i for i, m in self.model.items() if m.state == "ready")
            assert len(got) == min(count, len(ready))
            for message in got:
                expected = self.model[message.id]
                assert expected.state == "ready"
                expected.state = "reserved"
                expected.receive_count += 1
                expected.receipt = message.receipt
                expected.reserved_until = self.clock.now + LEASE_S
                assert message.receive_count == expected.receive_count

        @precondition(lambda self: self._reserved())
        @rule(data=st.data())
        def ack(self, data) -> None:
            message_id = data.draw(st.sampled_from(self._reserved()))
            message = self.model[message_id]
            [result] = self.engine.ack("q", [{"id": message_id, "receipt": message.receipt}])
            if message.reserved_until > self.clock.now:
                assert result.ok
                del self.model[message_id]
            else:
                assert result.error == "stale-receipt"

        @precondition(lambda self: self._reserved())
        @rule(data=st.data())
        def nack(self, data) -> None:
            message_id = data.draw(st.sampled_from(self._reserved()))
            message = self.model[message_id]
            [result] = self.engine.nack("q", [{"id": message_id, "receipt": message.receipt}])
            if message.reserved_until > self.clock.now:
                assert result.ok
                self._fail(message)
            else:
                assert result.error == "stale-receipt"

        @precondition(lambda self: self.stale)
        @rule(data=st.data())
        def ack_stale(self, data) -> None:
            message_id, receipt = data.draw(st.sampled_from(self.stale))
            [result] = self.engine.ack("q", [{"id": message_id, "receipt": receipt}])
            assert not result.ok

        @rule(seconds=st.sampled_from([1.0, 5.0, 11.0]))
        def advance(self, seconds: float) -> None:
            self.clock.advance(seconds)

        @rule()
        def sweep(self) -> None:
            self.engine.sweep()
            self._expire_leases()

        @invariant()
        def stats_match_model(self) -> None:
            stats = self.engine.stats("q")
            states = [m.state for m in self.model.values()]
            assert stats.dead == states.count("dead")
            assert stats.ready == states.count("ready")
            assert stats.reserved == states.count("reserved")

    QueueMachine.__name__ = f"QueueMachine_{store}"
    return QueueMachine


for _store in STORES:
    _machine = make_machine(_store)
    _machine.TestCase.settings = settings(
        max_examples=60, stateful_step_count=40, deadline=None
    )
    globals()[f"TestQueueModel_{_store}"] = _machine.TestCase
