#!/usr/bin/env bash
# Set up everything the tests need (dcmtk and Orthanc from Debian, the package with its test extras), check
# the code (ruff, mypy, import-linter: scripts/check.sh) and run the whole test suite. PostgreSQL tests run
# when IMEX_TEST_POSTGRES is set to a server URL.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
bash scripts/check.sh
# on both cores, each test file on one worker (its module fixtures set up once): most of the suite's time
# is spent waiting on peers (dcmtk, Orthanc, chromium, PostgreSQL), which overlaps well
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile --durations=30 "$@"
