"""Tasks for test_flow_control.py: each calls the local HTTP stub at $FLOW_STUB_URL.

The stub plays a third-party service. A 429 answer becomes
RetryAfter with the stub's Retry-After seconds; any other error status
fails the attempt.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request

from conveyor import Conveyor, RetryAfter

app = Conveyor()


def call_stub(scenario: str, key: str) -> int:
    url = f"{os.environ['FLOW_STUB_URL']}/{scenario}?key={key}"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        if exc.code == 429:
            raise RetryAfter(float(exc.headers.get("Retry-After", "1"))) from exc
        raise RuntimeError(f"the stub answered {exc.code}") from exc


@app.task(queue="flow-rate", name="flow.rate")
def rate(key: str) -> int:
    return call_stub("rate", key)


@app.task(queue="flow-conc", name="flow.conc")
def conc(key: str) -> int:
    return call_stub("conc", key)


@app.task(queue="flow-breaker", name="flow.breaker")
def breaker(key: str) -> int:
    return call_stub("breaker", key)


@app.task(queue="flow-retry", name="flow.retry")
def retry(key: str) -> int:
    return call_stub("retry", key)
