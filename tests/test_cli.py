"""The management commands, run as the real `conveyor` console script.

Most tests run twice: on a SQLite store file in tmp_path through `--url
sqlite:///...`, and on a real `conveyor server` subprocess shared by the
module (its queues are deleted before each test). Messages in states the CLI
cannot produce (reserved, dead) are made with `conveyor.client.connect` on
the same URL.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import click
import pytest

from conveyor.cli import main
from conveyor.client import connect
from conveyor.models import NewMessage
from conveyor.settings import FIELDS
from http_fixtures import ServerProcess, free_port, start_server

SCRIPT = Path(sys.executable).parent / "conveyor"
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "conveyor"]
MESSAGE_ID = re.compile(r"[0-9a-f]{28}")
TIMEOUT_S = 60


class Cli:
    """The `conveyor` command bound to one URL, run without CONVEYOR_* from outside."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(
        self,
        *args: str,
        input: str | bytes | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        clean.update({"CONVEYOR_URL": self.url, "CONVEYOR_LOG_LEVEL": "WARNING"})
        clean.update(env or {})
        return subprocess.run(
            [*COMMAND, *args],
            input=input.encode() if isinstance(input, str) else input,
            capture_output=True,
            env=clean,
            timeout=TIMEOUT_S,
        )

    def on_terminal(self, *args: str, answer: str) -> subprocess.CompletedProcess:
        """Run a command whose stdin is a terminal, typing `answer` into it."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        clean.update({"CONVEYOR_URL": self.url, "CONVEYOR_LOG_LEVEL": "WARNING"})
        controller, terminal = os.openpty()
        try:
            process = subprocess.Popen(
                [*COMMAND, *args],
                stdin=terminal,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=clean,
            )
            os.write(controller, answer.encode())
            stdout, stderr = process.communicate(timeout=TIMEOUT_S)
        finally:
            os.close(terminal)
            os.close(controller)
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    def ok(self, *args: str, **kwargs: Any) -> str:
        """Run a command that must succeed and return its stdout."""
        done = self(*args, **kwargs)
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout.decode()

    def json(self, *args: str, **kwargs: Any) -> Any:
        return json.loads(self.ok(*args, "--json", **kwargs))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(tmp_path_factory.mktemp("cli-server"))
    yield server
    server.stop()


@pytest.fixture
def store_cli(tmp_path: Path) -> Cli:
    """A CLI working directly on a new SQLite store file."""
    return Cli(f"sqlite:///{tmp_path}/cli.db")


@pytest.fixture(params=["store", "server"])
def cli(request: pytest.FixtureRequest, store_cli: Cli) -> Cli:
    """A CLI on an empty store file, or on the shared server with no queues."""
    if request.param == "store":
        return store_cli
    server: ServerProcess = request.getfixturevalue("server")
    delete_all_queues(server.url)
    return Cli(server.url)


def delete_all_queues(url: str) -> None:
    with connect(url) as client:
        for info in client.list_queues():
            client.delete_queue(info.name)


def with_jobs_queue(cli: Cli) -> Cli:
    """Create the standard queue `jobs` with max_attempts 3 and return the CLI."""
    with connect(cli.url) as client:
        client.create_queue("jobs", {"max_attempts": 3})
    return cli


@pytest.fixture
def jobs(cli: Cli) -> Cli:
    """A CLI on a store file or a server that has the queue `jobs`."""
    return with_jobs_queue(cli)


@pytest.fixture
def store_jobs(store_cli: Cli) -> Cli:
    """A CLI on a store file with the queue `jobs`, for transport-neutral behaviour."""
    return with_jobs_queue(store_cli)


def post_bodies(
    url: str, queue: str, *bodies: Any, delay_s: float | None = None
) -> list[str]:
    """Post messages without the CLI and return their ids, to set up other tests."""
    with connect(url) as client:
        results = client.post(
            queue, [NewMessage(body, delay_s=delay_s) for body in bodies]
        )
    return [result.id for result in results]


def stderr_text(done: subprocess.CompletedProcess) -> str:
    return done.stderr.decode()


def stored_state(url: str) -> list[Any]:
    """Return every queue's settings and counts, and every message, for comparison.

    The oldest-ready age changes with the clock, so it is left out.
    """
    state = []
    with connect(url) as client:
        for info in client.list_queues():
            stats = client.stats(info.name)
            stats.oldest_ready_age_s = None
            messages = client.peek(info.name, limit=1000)
            state.append((info, stats, messages))
    return state


def dead_letter_one(url: str, queue: str, error: str) -> str:
    """Reserve one message of the queue and dead-letter it with this error."""
    with connect(url) as client:
        [message] = client.reserve(queue)
        [result] = client.nack(
            queue,
            [
                {
                    "id": message.id,
                    "receipt": message.receipt,
                    "dead": True,
                    "error": error,
                }
            ],
        )
        assert result.ok, result
    return message.id


def header_line(output: str, first_column: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(first_column))


# queue -------------------------------------------------------------------


def test_queue_create_prints_dlq(cli: Cli) -> None:
    out = cli.ok("queue", "create", "jobs")
    assert out.strip() == "Created standard queue jobs with dead-letter queue jobs.dlq."


def test_queue_create_settings_flags(cli: Cli) -> None:
    cli.ok(
        "queue",
        "create",
        "orders",
        "--type",
        "fifo",
        "--visibility-timeout-s",
        "90",
        "--max-attempts",
        "7",
        "--backoff-jitter",
        "none",
        "--dedup-window-s",
        "60",
    )
    settings = cli.json("queue", "show", "orders")["settings"]
    assert settings["type"] == "fifo"
    assert settings["visibility_timeout_s"] == 90.0
    assert settings["max_attempts"] == 7
    assert settings["backoff_jitter"] == "none"
    assert settings["dedup_window_s"] == 60.0
    assert settings["dead_letter_queue"] == "orders.dlq"


def test_queue_create_env_twin(store_cli: Cli) -> None:
    store_cli.ok("queue", "create", "jobs", env={"CONVEYOR_CREATE_MAX_ATTEMPTS": "9"})
    assert store_cli.json("queue", "show", "jobs")["settings"]["max_attempts"] == 9


def test_queue_create_exist_ok_keeps_settings(jobs: Cli) -> None:
    out = jobs.ok("queue", "create", "jobs", "--exist-ok", "--max-attempts", "8")
    assert out.strip() == "Queue jobs exists already; its settings were not changed."
    assert jobs.json("queue", "show", "jobs")["settings"]["max_attempts"] == 3


def test_queue_list_table(store_jobs: Cli) -> None:
    out = store_jobs.ok("queue", "list")
    header = header_line(out, "Queue")
    assert header.split() == [
        "Queue",
        "Type",
        "State",
        "Ready",
        "Delayed",
        "Reserved",
        "Dead",
        "Oldest",
        "ready",
        "DLQ",
    ]
    assert header_line(out, "jobs ").split() == [
        "jobs",
        "standard",
        "active",
        "0",
        "0",
        "0",
        "0",
        "-",
        "jobs.dlq",
    ]
    assert header_line(out, "jobs.dlq").split()[-1] == "(itself)"


def test_queue_list_json(jobs: Cli) -> None:
    post_bodies(jobs.url, "jobs", 1)
    queues = {q["name"]: q for q in jobs.json("queue", "list")}
    assert sorted(queues) == ["jobs", "jobs.dlq"]
    assert queues["jobs"]["stats"]["ready"] == 1
    assert queues["jobs.dlq"]["settings"]["dead_letter_queue"] == "jobs.dlq"


def test_queue_show_table(store_jobs: Cli) -> None:
    out = store_jobs.ok("queue", "show", "jobs")
    assert "Queue jobs" in out
    assert header_line(out, "Setting").split() == ["Setting", "Value"]
    assert header_line(out, "max_attempts").split() == ["max_attempts", "3"]
    assert header_line(out, "visibility_timeout_s").split() == [
        "visibility_timeout_s",
        "30",
    ]
    assert header_line(out, "State").split() == ["State", "Count"]
    assert header_line(out, "oldest ready age").split() == [
        "oldest",
        "ready",
        "age",
        "-",
    ]


def test_queue_show_stats_json(jobs: Cli) -> None:
    post_bodies(jobs.url, "jobs", 1)
    post_bodies(jobs.url, "jobs", 2, delay_s=600)
    stats = jobs.json("queue", "show", "jobs")["stats"]
    assert stats["ready"] == 1
    assert stats["delayed"] == 1
    assert stats["reserved"] == 0
    assert stats["dead"] == 0
    assert stats["oldest_ready_age_s"] >= 0


def test_queue_update_changes_setting(jobs: Cli) -> None:
    out = jobs.ok(
        "queue", "update", "jobs", "--visibility-timeout-s", "60", "--max-attempts", "4"
    )
    assert out.strip() == "Updated queue jobs: max_attempts=4, visibility_timeout_s=60."
    settings = jobs.json("queue", "show", "jobs")["settings"]
    assert settings["visibility_timeout_s"] == 60.0
    assert settings["max_attempts"] == 4
    assert settings["retention_s"] == 4 * 86_400.0


def test_queue_delete_with_yes(jobs: Cli) -> None:
    post_bodies(jobs.url, "jobs", 1)
    out = jobs.ok("queue", "delete", "jobs", "--yes")
    assert "Deleted queue jobs and its 1 message." in out
    assert "Its dead-letter queue jobs.dlq was kept" in out
    assert [q["name"] for q in jobs.json("queue", "list")] == ["jobs.dlq"]


def test_queue_delete_confirmed_at_prompt(store_jobs: Cli) -> None:
    done = store_jobs.on_terminal("queue", "delete", "jobs", answer="y\n")
    assert done.returncode == 0, stderr_text(done)
    assert [q["name"] for q in store_jobs.json("queue", "list")] == ["jobs.dlq"]


def test_queue_delete_declined_keeps_queue(store_jobs: Cli) -> None:
    done = store_jobs.on_terminal("queue", "delete", "jobs", answer="n\n")
    assert done.returncode == 1
    assert "pass --yes" in stderr_text(done)
    assert "jobs" in [q["name"] for q in store_jobs.json("queue", "list")]


def test_queue_delete_piped_yes_not_trusted(store_jobs: Cli) -> None:
    done = store_jobs("queue", "delete", "jobs", input="y\n")
    assert done.returncode == 1
    assert "not a terminal" in stderr_text(done)
    assert "jobs" in [q["name"] for q in store_jobs.json("queue", "list")]


def test_queue_purge_json(jobs: Cli) -> None:
    post_bodies(jobs.url, "jobs", 1, 2, 3)
    assert jobs.json("queue", "purge", "jobs", "--yes") == {
        "queue": "jobs",
        "messages_deleted": 3,
    }
    assert jobs.json("queue", "show", "jobs")["stats"]["ready"] == 0


def test_queue_purge_declined_keeps_messages(store_jobs: Cli) -> None:
    post_bodies(store_jobs.url, "jobs", 1)
    done = store_jobs.on_terminal("queue", "purge", "jobs", answer="n\n")
    assert done.returncode == 1
    assert store_jobs.json("queue", "show", "jobs")["stats"]["ready"] == 1


# post --------------------------------------------------------------------


def test_post_prints_new_id(jobs: Cli) -> None:
    out = jobs.ok("post", "jobs", '{"order": 42}')
    assert MESSAGE_ID.fullmatch(out.strip())
    [message] = jobs.json("peek", "jobs")["messages"]
    assert message["id"] == out.strip()
    assert message["body"] == {"order": 42}


def test_post_message_options(jobs: Cli) -> None:
    jobs.ok(
        "post",
        "jobs",
        '"hi"',
        "--priority",
        "5",
        "--delay-s",
        "600",
        "--header",
        "trace=abc",
        "--header",
        "kind=test",
    )
    [message] = jobs.json("peek", "jobs")["messages"]
    assert message["priority"] == 5
    assert message["state"] == "delayed"
    assert message["headers"] == {"trace": "abc", "kind": "test"}


def test_post_group_on_fifo(cli: Cli) -> None:
    cli.ok("queue", "create", "orders", "--type", "fifo")
    cli.ok("post", "orders", "1", "--group", "customer-7")
    [message] = cli.json("peek", "orders")["messages"]
    assert message["group"] == "customer-7"


def test_post_stdin_batches(jobs: Cli) -> None:
    lines = "".join(f'{{"n": {n}}}\n' for n in range(2500))
    out = jobs.ok("post", "jobs", "--stdin", input=lines)
    ids = out.split()
    assert len(ids) == 2500
    assert len(set(ids)) == 2500
    assert jobs.json("queue", "show", "jobs")["stats"]["ready"] == 2500
    assert jobs.json("peek", "jobs", "--offset", "2499")["messages"][0]["body"] == {"n": 2499}


def test_post_file_skips_blank_lines(store_jobs: Cli, tmp_path: Path) -> None:
    bodies = tmp_path / "bodies.jsonl"
    bodies.write_text('1\n\n"two"\n[3]\n')
    out = store_jobs.ok("post", "jobs", "--file", str(bodies))
    assert len(out.split()) == 3
    assert [m["body"] for m in store_jobs.json("peek", "jobs")["messages"]] == [1, "two", [3]]


def test_post_bytes_argument(jobs: Cli) -> None:
    jobs.ok("post", "jobs", "not json", "--bytes")
    [message] = jobs.json("peek", "jobs")["messages"]
    assert message["body_base64"] == "bm90IGpzb24="
    assert "body" not in message


def test_post_bytes_stdin_is_one_message(jobs: Cli) -> None:
    jobs.ok("post", "jobs", "--stdin", "--bytes", input=b"a\nb\x00\n")
    [message] = jobs.json("peek", "jobs")["messages"]
    assert message["body_base64"] == "YQpiAAo="


def test_post_dedup_id_returns_first(jobs: Cli) -> None:
    first = jobs.json("post", "jobs", "1", "--dedup-id", "order-1")
    second = jobs.json("post", "jobs", "2", "--dedup-id", "order-1")
    assert first["messages"][0]["deduplicated"] is False
    assert second["messages"][0]["deduplicated"] is True
    assert second["messages"][0]["id"] == first["messages"][0]["id"]
    assert jobs.json("queue", "show", "jobs")["stats"]["ready"] == 1


def test_post_dedup_note_on_stderr(store_jobs: Cli) -> None:
    with connect(store_jobs.url) as client:
        client.post("jobs", [NewMessage(1, dedup_id="order-1")])
    done = store_jobs("post", "jobs", "2", "--dedup-id", "order-1")
    assert done.returncode == 0
    assert "no new message was stored" in stderr_text(done)
    assert MESSAGE_ID.fullmatch(done.stdout.decode().strip())


def test_post_bad_line_posts_nothing(store_jobs: Cli) -> None:
    done = store_jobs("post", "jobs", "--stdin", input='1\n2\n{"broken"\n')
    assert done.returncode == 1
    assert stderr_text(done).startswith("error: line 3 of stdin is not valid JSON")
    assert store_jobs.json("queue", "show", "jobs")["stats"]["ready"] == 0


def test_post_rejected_batch_reports_posted(jobs: Cli) -> None:
    jobs.ok("queue", "update", "jobs", "--max-message-size", "100")
    lines = "1\n" * 1000 + '"' + "x" * 200 + '"\n'
    done = jobs("post", "jobs", "--stdin", input=lines)
    assert done.returncode == 1
    assert len(done.stdout.split()) == 1000
    assert "the 1000 messages before it were posted" in stderr_text(done)
    assert jobs.json("queue", "show", "jobs")["stats"]["ready"] == 1000


# peek --------------------------------------------------------------------


def test_peek_table(jobs: Cli) -> None:
    [message_id] = post_bodies(jobs.url, "jobs", {"text": "x" * 200})
    out = jobs.ok("peek", "jobs")
    assert header_line(out, "ID").split() == [
        "ID",
        "State",
        "Receives",
        "Age",
        "Last",
        "error",
        "Body",
    ]
    row = header_line(out, message_id)
    assert row.split()[1:3] == ["ready", "0"]
    assert re.fullmatch(r"\d+s", row.split()[3])
    assert '{"text":"xxx' in row
    assert row.rstrip().endswith("…")


def test_peek_state_filter(jobs: Cli) -> None:
    post_bodies(jobs.url, "jobs", 1)
    [delayed_id] = post_bodies(jobs.url, "jobs", 2, delay_s=600)
    assert [m["id"] for m in jobs.json("peek", "jobs", "--state", "delayed")["messages"]] == [
        delayed_id
    ]


def test_peek_limit_and_offset(store_jobs: Cli) -> None:
    post_bodies(store_jobs.url, "jobs", 0, 1, 2, 3)
    assert [
        m["body"]
        for m in store_jobs.json("peek", "jobs", "--limit", "2", "--offset", "1")["messages"]
    ] == [1, 2]


def test_peek_hides_receipt(jobs: Cli) -> None:
    post_bodies(jobs.url, "jobs", 1)
    with connect(jobs.url) as client:
        client.reserve("jobs")
    [message] = jobs.json("peek", "jobs")["messages"]
    assert message["state"] == "reserved"
    assert "receipt" not in message


def test_peek_bracket_body_printed_verbatim(store_jobs: Cli) -> None:
    post_bodies(store_jobs.url, "jobs", "[bold]x[/bold]")
    assert "[bold]x[/bold]" in store_jobs.ok("peek", "jobs")


# dlq ---------------------------------------------------------------------


def test_dlq_list_by_source_name(jobs: Cli) -> None:
    post_bodies(jobs.url, "jobs", {"n": 1})
    message_id = dead_letter_one(jobs.url, "jobs", "boom")
    listing = jobs.json("dlq", "list", "jobs")
    assert listing["dlq"] == "jobs.dlq"
    [message] = listing["messages"]
    assert message["id"] == message_id
    assert message["source_queue"] == "jobs"
    assert message["last_error"] == "boom"
    assert message["state"] == "dead"


def test_dlq_list_by_dlq_name(jobs: Cli) -> None:
    post_bodies(jobs.url, "jobs", 1)
    message_id = dead_letter_one(jobs.url, "jobs", "boom")
    listing = jobs.json("dlq", "list", "jobs.dlq")
    assert listing["dlq"] == "jobs.dlq"
    assert [m["id"] for m in listing["messages"]] == [message_id]


def test_dlq_list_custom_dlq_name(cli: Cli) -> None:
    with connect(cli.url) as client:
        client.create_queue("failures")
        client.create_queue("jobs", {"dead_letter_queue": "failures"})
    post_bodies(cli.url, "jobs", 1)
    message_id = dead_letter_one(cli.url, "jobs", "boom")
    assert cli.json("dlq", "list", "jobs")["dlq"] == "failures"
    listing = cli.json("dlq", "list", "failures")
    assert listing["dlq"] == "failures"
    assert [m["id"] for m in listing["messages"]] == [message_id]


def test_dlq_list_table(jobs: Cli) -> None:
    post_bodies(jobs.url, "jobs", 1)
    message_id = dead_letter_one(jobs.url, "jobs", "handler raised KeyError")
    out = jobs.ok("dlq", "list", "jobs")
    assert "DLQ jobs.dlq (of queue jobs)" in out
    header = header_line(out, "ID").split()
    assert header == [
        "ID",
        "Source",
        "queue",
        "Receives",
        "Age",
        "Last",
        "error",
        "Body",
    ]
    row = header_line(out, message_id)
    assert row.split()[1:3] == ["jobs", "1"]
    assert "handler raised KeyError" in row


def test_dlq_redrive_all(jobs: Cli) -> None:
    post_bodies(jobs.url, "jobs", 1, 2)
    first = dead_letter_one(jobs.url, "jobs", "boom")
    second = dead_letter_one(jobs.url, "jobs", "boom")
    assert (
        jobs.ok("dlq", "redrive", "jobs").strip()
        == "Redrove 2 messages from DLQ jobs.dlq."
    )
    ready = jobs.json("peek", "jobs", "--state", "ready")["messages"]
    assert sorted(m["id"] for m in ready) == sorted([first, second])
    assert jobs.json("dlq", "list", "jobs")["messages"] == []


def test_dlq_redrive_by_id(jobs: Cli) -> None:
    post_bodies(jobs.url, "jobs", 1, 2)
    first = dead_letter_one(jobs.url, "jobs", "boom")
    second = dead_letter_one(jobs.url, "jobs", "boom")
    assert jobs.json("dlq", "redrive", "jobs.dlq", "--id", second) == {
        "dlq": "jobs.dlq",
        "redriven": 1,
    }
    assert [m["id"] for m in jobs.json("dlq", "list", "jobs")["messages"]] == [first]


def test_dlq_redrive_limit(jobs: Cli) -> None:
    post_bodies(jobs.url, "jobs", 1, 2, 3)
    for _ in range(3):
        dead_letter_one(jobs.url, "jobs", "boom")
    assert jobs.json("dlq", "redrive", "jobs", "--limit", "2")["redriven"] == 2
    assert len(jobs.json("dlq", "list", "jobs")["messages"]) == 1


# errors ------------------------------------------------------------------

FAILING_COMMANDS = [
    (["queue", "show", "missing"], "queue 'missing' does not exist"),
    (["queue", "create", "bad name!"], "invalid queue name 'bad name!'"),
    (["queue", "create", "jobs"], "queue 'jobs' exists already"),
    (["queue", "create", "other", "--retention-s", "1"], "invalid retention_s 1.0"),
    (["queue", "update", "jobs", "--max-attempts", "0"], "invalid max_attempts 0"),
    (
        ["queue", "update", "missing", "--max-attempts", "2"],
        "queue 'missing' does not exist",
    ),
    (["queue", "delete", "missing", "--yes"], "queue 'missing' does not exist"),
    (["queue", "purge", "missing", "--yes"], "queue 'missing' does not exist"),
    (["post", "missing", "1"], "queue 'missing' does not exist"),
    (["post", "jobs", "1", "--group", "g"], "message 0 has group 'g'"),
    (["post", "jobs", "1", "--priority", "5000"], "invalid priority 5000"),
    (["peek", "missing"], "queue 'missing' does not exist"),
    (["dlq", "list", "missing"], "queue 'missing' does not exist"),
    (["dlq", "redrive", "jobs", "--id", "nope"], "no dead message with id 'nope'"),
]


@pytest.mark.parametrize(("args", "expected"), FAILING_COMMANDS)
def test_error_line_and_no_change(jobs: Cli, args: list[str], expected: str) -> None:
    post_bodies(jobs.url, "jobs", 1)
    before = stored_state(jobs.url)
    done = jobs(*args)
    stderr = stderr_text(done)
    assert done.returncode == 1
    assert stderr.startswith("error: ")
    assert expected in stderr
    assert len(stderr.splitlines()) == 1
    assert done.stdout == b""
    assert stored_state(jobs.url) == before


USAGE_ERRORS = [
    ["queue", "update", "jobs"],
    ["queue", "create", "other", "--max-attempts", "many"],
    ["queue", "create", "other", "--type", "circular"],
    ["post", "jobs"],
    ["post", "jobs", "1", "--stdin"],
    ["post", "jobs", "{broken"],
    ["post", "jobs", "1", "--header", "no-equals-sign"],
    ["post", "jobs", "--stdin", "--dedup-id", "d"],
    ["peek", "jobs", "--state", "gone"],
    ["peek", "jobs", "--limit", "0"],
    ["dlq", "redrive", "jobs", "--id", "x", "--limit", "1"],
]


@pytest.mark.parametrize("args", USAGE_ERRORS)
def test_usage_error_exit_2(store_jobs: Cli, args: list[str]) -> None:
    before = stored_state(store_jobs.url)
    done = store_jobs(*args, input="1\n2\n")
    stderr = stderr_text(done)
    assert done.returncode == 2
    assert "Error: " in stderr
    assert "Traceback" not in stderr
    assert stored_state(store_jobs.url) == before


def test_unopenable_store_error(tmp_path: Path) -> None:
    done = Cli(f"sqlite:///{tmp_path}")("queue", "list")
    assert done.returncode == 1
    assert stderr_text(done).startswith(
        f"error: could not open the SQLite store at '{tmp_path}'"
    )


def test_invalid_url_error() -> None:
    done = Cli("ftp://127.0.0.1/x")("queue", "list")
    assert done.returncode == 1
    assert stderr_text(done).startswith(
        "error: invalid Conveyor URL 'ftp://127.0.0.1/x'"
    )


def test_unreachable_server_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = Cli(url)("queue", "list")
    assert done.returncode == 1
    assert stderr_text(done).startswith(
        f"error: could not reach the Conveyor server at {url}"
    )


def test_server_token(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--token", "s3cret-token")
    try:
        cli = Cli(server.url)
        rejected = cli("queue", "list")
        accepted = cli(
            "queue", "list", "--json", env={"CONVEYOR_TOKEN": "s3cret-token"}
        )
    finally:
        server.stop()
    assert rejected.returncode == 1
    assert stderr_text(rejected).startswith("error: missing or wrong bearer token")
    assert "Pass the token with --token or CONVEYOR_TOKEN" in stderr_text(rejected)
    assert "s3cret-token" not in stderr_text(rejected)
    assert accepted.returncode == 0, stderr_text(accepted)
    assert json.loads(accepted.stdout) == []


# options, help and environment twins -------------------------------------


def test_json_env_twin(store_jobs: Cli) -> None:
    out = store_jobs.ok("queue", "list", env={"CONVEYOR_JSON": "1"})
    assert [q["name"] for q in json.loads(out)] == ["jobs", "jobs.dlq"]


def test_help_shows_env_and_default(store_cli: Cli) -> None:
    out = " ".join(store_cli.ok("queue", "create", "--help").split())
    assert "CONVEYOR_CREATE_VISIBILITY_TIMEOUT_S; default: (30.0)" in out
    assert "default: http://127.0.0.1:8080" in out


def test_python_module_entry() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "--version"],
        capture_output=True,
        timeout=TIMEOUT_S,
    )
    assert done.returncode == 0
    assert done.stdout.decode().startswith("conveyor, version ")


def walk_commands(
    command: click.Command, path: tuple[str, ...] = ()
) -> list[tuple[str, click.Command]]:
    """Return every command and group under `command`, with its full name."""
    found = [(" ".join(path) or "conveyor", command)]
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            found.extend(walk_commands(sub, (*path, name)))
    return found


def settable_options(command: click.Command) -> list[click.Option]:
    """Return the options that set a value.

    --help and --version are left out: they print and exit at once, so an
    environment variable for them would make no sense.
    """
    return [p for p in command.params if isinstance(p, click.Option) and p.expose_value]


ALL_COMMANDS = walk_commands(main)


@pytest.mark.parametrize(
    ("name", "command"), ALL_COMMANDS, ids=[n for n, _ in ALL_COMMANDS]
)
def test_options_have_help_and_env(name: str, command: click.Command) -> None:
    assert command.help, f"{name} has no help text"
    for param in settable_options(command):
        flag = param.opts[0]
        assert param.help, f"{name} {flag} has no help text"
        assert isinstance(param.envvar, str), f"{name} {flag} has no environment twin"
        assert param.envvar.startswith("CONVEYOR_"), (
            f"{name} {flag} envvar {param.envvar}"
        )


def test_command_tree_has_management_commands() -> None:
    names = {name for name, _ in ALL_COMMANDS}
    expected = {
        "queue list",
        "queue create",
        "queue show",
        "queue update",
        "queue delete",
        "queue purge",
        "post",
        "peek",
        "dlq list",
        "dlq redrive",
        "schedules list",
        "schedules show",
        "schedules create",
        "schedules pause",
        "schedules resume",
        "schedules delete",
        "workflows list",
        "workflows show",
        "workflows cancel",
    }
    assert expected <= names


def documented_commands() -> set[str]:
    """Return the command names the README and docs/ mention.

    A listing such as `conveyor queue list|create` counts for each name.
    """
    root = Path(__file__).resolve().parent.parent
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    text = "\n".join(page.read_text() for page in pages)
    names: set[str] = set()
    for match in re.finditer(r"conveyor ((?:[a-z-]+ )?)([a-z-]+(?:\|[a-z-]+)*)", text):
        for leaf in match.group(2).split("|"):
            names.add(f"{match.group(1)}{leaf}".strip())
    return names


LEAF_COMMANDS = [
    name for name, command in ALL_COMMANDS if not isinstance(command, click.Group)
]


@pytest.mark.parametrize("name", LEAF_COMMANDS)
def test_command_is_documented(name: str) -> None:
    assert name in documented_commands(), f"conveyor {name} is in no doc page"


@pytest.mark.parametrize("command_name", ["create", "update"])
def test_every_setting_has_flag(command_name: str) -> None:
    command = main.commands["queue"].commands[command_name]
    assert set(FIELDS) <= {p.name for p in command.params}


def test_dlq_list_empty_says_so(store_jobs: Cli) -> None:
    out = store_jobs.ok("dlq", "list", "jobs")
    assert out.strip() == "No dead messages in DLQ jobs.dlq."
