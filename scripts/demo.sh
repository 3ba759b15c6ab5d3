#!/usr/bin/env bash
# Set up and run the hub on its embedded defaults (SQLite and ./imex-data) with two demo hospitals and
# what surrounds them: King's PACS to search and retrieve from, Imperial's PACS, a RIS for both, a mail
# catcher (read at /demo/mail), one user per role, and sample studies pushed once with their reports.
# Ports: IMEX_DICOM_PORT, IMEX_HTTP_PORT, IMEX_HL7_PORT; the banner says where everything listens.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/imex serve --demo "$@"
