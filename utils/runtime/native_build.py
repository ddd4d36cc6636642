"""The native engine's library: compiled on first use, cached, loaded, and described (`Build`).

`csrc/engine.c` is compiled with the machine's C compiler (`cc`, or `$CC`, split into words as make
does) for `-march=native` (or `$AUDIODEC_NATIVE_MARCH`, e.g. `x86-64-v3` to run as an AVX2 machine
would) into `$AUDIODEC_NATIVE_CACHE` (default `audiodec/native` in `$XDG_CACHE_HOME` or `~/.cache`),
keyed by the source, the flags, the compiler and the CPU's instruction set (`cpu_identity`: so a home
folder shared by cluster nodes of different CPU types holds one build per type). The build's vector
width and register blocks follow its instruction set (`Build`). A cache folder that cannot hold a
library that runs (no home folder to put it in, a noexec mount, a full disk, no permission) is
named in `unavailable_reason()` with the fix, and found before compiling where it can be, so that
every command does not build again only to fail again.
A compiler without OpenMP (Apple's clang, a gcc without libgomp) builds it with `-pthread` instead:
its teams are then POSIX threads of its own (`Build.threads`), with the same sums. One without
`-march=native` (clang before 15 on arm64) builds for its default target, unless the variable names
one. Without a compiler `available()` is False, `unavailable_reason()` says why, and the codec runs
TorchScript (utils/runtime/backends.py). The plans that run on it are in `native.py`.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import functools
import hashlib
import logging
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from utils.errors import CodecError
from utils.files import default_file_mode, write_text_atomic

SOURCE = Path(__file__).resolve().parents[2] / "csrc" / "engine.c"
OPENMP = "-fopenmp"
PTHREADS = "-pthread"  # instead of OPENMP where the compiler has none
FLAGS = ("-O3", "-ffp-contract=fast", OPENMP, "-fPIC", "-shared", "-std=gnu11")
# GCC's Zen tunings leave a lone accumulator's multiply-adds unfused (avoid-fma-max-bits), so the
# 1-row kernels would round unlike the others and a chunk's cut would change the sums.
GCC_FLAGS = ("--param=avoid-fma-max-bits=0",)
MARCH_VARIABLE = "AUDIODEC_NATIVE_MARCH"
CACHE_VARIABLE = "AUDIODEC_NATIVE_CACHE"
CACHE_FIX = f"set {CACHE_VARIABLE} to a folder you can write, on a disk that lets programs run"
# More than any build of the engine takes: on a disk with less free none is tried, as none would fit.
LIBRARY_ROOM = 512 << 10
# The linkers' last words after a failed link; the cause is on a line before.
LINK_SUMMARIES = ("collect2: error: ld returned", "linker command failed with exit code")


class Op(ctypes.Structure):
    """Mirror of `Op` in csrc/engine.c."""

    _fields_ = [
        ("kind", ctypes.c_int32), ("cin", ctypes.c_int32), ("cout", ctypes.c_int32), ("cpad", ctypes.c_int32),
        ("k", ctypes.c_int32), ("dilation", ctypes.c_int32), ("stride", ctypes.c_int32),
        ("t_out", ctypes.c_int32), ("alpha", ctypes.c_float), ("nv", ctypes.c_int32),
        ("act", ctypes.c_int32), ("out_kind", ctypes.c_int32), ("x_channels", ctypes.c_int32),
        ("group_cout", ctypes.c_int32), ("group_pad", ctypes.c_int32), ("rep", ctypes.c_int32),
        ("seg", ctypes.c_int32), ("wtype", ctypes.c_int32), ("res_stride", ctypes.c_int32),
        ("out_stride", ctypes.c_int32), ("act_stride", ctypes.c_int32), ("unused", ctypes.c_int32),
        ("x", ctypes.c_void_p), ("w", ctypes.c_void_p), ("bias", ctypes.c_void_p), ("res", ctypes.c_void_p),
        ("out", ctypes.c_void_p), ("out_act", ctypes.c_void_p), ("wscale", ctypes.c_void_p),
    ]


class Slot(ctypes.Structure):
    """Mirror of `Slot` in csrc/engine.c."""

    _fields_ = [("ext", ctypes.c_void_p), ("n", ctypes.c_int64), ("offset", ctypes.c_int64), ("shift", ctypes.c_int64)]


def _cache_dir() -> Path:
    """Where builds are cached: $AUDIODEC_NATIVE_CACHE, else audiodec/native in $XDG_CACHE_HOME (an
    absolute one, as the XDG spec asks) or in ~/.cache. A CodecError where none of these is known (a
    container's user with neither HOME nor a passwd entry)."""
    named = os.environ.get(CACHE_VARIABLE)
    if named:
        return Path(named)
    xdg_cache = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg_cache):
        return Path(xdg_cache) / "audiodec" / "native"
    try:
        return Path.home() / ".cache" / "audiodec" / "native"
    except RuntimeError:
        raise CodecError(f"no folder to cache it in (HOME is unset and this user has no home directory): "
                         f"{CACHE_FIX}") from None


def _cpu_flags() -> str:
    """This CPU's part of the build's cache key (see `cpu_identity`); without /proc/cpuinfo (macOS),
    what `platform` knows of it."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return cpu_identity(cpuinfo.read())
    except OSError:
        return f"{platform.machine()} {platform.processor()}"


def cpu_identity(cpuinfo: str) -> str:
    """The lines of /proc/cpuinfo that tell what a -march=native build may use: `flags` (x86),
    `Features`, `CPU implementer` and `CPU part` (arm64), each distinct line once. Nodes of
    another CPU type sharing a home folder then get builds of their own instead of one that
    stops with an illegal instruction."""
    wanted = ("flags", "Features", "CPU implementer", "CPU part")
    lines = {line.strip() for line in cpuinfo.splitlines() if line.split(":", 1)[0].strip() in wanted}
    return "\n".join(sorted(lines))


@dataclass(frozen=True)
class Build:
    """The compiled engine and what its target gives the plans: `lanes` floats per vector (weights
    and codebooks are padded to whole vectors), `widths` the column-block widths in vectors that it
    has kernels for, `isa` the instruction set ("avx512", "avx2", "neon", "generic"), `fma`;
    `threads` what runs its teams ("openmp", or "pthreads" where the compiler had no OpenMP)."""

    library: ctypes.CDLL
    lanes: int
    widths: tuple[int, ...]
    isa: str
    fma: bool
    threads: str


def march() -> str:
    """The -march the engine is built for: $AUDIODEC_NATIVE_MARCH, or native."""
    value = os.environ.get(MARCH_VARIABLE, "").strip() or "native"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", value):
        raise CodecError(f"{MARCH_VARIABLE}={value!r} is not a -march value: use e.g. x86-64-v3, or unset it")
    return value


@functools.cache
def _library() -> tuple[Build | None, str]:
    """(the engine, "") or (None, why not). Compiled once per source, flags, compiler and CPU; the
    library is written to a temporary name and renamed, so concurrent builds are safe."""
    try:
        flags = (*FLAGS, f"-march={march()}")
        folder = _cache_dir()
    except CodecError as error:
        return None, str(error)
    compiler = compiler_command()
    if compiler is None:
        return None, f"no C compiler found ({compiler_fix()})"
    try:
        version = subprocess.run([*compiler, "--version"], capture_output=True, text=True, check=True).stdout
    except OSError as error:
        return None, f"C compiler {shlex.join(compiler)} does not run ({error.strerror or error}): {compiler_fix()}"
    except subprocess.CalledProcessError as error:
        said = (error.stderr or error.stdout or "").strip().splitlines()
        why = f"exit status {error.returncode}" + (f": {said[0]}" if said else "")
        return None, f"C compiler {shlex.join(compiler)} does not run ({why}): {compiler_fix()}"
    flags = (*flags, *compiler_flags(version))
    source = SOURCE.read_bytes()
    # Keyed by the flags asked for: a build with -pthread instead is cached under them too, so that
    # a compiler without OpenMP is not tried again on every start. CC's own arguments (`gcc -m64`)
    # are flags too.
    asked = " ".join((*compiler[1:], *flags))
    digest = hashlib.sha256(b"\0".join([source, asked.encode(), version.encode(), _cpu_flags().encode()]))
    target = folder / f"engine-{digest.hexdigest()[:16]}.so"
    if not _intact(target):
        try:
            if target.exists():  # (raises where the folder may not be entered: a HOME of another user's)
                logging.getLogger(__name__).info("building the native engine again: the cached %s is damaged or "
                                                 "was built before this toolkit checked its builds", target)
            folder.mkdir(parents=True, exist_ok=True)
            problem = _cache_problem(folder)
            if problem:
                return None, problem
            fd, temporary = tempfile.mkstemp(suffix=".so", dir=folder)
            os.close(fd)
            try:
                error = _compile_as_taken(compiler, flags, temporary)
                if error:
                    return None, _build_failure(compiler, error, folder)
                failure = _probe(temporary)
                if failure:
                    return None, failure
                write_text_atomic(_digest_path(target), _file_digest(temporary))
                os.chmod(temporary, default_file_mode(executable=True))  # not mkstemp's owner-only mode
                os.replace(temporary, target)
            finally:
                with contextlib.suppress(FileNotFoundError):  # (or `_end_builds` took it at the exit)
                    os.unlink(temporary)
        except OSError as error:
            return None, _cache_failure(folder, error)
    try:
        library = ctypes.CDLL(str(target))
    except OSError as error:
        return None, _load_failure(folder, str(error), "does not load here")
    library.engine_op_size.restype = ctypes.c_int64
    if library.engine_op_size() != ctypes.sizeof(Op):
        return None, "csrc/engine.c's Op and utils/runtime/native_build.py's Op differ"
    library.engine_run.restype = ctypes.c_int
    library.engine_run.argtypes = [
        ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int64,
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
    ]
    library.engine_isa.restype = ctypes.c_char_p
    i64, ptr, f32, i32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_float, ctypes.c_int
    library.engine_activation.restype = library.engine_activation_backward.restype = None
    library.engine_activation.argtypes = [ptr, i64, ptr, i64, i64, i64, i64, f32, i32, i32, i32]
    library.engine_activation_backward.argtypes = [ptr, i64, ptr, i64, ptr, i64, i64, i64, f32, i32, i32, i32]
    widths = tuple(1 << s for s in range(3) if library.engine_rows(s) > 0)
    library.engine_threads.restype = ctypes.c_char_p
    isa, fma, threads = library.engine_isa().decode(), bool(library.engine_fma()), library.engine_threads().decode()
    return Build(library, library.engine_lanes(), widths, isa, fma, threads), ""


def _cache_problem(folder: Path) -> str:
    """"" when `folder` may hold a library that runs, else why not with the fix. Asked of the mount
    before compiling: a noexec mount or a full disk would fail the build of every command again."""
    try:
        disk = os.statvfs(folder)
    except (AttributeError, OSError):  # no statvfs (Windows): the build finds out
        return ""
    if disk.f_flag & getattr(os, "ST_NOEXEC", 0):
        return f"{folder} is on a disk mounted noexec, from which the system runs no programs: {CACHE_FIX}"
    free = disk.f_bavail * disk.f_frsize
    if free < LIBRARY_ROOM:
        return (f"the disk of {folder} is full ({free >> 10} KiB free, too little for the engine): free space "
                f"there, or {CACHE_FIX}")
    return ""


def _cache_failure(folder: Path, error: OSError) -> str:
    """One line on why `folder` could not take a build (`error`), with the fix."""
    if error.errno == errno.ENOSPC:
        return f"the disk of {folder} is full ({error.strerror}): free space there, or {CACHE_FIX}"
    return f"cannot build the engine in {folder} ({error.strerror or error}): {CACHE_FIX}"


def _load_failure(folder: Path, said: str, what: str) -> str:
    """One line on why a build in `folder` did not load (the loader `said` so), with the fix. The
    loader says "failed to map segment" where the system refuses to run code from the folder's disk."""
    if "failed to map segment" in said:
        return (f"the system runs no programs from {folder} (the engine failed to map segment: a noexec mount, "
                f"or a policy such as SELinux's): {CACHE_FIX}")
    return f"the engine built for -march={march()} {what}: {said}"


def _digest_path(library: Path) -> Path:
    return library.with_name(library.name + ".sha256")


def _file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _intact(library: Path) -> bool:
    """Whether the cached `library` is the one built and probed here: a file damaged since (cut short,
    overwritten) would crash the process that loads it, so it is built again."""
    try:
        return _digest_path(library).read_text().strip() == _file_digest(library)
    except OSError:
        return False


# Run in a child process: a build for instructions this CPU lacks dies there, not in the codec.
PROBE = (
    "import ctypes, math, sys\n"
    "library = ctypes.CDLL(sys.argv[1])\n"
    "library.engine_probe.restype = ctypes.c_float\n"
    "sys.exit(0 if math.isfinite(library.engine_probe()) else 3)\n"
)


def _probe(library: str) -> str:
    """"" when a fresh build runs its vector code (`engine_probe`) on this CPU, else why not."""
    try:
        result = subprocess.run([sys.executable, "-c", PROBE, library], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as error:
        return f"the engine built for -march={march()} could not be tried here: {error}"
    if result.returncode == 0:
        return ""
    if result.returncode < 0:
        try:
            how = signal.Signals(-result.returncode).name
        except ValueError:
            how = f"signal {-result.returncode}"
        return (f"the engine built for -march={march()} stops with {how} on this CPU (an instruction it lacks): "
                f"set {MARCH_VARIABLE} to a target this CPU has, or unset it")
    last = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
    return _load_failure(Path(library).parent, last, "does not run here")


def _compile_as_taken(compiler: tuple[str, ...], flags: tuple[str, ...], output: str) -> str:
    """`_compile`, again without what the compiler refused: -fopenmp (-pthread instead), and a
    -march=native nobody asked for by name (clang before 15 has none on arm64, Apple's included:
    the compiler's own target then, which on arm64 has all the engine uses)."""
    named_march = bool(os.environ.get(MARCH_VARIABLE, "").strip())
    while True:
        error = _compile(compiler, flags, output)
        if error and OPENMP in flags and _lacks_openmp(error):
            flags = tuple(PTHREADS if flag == OPENMP else flag for flag in flags)
        elif error and not named_march and "-march=native" in flags and _refuses_march(error):
            flags = tuple(flag for flag in flags if flag != "-march=native")
            logging.getLogger(__name__).info(
                "%s does not take -march=native: the native engine is built for its default target",
                shlex.join(compiler),
            )
        else:
            return error


# The compilers running now (each with its output file), so that a process that exits while another
# thread builds ends them (`_end_builds`); `_EXITING` once it does.
_BUILDS: dict[subprocess.Popen, str] = {}
_BUILDS_LOCK = threading.Lock()
_EXITING = threading.Event()


def _compile(compiler: tuple[str, ...], flags: tuple[str, ...], output: str) -> str:
    """Compiles the engine into `output`: "" or the compiler's messages. The compiler runs in a
    process group of its own, so that an interruption (Ctrl-C, SIGTERM) ends its passes (cc1, as,
    ld) too, not just the driver: here when it reaches this thread, at the exit (`_end_builds`)
    when this is a thread that the interrupted main thread no longer waits for."""
    command = [*compiler, *flags, "-o", output, str(SOURCE)]
    with _BUILDS_LOCK:
        _stop_if_exiting()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   process_group=0)
        _BUILDS[process] = output
    with process:
        try:
            _, stderr = process.communicate()
        except BaseException:
            _end_group(process)
            raise
        finally:
            with _BUILDS_LOCK:
                del _BUILDS[process]
        _stop_if_exiting()  # its group was ended: not a failure to report
    return "" if process.returncode == 0 else stderr or f"{shlex.join(compiler)} exited with {process.returncode}"


def _stop_if_exiting() -> None:
    """Ends a build thread quietly (threads print no SystemExit) once the process exits."""
    if _EXITING.is_set():
        raise SystemExit


@atexit.register
def _end_builds() -> None:
    """At the exit, the compilers other threads still run: their groups ended and their outputs
    removed. An interruption reaches only the main thread; one that waits on a build thread (as
    `cpu_process.in_passing_thread` does) leaves it, and a daemon thread is never resumed."""
    with _BUILDS_LOCK:
        _EXITING.set()
        builds = dict(_BUILDS)
    for process, output in builds.items():
        _end_group(process)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(output)


def _end_group(process: subprocess.Popen, grace: float = 5.0) -> None:
    """Ends `process`'s process group: SIGTERM first, so that gcc removes its temporary files, then
    SIGKILL for what is left after `grace` seconds; returns once the group is gone (or a second after
    the SIGKILL, for members that no parent reaps)."""
    deadline = time.monotonic() + grace
    for how in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, how)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(max(deadline - time.monotonic(), 0))
        while time.monotonic() < deadline:
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        deadline = time.monotonic() + 1.0


def _lacks_openmp(stderr: str) -> bool:
    """Whether a failed build failed for want of OpenMP (its option, header or runtime library)."""
    return any(sign in stderr for sign in ("fopenmp", "omp.h", "-lgomp", "-lomp"))


def compiler_command() -> tuple[str, ...] | None:
    """The C compiler's command line: $CC split into words as make's shell does (`ccache gcc`,
    `gcc -m64`), or taken whole where it names a file (a path with spaces); else cc or gcc; None
    where there is none."""
    named = os.environ.get("CC", "").strip()
    if not named:
        found = shutil.which("cc") or shutil.which("gcc")
        return None if found is None else (found,)
    if os.path.isfile(named):
        return (named,)
    try:
        return tuple(shlex.split(named)) or (named,)
    except ValueError:  # an unclosed quote: tried as one name, and named in the notice when it fails
        return (named,)


def compiler_fix() -> str:
    """How to get a C compiler that runs. On macOS `cc` is there without one: until Apple's Command Line
    Tools are installed it is xcode-select's stand-in, which asks for them and exits 1."""
    if sys.platform == "darwin":
        return "install Apple's Command Line Tools (xcode-select --install), or set CC"
    return "install gcc, or set CC"


def compiler_flags(version: str) -> tuple[str, ...]:
    """The flags a compiler needs beside FLAGS, from what its `--version` printed."""
    return GCC_FLAGS if "Free Software Foundation" in version else ()


def _refuses_march(stderr: str) -> bool:
    """Whether a failed build failed on its -march."""
    return any("march" in line or "unknown architecture" in line for line in stderr.splitlines())


def _build_failure(compiler: tuple[str, ...], stderr: str, folder: Path) -> str:
    """One line on why compiling the engine into `folder` failed, with the fix: the compiler's last
    message that is not the linker's summary."""
    lines = stderr.strip().splitlines()
    named = shlex.join(compiler)
    if _refuses_march(stderr):
        return f"{named} cannot build for -march={march()}: set {MARCH_VARIABLE} to a target it knows, or unset it"
    causes = [line for line in lines if not any(summary in line for summary in LINK_SUMMARIES)] or lines
    failed = f"compiling {SOURCE.name} with {named} failed: {causes[-1] if causes else 'no message'}"
    if any(os.strerror(errno.ENOSPC) in line for line in lines):
        return (f"{failed}: free space in {folder} and in the temporary folder {tempfile.gettempdir()}, "
                f"or {CACHE_FIX}")
    return failed


def build() -> Build | None:
    """The engine of this machine, or None (see `unavailable_reason`)."""
    return _library()[0]


def available() -> bool:
    """Whether the engine could be built and loaded on this machine."""
    return _library()[0] is not None


def unavailable_reason() -> str:
    return _library()[1]

