"""`conveyor server` start-up checks seen from the command line."""

from __future__ import annotations

import os
import subprocess

from http_fixtures import conveyor_command, start_server


def test_server_port_in_use(tmp_path):
    first = start_server(tmp_path / "first")
    port = first.url.rsplit(":", 1)[1]
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        second = subprocess.run(
            [*conveyor_command(), "server", "--store", f"sqlite:///{tmp_path}/b.db",
             "--port", port],
            capture_output=True, text=True, env=env, timeout=60,
        )
    finally:
        first.stop()
    assert second.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in second.stderr
    assert "--port or CONVEYOR_PORT" in second.stderr
