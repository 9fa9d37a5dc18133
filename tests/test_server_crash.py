"""Crash safety of the server: SIGKILL during a stream of posts.

Every post that got a 2xx response must be in the store after a restart,
and no message may be stored twice.
"""

from __future__ import annotations

import signal
import threading
import time

import httpx
import pytest

from http_fixtures import start_server

pytestmark = pytest.mark.acceptance

POSTERS = 6
BATCH = 5


def post_until_failure(url: str, poster: int, confirmed: list[str], stop: threading.Event) -> None:
    """Post batches until the server stops responding; record confirmed bodies."""
    with httpx.Client(base_url=url, timeout=5.0) as client:
        sequence = 0
        while not stop.is_set():
            keys = [f"{poster}-{sequence + i}" for i in range(BATCH)]
            sequence += BATCH
            try:
                response = client.post(
                    "/v1/queues/stream/messages",
                    json={"messages": [{"body": {"key": k}} for k in keys]},
                )
            except httpx.TransportError:
                return
            if response.status_code == 201:
                confirmed.extend(keys)


def stored_keys(url: str) -> list[str]:
    keys: list[str] = []
    with httpx.Client(base_url=url, timeout=10.0) as client:
        offset = 0
        while True:
            response = client.get(
                "/v1/queues/stream/messages", params={"limit": 1000, "offset": offset}
            )
            response.raise_for_status()
            page = response.json()["messages"]
            keys += [m["body"]["key"] for m in page]
            if len(page) < 1000:
                return keys
            offset += len(page)


def test_sigkill_during_posts_loses_nothing(tmp_path):
    store_url = f"sqlite:///{tmp_path}/crash.db"
    server = start_server(tmp_path / "first", store_url=store_url)
    httpx.post(server.url + "/v1/queues", json={"name": "stream"}).raise_for_status()

    confirmed: list[list[str]] = [[] for _ in range(POSTERS)]
    stop = threading.Event()
    threads = [
        threading.Thread(target=post_until_failure, args=(server.url, n, confirmed[n], stop))
        for n in range(POSTERS)
    ]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    server.stop(signal.SIGKILL)
    stop.set()
    for thread in threads:
        thread.join()

    restarted = start_server(tmp_path / "second", store_url=store_url)
    try:
        keys = stored_keys(restarted.url)
    finally:
        restarted.stop()
    all_confirmed = [key for keys_of_poster in confirmed for key in keys_of_poster]
    assert len(all_confirmed) > 100
    assert set(all_confirmed) <= set(keys)
    assert len(keys) == len(set(keys))
