"""Long polls through the HTTP server on a PostgreSQL store without LISTEN.

With `listen=off` a server sees other servers' posts only when a waiting
poll checks the store again, every `poll_interval` seconds. The server
must not check more often than that, since the setting exists to save
queries.
"""

from __future__ import annotations

import threading
import time

import httpx

from http_fixtures import start_server


def test_poll_interval_sets_recheck(tmp_path, postgres_url):
    posting = start_server(tmp_path / "posting", store_url=postgres_url)
    polling = start_server(
        tmp_path / "polling", store_url=postgres_url + "&listen=off&poll_interval=30"
    )
    try:
        httpx.post(f"{posting.url}/v1/queues", json={"name": "jobs"}).raise_for_status()

        def post_soon() -> None:
            time.sleep(0.5)
            httpx.post(
                f"{posting.url}/v1/queues/jobs/messages", json={"messages": [{"body": 1}]}
            ).raise_for_status()

        poster = threading.Thread(target=post_soon)
        started = time.monotonic()
        poster.start()
        response = httpx.post(
            f"{polling.url}/v1/queues/jobs/reserve", json={"wait_s": 4}, timeout=30
        )
        waited_s = time.monotonic() - started
        poster.join()
    finally:
        polling.stop()
        posting.stop()
    response.raise_for_status()
    # The poll's only re-check after its first reserve is at its 4 s deadline,
    # and that re-check finds the message. A re-check every second would find
    # it sooner.
    assert len(response.json()["messages"]) == 1
    assert waited_s >= 3.5
