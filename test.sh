#!/usr/bin/env bash
# Run the test suite: creates .venv if missing, installs the pinned requirements, (as root) the Debian
# packages some tests use (utils/system_deps.sh; AUDIODEC_SYSTEM_DEPS=0 leaves them out), runs pytest.
set -euo pipefail
cd -- "$(dirname -- "$0")"
bash utils/setup_venv.sh  # .venv and the pinned requirements (torch's CPU build where no NVIDIA driver)
bash utils/system_deps.sh
exec .venv/bin/python -m pytest -q "$@"
