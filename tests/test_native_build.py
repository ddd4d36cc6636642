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

# The first build, in the main thread or (as demoStream.py and the live pipeline load the codec) in a
# passing thread that the main thread waits on.
BUILDER = """
import sys
sys.path.insert(0, {repo!r})
from utils.cli import run_main
from utils.runtime import native_build
from utils.runtime.cpu_process import in_passing_thread
if {passing}:
    run_main(lambda: in_passing_thread(native_build.available))
else:
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
@pytest.mark.parametrize("passing", [False, True], ids=["main-thread", "passing-thread"])
def test_an_interrupted_build_leaves_no_compiler_process_nor_temporary_file(
    tmp_path: Path, how: signal.Signals, status: int, line: str, child: str, passing: bool
) -> None:
    compiler = tmp_path / "slow-cc"
    compiler.write_text(SLOW_COMPILER.format(folder=tmp_path, child=child))
    compiler.chmod(0o755)
    script = tmp_path / "builder.py"
    script.write_text(BUILDER.format(repo=REPO, passing=passing))
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


# A compiler that logs its arguments and refuses to build.
REFUSING_COMPILER = """#!/bin/sh
echo "$*" >> "{log}"
for arg in "$@"; do
    if [ "$arg" = --version ]; then echo "refusing cc 1.0"; exit 0; fi
done
echo "refusing cc: stop here" >&2
exit 1
"""


def test_cc_with_arguments_is_split_into_words_as_make_does(monkeypatch, tmp_path: Path, fresh_build) -> None:
    """CC="ccache gcc", CC="gcc -m64": the first word is the program, the others come first on its
    command line; a failure names the whole command."""
    native_build = fresh_build()
    folder = tmp_path / "tools dir"
    folder.mkdir()
    compiler, log = folder / "refusing-cc", tmp_path / "calls.txt"
    compiler.write_text(REFUSING_COMPILER.format(log=log))
    compiler.chmod(0o755)
    monkeypatch.setenv("CC", f"'{compiler}' -m64")
    assert native_build.compiler_command() == (str(compiler), "-m64")
    assert not native_build.available()
    assert native_build.unavailable_reason() == (f"compiling engine.c with '{compiler}' -m64 failed: "
                                                "refusing cc: stop here")
    calls = log.read_text().splitlines()
    assert calls[0] == "-m64 --version" and calls[1].startswith("-m64 -O3 ")
    monkeypatch.setenv("CC", "ccache gcc")
    assert native_build.compiler_command() == ("ccache", "gcc")
    monkeypatch.setenv("CC", str(compiler))  # a path with a space, naming a file: taken whole
    assert native_build.compiler_command() == (str(compiler),)


def test_the_cached_engine_follows_the_umask(monkeypatch, tmp_path: Path, fresh_build) -> None:
    """The library gets 0o777 & ~umask, as a linker's output and the other outputs do (not mkstemp's
    owner-only mode), so that a group-shared AUDIODEC_NATIVE_CACHE can load it; its digest 0o666 & ~umask."""
    from utils.runtime import native_build

    engine = native_build.build()  # this machine's, from the usual cache
    if engine is None:
        pytest.skip(f"native engine unavailable: {native_build.unavailable_reason()}")
    built = engine.library._name
    fresh_build()
    compiler = tmp_path / "copying-cc"  # "builds" by writing the engine built above into its -o file
    compiler.write_text('#!/bin/sh\nif [ "$1" = --version ]; then echo "copying cc 1.0"; exit 0; fi\n'
                        'while [ "$1" != -o ]; do shift; done\n'
                        f'cat "{built}" > "$2"\n')
    compiler.chmod(0o755)
    monkeypatch.setenv("CC", str(compiler))
    previous = os.umask(0o002)
    try:
        assert native_build.available(), native_build.unavailable_reason()
    finally:
        os.umask(previous)
    library = Path(native_build.build().library._name)
    assert library.parent == tmp_path / "cache"
    assert library.stat().st_mode & 0o777 == 0o775
    assert Path(f"{library}.sha256").stat().st_mode & 0o777 == 0o664


# /usr/bin/cc on a Mac without the Command Line Tools: xcode-select's stand-in, which asks for them.
XCODE_SELECT_STAND_IN = """#!/bin/sh
echo "$*" >> "{log}"
echo "xcode-select: note: No developer tools were found, requesting install." >&2
echo "See \\`man xcode-select' for more details." >&2
exit 1
"""


@pytest.mark.parametrize("system, fix", [
    ("darwin", "install Apple's Command Line Tools (xcode-select --install), or set CC"),
    ("linux", "install gcc, or set CC"),
])
def test_a_compiler_that_does_not_run_is_named_with_the_fix(monkeypatch, tmp_path: Path, fresh_build, system: str,
                                                             fix: str) -> None:
    """The notice names what the compiler said and how to get one that runs (on macOS, Apple's tools: its
    `cc` is there without them); a process asks the compiler once."""
    native_build = fresh_build()
    compiler, log = tmp_path / "cc", tmp_path / "calls.txt"
    compiler.write_text(XCODE_SELECT_STAND_IN.format(log=log))
    compiler.chmod(0o755)
    monkeypatch.setenv("CC", str(compiler))
    monkeypatch.setattr(native_build.sys, "platform", system)
    assert not native_build.available() and not native_build.available()
    assert native_build.unavailable_reason() == (f"C compiler {compiler} does not run (exit status 1: xcode-select: "
                                                 f"note: No developer tools were found, requesting install.): {fix}")
    assert log.read_text().splitlines() == ["--version"]
    native_build._library.cache_clear()
    monkeypatch.delenv("CC")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert native_build.unavailable_reason() == f"no C compiler found ({fix})"
