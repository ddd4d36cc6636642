#!/usr/bin/env bash
# Run the test suite: creates .venv if missing, installs the pinned requirements, runs pytest.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q -r requirements.txt
bash utils/system_deps.sh
exec .venv/bin/python -m pytest -q "$@"
