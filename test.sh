#!/usr/bin/env bash
# Run the test suite: creates .venv if missing, installs the pinned requirements, (as root) the Debian
# packages some tests use (utils/system_deps.sh; AUDIODEC_SYSTEM_DEPS=0 leaves them out), runs pytest
# (pytest-xdist: a worker per core).
set -euo pipefail
cd -- "$(dirname -- "$0")"
bash utils/setup_venv.sh  # .venv and the pinned requirements (torch's CPU build where no NVIDIA driver)
bash utils/system_deps.sh
# A worker per core (8 at most: each holds torch and a model or two in memory), each given whole test
# files: most tests wait on one thread (a command starting, a small model). `./test.sh -n 0` runs the
# suite in one process.
cores=$(.venv/bin/python -c 'import os; print(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)')
workers=$((cores > 8 ? 8 : cores))
[ "${workers}" -gt 1 ] || workers=0
exec .venv/bin/python -m pytest -q -n "${workers}" --dist loadfile "$@"
