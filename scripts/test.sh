#!/usr/bin/env bash
# Set up everything the tests need (dcmtk and Orthanc from Debian, the package with its test extras), check
# the code (ruff, mypy, import-linter: scripts/check.sh) and run the whole test suite. PostgreSQL tests run
# when IMEX_TEST_POSTGRES is set to a server URL.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
bash scripts/check.sh
PYTEST=(.venv/bin/python -m pytest -q -p no:cacheprovider)
if (( $# )); then exec "${PYTEST[@]}" "$@"; fi  # chosen tests: as given, on one core
# The suite on both cores, each test file on one worker (its module fixtures set up once): most of its time
# is spent waiting on peers (dcmtk, Orthanc, chromium, PostgreSQL), which overlaps well. The HTTP listener's
# connection-limit tests measure the server under connection pressure, so they run alone afterwards.
HOSTILE_HTTP=tests/e2e/security/test_http_hostile.py
"${PYTEST[@]}" -n 2 --dist loadfile --durations=30 --ignore="$HOSTILE_HTTP"
exec "${PYTEST[@]}" "$HOSTILE_HTTP"
