"""The demo's task: analyse one Python source file.

Workers load `conveyor.demo.tasks:app`. In a worker, the app talks to the
server named by `CONVEYOR_URL`, which `conveyor demo` sets. The demo process
itself points the app at its server with `app.configure(url=...)`.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from pathlib import Path
from typing import Any

from .. import Reject
from ..tasks import Conveyor
from .analysis import SourceError, analyze_file

QUEUE = "demo-stdlib"
MAX_ATTEMPTS = 3
# Short backoffs keep the demo quick: an injected failure is retried after
# at most 0.2 s (full jitter), a second failure after at most 0.4 s.
QUEUE_SETTINGS: dict[str, Any] = {
    "max_attempts": MAX_ATTEMPTS,
    "backoff_base_s": 0.2,
    "backoff_factor": 2.0,
    "backoff_cap_s": 2.0,
    "visibility_timeout_s": 60.0,
}

# The analysed files are data, so the SyntaxWarnings that compiling them
# emits (for example "is" with a literal) would only flood the worker logs.
# The filter applies to the whole process that imports this module.
warnings.filterwarnings("ignore", category=SyntaxWarning)

app = Conveyor()


class InjectedFailure(RuntimeError):
    """A transient failure the demo injects to show retries."""


@app.task(queue=QUEUE, max_attempts=MAX_ATTEMPTS)
def analyze_python_file(
    path: str, failure_rate: float = 0.0, marker_dir: str | None = None
) -> dict[str, Any]:
    """Analyse one source file and return its stats as a dict.

    Raises Reject when the file does not compile, which dead-letters it at
    once. Raises InjectedFailure on the first attempt of a file that
    `should_inject_failure` selects, so its retry succeeds. Without
    marker_dir, no failure is injected.
    The result adds `injected_failure` (whether an earlier attempt failed on
    purpose) and `run_time_ms` (time spent in this call) to the stats.
    """
    started = time.perf_counter()
    injected = marker_dir is not None and should_inject_failure(path, failure_rate)
    if injected and mark_first_attempt(Path(marker_dir), path):
        raise InjectedFailure(
            f"injected transient failure for {path} (--failure-rate "
            f"{failure_rate:g}); the retry will succeed"
        )
    try:
        stats = analyze_file(path)
    except SourceError as exc:
        raise Reject(str(exc)) from exc
    return {
        **stats.to_dict(),
        "injected_failure": injected,
        "run_time_ms": (time.perf_counter() - started) * 1000.0,
    }


def should_inject_failure(path: str, failure_rate: float) -> bool:
    """Return whether the first attempt for path fails on purpose.

    The choice depends only on the path, so a run over the same files
    injects the same failures: SHA-256 of the path, read as a fraction of
    1, is compared with failure_rate (0 to 1).
    """
    digest = hashlib.sha256(path.encode("utf-8", "surrogateescape")).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return fraction < failure_rate


def mark_first_attempt(marker_dir: Path, path: str) -> bool:
    """Create the failure marker of path and return True, or False if it existed.

    A task does not see its attempt number, so the marker file is what
    tells the first attempt from a retry, also across worker processes. The
    demo counts the markers to show retries while it runs.
    """
    digest = hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()
    marker_dir.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(marker_dir / digest, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w") as marker:
        marker.write(path + "\n")
    return True
