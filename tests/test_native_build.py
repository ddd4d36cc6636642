"""utils/runtime/native_build.py around the compiler: an interrupted first build ends every process of
the compiler and leaves no temporary file. Fake compilers stand in for gcc: no real build is needed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc (Linux)")

# A slow compiler as gcc runs: a pass in a child process (cc1), and a temporary file that the driver
# removes when it gets SIGTERM. `{child}` is the pass's command line.
SLOW_COMPILER = """#!/bin/sh
if [ "$1" = --version ]; then echo "slow cc 1.0"; exit 0; fi
temporary="{folder}/pass.s"
: > "$temporary"
trap 'rm -f "$temporary"; exit 143' TERM
{child} &
echo $! > "{folder}/child.pid"
echo $$ > "{folder}/driver.pid"
wait
"""

BUILDER = """
import sys
sys.path.insert(0, {repo!r})
from utils.cli import run_main
from utils.runtime import native_build
run_main(native_build.available)
"""


def running(pid: int) -> bool:
    """Whether process `pid` exists and has not ended (a zombie that no parent reaps has)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("how, status, line, child", [
    (signal.SIGTERM, 143, "terminated", "sleep 300"),
    (signal.SIGINT, 130, "interrupted", "sleep 300"),
    (signal.SIGTERM, 143, "terminated", "sh -c 'trap \"\" TERM; exec sleep 300'"),  # a pass deaf to SIGTERM
], ids=["SIGTERM", "SIGINT", "SIGTERM-ignored"])  # fmt: skip
def test_an_interrupted_build_leaves_no_compiler_process_nor_temporary_file(
    tmp_path: Path, how: signal.Signals, status: int, line: str, child: str
) -> None:
    compiler = tmp_path / "slow-cc"
    compiler.write_text(SLOW_COMPILER.format(folder=tmp_path, child=child))
    compiler.chmod(0o755)
    script = tmp_path / "builder.py"
    script.write_text(BUILDER.format(repo=REPO))
    env = dict(os.environ, CC=str(compiler), AUDIODEC_NATIVE_CACHE=str(tmp_path / "cache"))
    builder = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "driver.pid").exists() and time.monotonic() < deadline and builder.poll() is None:
            time.sleep(0.05)
        time.sleep(0.2)  # the driver is in `wait`
        pids = [int((tmp_path / f"{name}.pid").read_text()) for name in ("driver", "child")]
        builder.send_signal(how)
        _, stderr = builder.communicate(timeout=60)
        assert builder.returncode == status and stderr.strip().splitlines() == [line], stderr
        assert [pid for pid in pids if running(pid)] == []
        assert not (tmp_path / "pass.s").exists()
        assert list((tmp_path / "cache").iterdir()) == []  # the library's temporary file is gone too
    finally:
        builder.kill()
        builder.wait()
        for pid in pids:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
