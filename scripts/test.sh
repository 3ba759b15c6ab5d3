#!/usr/bin/env bash
# Set up everything the tests need (dcmtk and Orthanc from Debian, the package with its test extras), check
# the code (ruff, mypy, import-linter: scripts/check.sh) and run the whole test suite. PostgreSQL tests run
# when IMEX_TEST_POSTGRES is set to a server URL.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
bash scripts/check.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
