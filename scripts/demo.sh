#!/usr/bin/env bash
# Set up and run the hub on its embedded defaults (SQLite and ./imex-data) with two demo hospitals,
# a demo destination PACS and a sample study routed between them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/imex serve --demo "$@"
