#!/usr/bin/env bash
# The code's own checks, before the tests: lint and format (ruff), types (mypy) and the layers
# (import-linter's contracts in pyproject.toml). Run after scripts/setup.sh --test.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
.venv/bin/mypy
.venv/bin/lint-imports
