#!/usr/bin/env bash
# Run `conveyor demo` from a fresh virtual environment.
#
# Creates .venv-demo in the repository root with `python3 -m venv` (set
# PYTHON to use another interpreter, 3.11 or newer), installs this checkout
# into it and runs `conveyor demo` with the arguments given to this script,
# for example: bash scripts/demo.sh --limit 500 --keep-running
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

python="${PYTHON:-python3}"
venv=".venv-demo"

if [[ ! -x "$venv/bin/python" ]]; then
    echo "Creating the virtual environment $venv with $python"
    "$python" -m venv "$venv"
fi

echo "Installing Conveyor into $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e .

exec "$venv/bin/conveyor" demo "$@"
