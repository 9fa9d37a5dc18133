"""Tests of `conveyor demo`: the real command, server and workers, on stdlib files.

The end-to-end tests run the console script as a subprocess and check what a
user sees. The demo's `--root` points at a standard library folder that ships
files which do not compile on purpose, so the DLQ path is exercised.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

from conveyor.demo.analysis import SourceError, analyze_file
from conveyor.demo.files import find_python_files
from conveyor.demo.report import DeadFile, format_number, percentile, pick_examples
from conveyor.demo.tasks import mark_first_attempt, should_inject_failure

STDLIB = Path(sysconfig.get_paths()["stdlib"])
CONVEYOR = Path(sys.executable).with_name("conveyor")
# The number of files the end-to-end run analyses, at most.
LIMIT = 300
FAILURE_RATE = 0.2
DEMO_TIMEOUT_S = 120
# Standard library folders that contain files which do not compile on
# purpose (lib2to3 was removed in Python 3.13; some distributions leave out
# the test package).
ROOT_CANDIDATES = ("test", "lib2to3")


# Helpers ------------------------------------------------------------------


def python_files(root: Path) -> list[Path]:
    """List the .py files under root in path order, skipping site-packages."""
    skipped = {"site-packages", "dist-packages", "__pycache__"}
    files = [path for path in root.rglob("*.py") if not skipped & set(path.relative_to(root).parts)]
    return sorted(files)


def compiles(path: Path) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        try:
            compile(path.read_bytes(), str(path), "exec", dont_inherit=True)
        except (SyntaxError, ValueError):
            return False
    return True


@dataclass
class DemoInput:
    """A stdlib folder, the --limit to use, the files it selects and the broken ones."""

    root: Path
    limit: int
    files: list[Path]
    broken: set[str]


def demo_input() -> DemoInput:
    """Pick a stdlib folder whose first files include some that do not compile.

    The limit is below the folder's file count, so --limit always drops files.
    """
    for name in ROOT_CANDIDATES:
        root = STDLIB / name
        if not root.is_dir():
            continue
        all_files = python_files(root)
        limit = min(LIMIT, len(all_files) - 1)
        files = all_files[:limit]
        broken = {str(path) for path in files if not compiles(path)}
        if broken:
            return DemoInput(root, limit, files, broken)
    pytest.skip(f"no folder of {ROOT_CANDIDATES} under {STDLIB} has files that do not compile")


def demo_env() -> dict[str, str]:
    env = dict(os.environ)
    # Wide lines keep every path of the summary on one line.
    env["COLUMNS"] = "400"
    for name in list(env):
        if name.startswith("CONVEYOR_"):
            del env[name]
    return env


def demo_command(root: Path, data_dir: Path, *extra: str) -> list[str]:
    return [
        str(CONVEYOR), "demo",
        "--root", str(root),
        "--data-dir", str(data_dir),
        "--workers", "2",
        "--concurrency", "2",
        *extra,
    ]


def summary_count(output: str, label: str) -> int:
    match = re.search(rf"^\s*{label}\s+(\d+)\b", output, re.MULTILINE)
    assert match is not None, f"no '{label}' line in the output:\n{output}"
    return int(match.group(1))


def printed_server_url(output: str) -> str:
    match = re.search(r"http://127\.0\.0\.1:\d+", output)
    assert match is not None, f"no server URL in the output:\n{output}"
    return match.group(0)


def port_is_open(url: str) -> bool:
    port = int(url.rsplit(":", 1)[1])
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def processes_mentioning(text: str) -> list[int]:
    """Return the pids of processes whose command line contains text (Linux)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            pids.append(int(entry.name))
    return pids


# The whole demo -----------------------------------------------------------


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, list[Path], set[str]]:
    """Run the demo once over at most LIMIT files; the tests below check its output."""
    selected = demo_input()
    data_dir = tmp_path_factory.mktemp("demo-data")
    command = demo_command(
        selected.root, data_dir,
        "--limit", str(selected.limit),
        "--failure-rate", str(FAILURE_RATE),
    )
    completed = subprocess.run(
        command, capture_output=True, text=True, env=demo_env(), timeout=DEMO_TIMEOUT_S
    )
    return completed, selected.files, selected.broken


@pytest.mark.acceptance
def test_demo_exits_zero(demo_run):
    completed, _, _ = demo_run
    assert completed.returncode == 0, completed.stdout + completed.stderr


@pytest.mark.acceptance
def test_demo_counts_every_file(demo_run):
    completed, files, _ = demo_run
    output = completed.stdout
    found = summary_count(output, "files found")
    processed = summary_count(output, "processed")
    dead = summary_count(output, "dead-lettered")
    assert found == len(files)
    assert processed + dead == len(files)


@pytest.mark.acceptance
def test_demo_dead_letters_broken_files(demo_run):
    completed, _, broken = demo_run
    assert summary_count(completed.stdout, "dead-lettered") == len(broken)


@pytest.mark.acceptance
def test_demo_examples_do_not_compile(demo_run):
    completed, _, broken = demo_run
    section = completed.stdout.split("Dead-lettered files", 1)
    assert len(section) == 2, completed.stdout
    shown = re.findall(r"^  (/\S+\.py)$", section[1], re.MULTILINE)
    assert shown, section[1]
    for path in shown:
        assert path in broken
        assert not compiles(Path(path))


@pytest.mark.acceptance
def test_demo_shows_retries(demo_run):
    completed, _, _ = demo_run
    assert summary_count(completed.stdout, "retried") > 0


@pytest.mark.acceptance
def test_demo_prints_latency_percentiles(demo_run):
    completed, _, _ = demo_run
    line = re.search(r"^\s*latency\s+(.*)$", completed.stdout, re.MULTILINE)
    assert line is not None, completed.stdout
    assert re.search(r"p50 [\d.,]+ s", line.group(1))
    assert re.search(r"p99 [\d.,]+ s", line.group(1))


@pytest.mark.acceptance
def test_demo_prints_throughput(demo_run):
    completed, _, _ = demo_run
    assert re.search(r"^\s*throughput\s+[\d,.]+ tasks/s", completed.stdout, re.MULTILINE)


@pytest.mark.acceptance
def test_demo_prints_dlq_commands(demo_run):
    completed, _, _ = demo_run
    url = printed_server_url(completed.stdout)
    assert f"conveyor dlq list demo-stdlib.dlq --url {url}" in completed.stdout
    assert f"conveyor dlq redrive demo-stdlib.dlq --url {url}" in completed.stdout
    assert "--keep-running" in completed.stdout


@pytest.mark.acceptance
def test_demo_stops_server_and_workers(demo_run):
    completed, _, _ = demo_run
    url = printed_server_url(completed.stdout)
    assert not port_is_open(url)
    if Path("/proc").is_dir():
        assert processes_mentioning(url) == []


@pytest.mark.acceptance
def test_demo_keep_running_until_interrupt(tmp_path):
    command = demo_command(demo_input().root, tmp_path, "--limit", "20", "--keep-running")
    demo = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=demo_env()
    )
    lines = []
    try:
        deadline = time.monotonic() + DEMO_TIMEOUT_S
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "press Ctrl-C to stop" in line:
                break
        output = "".join(lines)
        assert "press Ctrl-C to stop" in output, output
        url = printed_server_url(output)
        assert port_is_open(url)
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=DEMO_TIMEOUT_S)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 0, output + rest
    assert not port_is_open(url)


@pytest.mark.acceptance
def test_demo_sigterm_stops_children(tmp_path):
    command = demo_command(STDLIB, tmp_path, "--limit", str(LIMIT))
    demo = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=demo_env()
    )
    try:
        line = ""
        while "Server ready" not in line:
            line = demo.stdout.readline()
            assert line, "the demo ended before its server was ready"
        url = printed_server_url(line)
        demo.send_signal(signal.SIGTERM)
        output, _ = demo.communicate(timeout=DEMO_TIMEOUT_S)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 128 + signal.SIGTERM, output
    assert "Interrupted" in output
    assert not port_is_open(url)


@pytest.mark.acceptance
def test_demo_empty_root_fails(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    completed = subprocess.run(
        demo_command(empty, tmp_path / "data"),
        capture_output=True, text=True, env=demo_env(), timeout=DEMO_TIMEOUT_S,
    )
    assert completed.returncode == 1
    assert "no .py files found" in completed.stderr


# The task's parts ---------------------------------------------------------


def test_analyze_counts_definitions(tmp_path):
    source = "class A:\n    def f(self):\n        pass\n\nasync def g():\n    def h(): pass\n"
    path = tmp_path / "sample.py"
    path.write_text(source)
    stats = analyze_file(path)
    assert stats.functions == 3
    assert stats.classes == 1
    assert stats.lines == 6
    assert stats.bytes == len(source.encode())


def test_analyze_counts_characters_not_bytes(tmp_path):
    path = tmp_path / "latin.py"
    path.write_bytes("# -*- coding: latin-1 -*-\nname = 'caf\xe9'\n".encode("latin-1"))
    stats = analyze_file(path)
    assert stats.characters == stats.bytes
    assert stats.characters == len("# -*- coding: latin-1 -*-\nname = 'café'\n")


def test_analyze_matches_stdlib_file():
    path = STDLIB / "argparse.py"
    data = path.read_bytes()
    nodes = list(ast.walk(ast.parse(data)))
    functions = sum(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in nodes)
    classes = sum(isinstance(n, ast.ClassDef) for n in nodes)
    stats = analyze_file(path)
    assert stats.functions == functions
    assert stats.classes == classes
    assert stats.lines == len(data.splitlines())
    assert stats.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    "source",
    [
        "print 'python 2'\n",
        "from __future__ import braces\n",
        "x = 1\nfrom __future__ import annotations\n",
        "def f():\n    nonlocal x\n",
    ],
)
def test_analyze_rejects_invalid_source(tmp_path, source):
    path = tmp_path / "bad.py"
    path.write_text(source)
    with pytest.raises(SourceError, match="does not compile"):
        analyze_file(path)


def test_analyze_rejects_unknown_encoding(tmp_path):
    path = tmp_path / "bad_coding.py"
    path.write_bytes(b"# -*- coding: no-such-codec -*-\nx = 1\n")
    with pytest.raises(SourceError, match="cannot be decoded"):
        analyze_file(path)


def test_injection_depends_only_on_path():
    paths = [f"/lib/module_{index}.py" for index in range(2000)]
    first = [should_inject_failure(path, 0.1) for path in paths]
    second = [should_inject_failure(path, 0.1) for path in paths]
    assert first == second
    assert 100 < sum(first) < 300


def test_injection_rate_bounds():
    assert not should_inject_failure("/lib/a.py", 0.0)
    assert should_inject_failure("/lib/a.py", 1.0)


def test_marker_fails_first_attempt_only(tmp_path):
    assert mark_first_attempt(tmp_path / "markers", "/lib/a.py") is True
    assert mark_first_attempt(tmp_path / "markers", "/lib/a.py") is False
    assert mark_first_attempt(tmp_path / "markers", "/lib/b.py") is True


def test_find_files_skips_site_packages(tmp_path):
    for relative in ("a.py", "pkg/b.py", "site-packages/c.py", "pkg/notes.txt"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("")
    found = find_python_files(tmp_path)
    assert found == [tmp_path / "a.py", tmp_path / "pkg" / "b.py"]


def test_find_files_limit_keeps_order(tmp_path):
    for name in ("c.py", "a.py", "b.py"):
        (tmp_path / name).write_text("")
    assert find_python_files(tmp_path, limit=2) == [tmp_path / "a.py", tmp_path / "b.py"]


@pytest.mark.parametrize(
    ("values", "percent", "expected"),
    [
        ([5.0], 50, 5.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
        (list(map(float, range(1, 101))), 99, 99.0),
        (list(map(float, range(1, 101))), 100, 100.0),
        ([3.0, 1.0, 2.0], 99, 3.0),
    ],
)
def test_percentile_nearest_rank(values, percent, expected):
    assert percentile(values, percent) == expected


def test_percentile_empty_raises():
    with pytest.raises(ValueError):
        percentile([], 50)


def test_examples_spread_over_folders():
    dead = [DeadFile(f"/lib/a/{index}.py", "SyntaxError", 1) for index in range(6)]
    dead.append(DeadFile("/lib/b/x.py", "SyntaxError", 1))
    examples = pick_examples(dead, 3)
    assert [item.path for item in examples] == ["/lib/a/0.py", "/lib/a/1.py", "/lib/b/x.py"]


def test_examples_fewer_than_count():
    dead = [DeadFile("/lib/a/0.py", None, 1)]
    assert pick_examples(dead, 5) == dead


def test_analyze_counts_nested_statements(tmp_path):
    source = (
        "try:\n    def a(): pass\nexcept ValueError:\n    class B: pass\n"
        "else:\n    def c(): pass\nfinally:\n    def d(): pass\n"
        "match x:\n    case 1:\n        def e(): pass\n"
        "with open('f') as f:\n    for i in []:\n        while True:\n"
        "            if i:\n                class F: pass\n            else:\n"
        "                def g(): pass\n"
        "h = lambda: 0\n"
        "@decorator\ndef i(): return [lambda: 0 for _ in ()]\n"
    )
    path = tmp_path / "nested.py"
    path.write_text(source)
    stats = analyze_file(path)
    assert stats.functions == 6
    assert stats.classes == 2


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.000123, "0.000"), (0.5274, "0.527"), (13.04, "13"), (607.4, "607"), (1234.5, "1,234")],
)
def test_format_number_without_exponent(value, expected):
    assert format_number(value) == expected
