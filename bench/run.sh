#!/usr/bin/env bash
# Create bench/.venv, install the pinned peers and Conveyor, then run bench/run.py.
# Arguments are passed on to run.py; see `bench/run.sh --help`.
set -euo pipefail

bench_dir="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
venv="$bench_dir/.venv"

if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$bench_dir/requirements.txt"

# If Conveyor fails to install, the peers still run and the report marks the
# Conveyor rows as not available.
if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$bench_dir/.."; then
    echo "warning: installing conveyor from $bench_dir/.. failed; its rows will be marked not available" >&2
fi

cd "$bench_dir"
exec "$venv/bin/python" run.py "$@"
