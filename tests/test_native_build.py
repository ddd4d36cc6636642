"""utils/runtime/native_build.py around the compiler: an interrupted first build ends every process of
the compiler and leaves no temporary file. Fake compilers stand in for gcc: no real build is needed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

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
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # as started from a terminal: a suite run in the
# background (`nohup ... &`) hands its children SIGINT ignored, which Python then keeps
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


# A compiler that logs its arguments and, asked to build, runs `{build}`.
FAKE_COMPILER = """#!/bin/sh
echo "$*" >> "{log}"
if [ "$1" = --version ]; then echo "fake cc 1.0"; exit 0; fi
{build}
"""
LD_OUT_OF_SPACE = ('echo "/usr/bin/ld: final link failed: No space left on device" >&2\n'
                   'echo "collect2: error: ld returned 1 exit status" >&2\nexit 1')
WRITES_OUTPUT = 'while [ "$1" != -o ]; do shift; done\necho "a library" > "$2"'


def fake_compiler(monkeypatch, tmp_path: Path, build: str) -> Path:
    """Makes $CC a FAKE_COMPILER that runs `build`; returns the file it logs its command lines to."""
    compiler, log = tmp_path / "fake-cc", tmp_path / "calls.txt"
    compiler.write_text(FAKE_COMPILER.format(log=log, build=build))
    compiler.chmod(0o755)
    monkeypatch.setenv("CC", str(compiler))
    return log


def builds(log: Path) -> int:
    """How many times the fake compiler was asked to build (not for its --version)."""
    return sum(line != "--version" for line in log.read_text().splitlines()) if log.exists() else 0


def test_without_a_home_folder_the_engine_gives_way_with_the_fix(monkeypatch, tmp_path: Path, fresh_build) -> None:
    """A user with neither HOME nor a passwd entry (`docker run --user 23456`): no traceback, but the
    notice that names AUDIODEC_NATIVE_CACHE; XDG_CACHE_HOME, where it is set, gives the cache folder."""
    native_build = fresh_build()
    log = fake_compiler(monkeypatch, tmp_path, LD_OUT_OF_SPACE)
    for variable in ("AUDIODEC_NATIVE_CACHE", "HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(variable, raising=False)

    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", no_home)
    assert not native_build.available()
    assert native_build.unavailable_reason() == (
        "no folder to cache it in (HOME is unset and this user has no home directory): set AUDIODEC_NATIVE_CACHE "
        "to a folder you can write, on a disk that lets programs run")
    assert builds(log) == 0
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # ignored, as the XDG spec asks
    native_build._library.cache_clear()
    assert native_build.unavailable_reason().startswith("no folder to cache it in")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    native_build._library.cache_clear()
    assert not native_build.available() and builds(log) == 1
    assert (tmp_path / "xdg" / "audiodec" / "native").is_dir()


def test_xdg_cache_home_is_followed_where_there_is_a_home(monkeypatch, tmp_path: Path, fresh_build) -> None:
    native_build = fresh_build()
    fake_compiler(monkeypatch, tmp_path, LD_OUT_OF_SPACE)
    monkeypatch.delenv("AUDIODEC_NATIVE_CACHE")
    monkeypatch.setattr(Path, "home", lambda: tmp_path / "home")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    native_build.available()
    assert (tmp_path / "xdg" / "audiodec" / "native").is_dir() and not (tmp_path / "home").exists()
    monkeypatch.delenv("XDG_CACHE_HOME")
    native_build._library.cache_clear()
    native_build.available()
    assert (tmp_path / "home" / ".cache" / "audiodec" / "native").is_dir()


@pytest.mark.parametrize("flag, blocks, cause", [
    (getattr(os, "ST_NOEXEC", 8), 1 << 20, "is on a disk mounted noexec, from which the system runs no programs"),
    (0, 3, "the disk of {cache} is full (12 KiB free, too little for the engine): free space there, or"),
], ids=["noexec", "full"])  # fmt: skip
def test_a_cache_on_a_disk_that_cannot_hold_a_running_engine_is_found_before_compiling(
    monkeypatch, tmp_path: Path, fresh_build, flag: int, blocks: int, cause: str
) -> None:
    """A noexec mount or a full disk fails the build every time: found before compiling, each run, and
    named with the fix."""
    native_build = fresh_build()
    log = fake_compiler(monkeypatch, tmp_path, WRITES_OUTPUT)
    cache, statvfs = tmp_path / "cache", os.statvfs

    def disk(path: os.PathLike) -> object:
        if Path(path) != cache:
            return statvfs(path)
        return SimpleNamespace(f_flag=flag, f_bavail=blocks, f_frsize=4096)

    monkeypatch.setattr(os, "statvfs", disk)
    for _ in range(2):
        native_build._library.cache_clear()
        assert not native_build.available()
        reason = native_build.unavailable_reason()
        assert cause.format(cache=cache) in reason and str(cache) in reason
        assert reason.endswith("set AUDIODEC_NATIVE_CACHE to a folder you can write, on a disk that lets programs run")
    assert builds(log) == 0 and list(cache.iterdir()) == []


@pytest.mark.parametrize("summary", [
    "collect2: error: ld returned 1 exit status",
    "clang: error: linker command failed with exit code 1 (use -v to see invocation)",
])  # fmt: skip
def test_a_link_that_runs_out_of_space_names_the_cause_not_the_linkers_summary(
    monkeypatch, tmp_path: Path, fresh_build, summary: str
) -> None:
    native_build = fresh_build()
    fake_compiler(monkeypatch, tmp_path, LD_OUT_OF_SPACE.replace("collect2: error: ld returned 1 exit status", summary))
    assert not native_build.available()
    reason = native_build.unavailable_reason()
    assert reason.startswith(f"compiling engine.c with {tmp_path / 'fake-cc'} failed: /usr/bin/ld: final link "
                             f"failed: No space left on device: free space in {tmp_path / 'cache'} and in the "
                             "temporary folder ")
    assert "AUDIODEC_NATIVE_CACHE" in reason and "collect2" not in reason and "linker command" not in reason


def test_a_cache_folder_that_cannot_be_made_is_named_with_the_fix(monkeypatch, tmp_path: Path, fresh_build) -> None:
    native_build = fresh_build()
    log = fake_compiler(monkeypatch, tmp_path, WRITES_OUTPUT)
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("AUDIODEC_NATIVE_CACHE", str(tmp_path / "file" / "cache"))
    assert not native_build.available() and builds(log) == 0
    assert native_build.unavailable_reason() == (
        f"cannot build the engine in {tmp_path / 'file' / 'cache'} (Not a directory): set AUDIODEC_NATIVE_CACHE to a "
        "folder you can write, on a disk that lets programs run")


def test_a_cache_folder_that_may_not_be_entered_is_named_with_the_fix(monkeypatch, tmp_path: Path,
                                                                     fresh_build) -> None:
    """A HOME of another user's (`docker run --user` on an image with HOME=/root): asking whether the
    cached engine exists raises PermissionError there, which was a traceback; now the engine's notice."""
    native_build = fresh_build()
    log = fake_compiler(monkeypatch, tmp_path, WRITES_OUTPUT)
    monkeypatch.setenv("AUDIODEC_NATIVE_CACHE", str(tmp_path / "theirs"))
    exists = Path.exists

    def locked(path: Path, *args, **kwargs) -> bool:
        if path.parent == tmp_path / "theirs":
            raise PermissionError(13, "Permission denied", str(path))
        return exists(path, *args, **kwargs)

    monkeypatch.setattr(Path, "exists", locked)
    assert not native_build.available() and builds(log) == 0
    assert native_build.unavailable_reason() == (
        f"cannot build the engine in {tmp_path / 'theirs'} (Permission denied): set AUDIODEC_NATIVE_CACHE to a "
        "folder you can write, on a disk that lets programs run")


NOEXEC_REASON = ("the system runs no programs from {cache} (the engine failed to map segment: a noexec mount, or a "
                 "policy such as SELinux's): set AUDIODEC_NATIVE_CACHE to a folder you can write, on a disk that lets "
                 "programs run")


def test_a_fresh_build_that_the_system_will_not_map_names_the_cause(monkeypatch, tmp_path: Path, fresh_build) -> None:
    """A build that loads nowhere in the cache (a noexec mount that statvfs does not tell, a policy):
    the probe's 'failed to map segment' named as such, with the fix."""
    native_build = fresh_build()
    fake_compiler(monkeypatch, tmp_path, WRITES_OUTPUT)
    monkeypatch.setattr(native_build, "PROBE", "import sys\nraise OSError(f'{sys.argv[1]}: failed to map segment "
                                               "from shared object')\n")
    assert not native_build.available()
    assert native_build.unavailable_reason() == NOEXEC_REASON.format(cache=tmp_path / "cache")


def test_a_cached_engine_that_the_system_will_not_map_names_the_cause(monkeypatch, tmp_path: Path,
                                                                     fresh_build) -> None:
    """A cache folder remounted noexec after the build: named as such, and not built again."""
    native_build = fresh_build()
    log = fake_compiler(monkeypatch, tmp_path, WRITES_OUTPUT)
    monkeypatch.setattr(native_build, "PROBE", "pass")

    def loader(name: str) -> None:
        raise OSError(f"{name}: failed to map segment from shared object")

    monkeypatch.setattr(native_build.ctypes, "CDLL", loader)
    for _ in range(2):
        native_build._library.cache_clear()
        assert not native_build.available()
        assert native_build.unavailable_reason() == NOEXEC_REASON.format(cache=tmp_path / "cache")
    assert builds(log) == 1
