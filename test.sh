#!/usr/bin/env bash
# Run the test suite: creates .venv if missing, installs the pinned requirements, (as root) the Debian
# packages some tests use (utils/system_deps.sh; AUDIODEC_SYSTEM_DEPS=0 leaves them out), runs pytest
# (pytest-xdist: a worker per core).
set -euo pipefail
cd -- "$(dirname -- "$0")"
bash utils/setup_venv.sh  # .venv and the pinned requirements (torch's CPU build where no NVIDIA driver)
bash utils/system_deps.sh
# A worker per core this process may use (8 at most: each holds torch and a model or two in memory),
# each given whole test files: most tests wait on one thread (a command starting, a small model).
# `./test.sh -n 0` runs the suite in one process.
exec .venv/bin/python -m pytest -q -n auto --maxprocesses 8 --dist loadfile "$@"
