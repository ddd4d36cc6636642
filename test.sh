#!/usr/bin/env bash
# Run the test suite: creates .venv if missing, installs the pinned requirements, runs pytest.
set -euo pipefail
cd -- "$(dirname -- "$0")"
bash utils/setup_venv.sh  # .venv and the pinned requirements (torch's CPU build where no NVIDIA driver)
bash utils/system_deps.sh
exec .venv/bin/python -m pytest -q "$@"
