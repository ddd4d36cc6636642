#!/usr/bin/env bash
# Run the test suite: creates .venv if missing, installs the pinned requirements, runs pytest.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m utils.install_requirements  # torch's CPU build where there is no NVIDIA driver
bash utils/system_deps.sh
exec .venv/bin/python -m pytest -q "$@"
