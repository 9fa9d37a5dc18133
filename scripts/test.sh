#!/usr/bin/env bash
# Create a fresh virtual environment in .venv-test, install Conveyor with its
# test dependencies, and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv-test
.venv-test/bin/python -m pip install --quiet --upgrade pip
.venv-test/bin/python -m pip install --quiet -e '.[test]'

export PATH="$PWD/.venv-test/bin:$PATH"
exec .venv-test/bin/python -m pytest "$@"
