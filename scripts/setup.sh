#!/usr/bin/env bash
# Prepare this checkout: a virtual environment in .venv with imex installed (and its test extras
# plus the DICOM peers from Debian when called with --test). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

if [[ $want_test == 1 ]]; then
  missing=()
  command -v storescu >/dev/null || missing+=(dcmtk)
  [[ -x /usr/sbin/Orthanc ]] || missing+=(orthanc)
  # Playwright cannot download its own browser here: the page tests drive Debian's chromium.
  [[ -x /usr/bin/chromium ]] || missing+=(chromium)
  # the reverse proxy docs/security.md recommends, run in front of a hub by tests/e2e/security/test_reverse_proxy.py
  [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
  # certutil and pk12util give chromium a client certificate (tests/e2e/security/test_certificate_signin.py)
  command -v certutil >/dev/null || missing+=(libnss3-tools)
  if (( ${#missing[@]} )); then
    sudo=""
    [[ $(id -u) -ne 0 ]] && sudo="sudo"
    echo "installing ${missing[*]} from Debian"
    $sudo apt-get update -qq
    # Debian's orthanc package may try to start a system service; policy-rc.d or no systemd stops that,
    # and the tests start their own Orthanc processes on free ports anyway.
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

PYTHON="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if [[ $want_test == 1 ]]; then
  .venv/bin/python -m pip install -q -e ".[test]"
else
  .venv/bin/python -m pip install -q -e .
fi
if [[ $want_test == 1 ]]; then
  # the single sign-on tests' OpenID Connect provider (oidc-provider under node): skipped without node
  if command -v node >/dev/null && command -v npm >/dev/null; then
    (cd tests/helpers/oidc_idp && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    # axe-core for the accessibility checks of the main pages (tests/e2e/web/test_accessibility.py)
    (cd tests/helpers/a11y && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  else
    echo "node/npm not found: the single sign-on tests that need a real identity provider and the accessibility checks will be skipped"
  fi
fi
