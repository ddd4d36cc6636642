"""utils/runtime/cpu_process.py: the CLIs re-execute with tcmalloc/jemalloc preloaded, unless told not to;
the codes they write do not change; a bad setting fails with one line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from utils.runtime.cpu_process import JEMALLOC_CONF, MallocSettingError, current_malloc, fast_malloc_library

LIBRARY = fast_malloc_library("auto")
needs_library = pytest.mark.skipif(LIBRARY is None, reason="no tcmalloc/jemalloc installed (utils/system_deps.sh)")

PROBE = """
import os, sys
sys.path.insert(0, {repo!r})
from utils.runtime.cpu_process import use_fast_malloc
if __name__ == "__main__":
    use_fast_malloc()
from utils.runtime.cpu_process import current_malloc
print(current_malloc())
print(sys.argv[1:])
print(os.environ.get("AUDIODEC_MALLOC_PRELOADED", "not re-executed"))
"""


def run_probe(tmp_path, setting: str | None, *args: str, preload: str = "", prelude: str = ""
              ) -> subprocess.CompletedProcess:
    script = tmp_path / "probe.py"
    script.write_text(prelude + PROBE.format(repo=REPO))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIODEC_MALLOC") and k != "LD_PRELOAD"}
    if setting is not None:
        env["AUDIODEC_MALLOC"] = setting
    if preload:
        env["LD_PRELOAD"] = preload
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env, timeout=60)


def test_settings(tmp_path) -> None:
    assert current_malloc() in ("glibc", "jemalloc", "tcmalloc")  # pytest itself: however it was started
    assert fast_malloc_library("system") is None
    with pytest.raises(MallocSettingError, match="AUDIODEC_MALLOC=/no/such.so: no such file"):
        fast_malloc_library("/no/such.so")
    (tmp_path / "notes.txt").write_text("not a library")
    with pytest.raises(MallocSettingError, match=r"notes.txt: not a shared library; give the path of a malloc"):
        fast_malloc_library(str(tmp_path / "notes.txt"))
    (tmp_path / "with space").mkdir()
    (tmp_path / "with space" / "libx.so").write_bytes(b"\x7fELF" + bytes(60))
    with pytest.raises(MallocSettingError, match="LD_PRELOAD cannot hold a path with spaces or colons"):
        fast_malloc_library(str(tmp_path / "with space" / "libx.so"))
    if LIBRARY is not None:
        assert fast_malloc_library(LIBRARY) == LIBRARY


@needs_library
def test_program_reexecutes_with_the_library_and_keeps_its_arguments(tmp_path) -> None:
    result = run_probe(tmp_path, None, "--flag", "two words")
    assert result.returncode == 0, result.stderr
    loaded, argv, marker = result.stdout.strip().splitlines()
    assert loaded in os.path.basename(LIBRARY) and loaded != "glibc"
    assert argv == str(["--flag", "two words"])
    assert marker == LIBRARY


@needs_library
def test_program_that_has_the_library_already_is_not_reexecuted(tmp_path) -> None:
    """Preloaded by the user through its symlink name: the process maps the resolved file."""
    result = run_probe(tmp_path, None, preload=LIBRARY)
    assert result.returncode == 0, result.stderr
    loaded, _, marker = result.stdout.strip().splitlines()
    assert loaded != "glibc" and marker == "not re-executed"


CLOSED_PROBE = """
import os, sys
sys.path.insert(0, {repo!r})
from utils.runtime.cpu_process import use_fast_malloc, current_malloc
use_fast_malloc()
with open(sys.argv[1], "w") as report:
    report.write(current_malloc() + " " + os.environ.get("AUDIODEC_MALLOC_PRELOADED", "not re-executed"))
"""


@needs_library
@pytest.mark.parametrize("closed", [(1,), (2,), (1, 2)], ids=["stdout", "stderr", "both"])
def test_program_started_with_its_output_closed_still_reexecutes(tmp_path, closed: tuple[int, ...]) -> None:
    """`cmd >&-` or `2>&-` (some cron and daemon set-ups): Python has no sys.stdout / sys.stderr then."""
    script, report = tmp_path / "probe.py", tmp_path / "report.txt"
    script.write_text(CLOSED_PROBE.format(repo=REPO))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIODEC_MALLOC") and k != "LD_PRELOAD"}
    result = subprocess.run([sys.executable, str(script), str(report)], env=env, timeout=60,
                            preexec_fn=lambda: [os.close(descriptor) for descriptor in closed])
    assert result.returncode == 0
    loaded, marker = report.read_text().split()
    assert loaded != "glibc" and marker == LIBRARY


@pytest.mark.parametrize("failure", ["UnicodeEncodeError('euc_jp', '\\x80', 0, 1, 'illegal multibyte sequence')",
                                     "PermissionError(13, 'Permission denied')"], ids=["unencodable", "refused"])
def test_program_that_cannot_reexecute_runs_with_the_systems_allocator(tmp_path, failure: str) -> None:
    """An argument that a non-UTF-8 locale (EUC-JP) decodes to characters it cannot encode back makes
    os.execve raise; the program goes on as with AUDIODEC_MALLOC=system, with its arguments."""
    library = tmp_path / "libfake.so"  # any ELF file: the re-execution that would load it fails first
    library.write_bytes(b"\x7fELF" + bytes(60))
    prelude = f"import os\ndef refuse(*args):\n    raise {failure}\nos.execve = refuse\n"
    result = run_probe(tmp_path, str(library), "a\u2014b.adc", prelude=prelude)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.splitlines() == ["glibc", str(["a\u2014b.adc"]), "not re-executed"]


def test_system_setting_keeps_glibc(tmp_path) -> None:
    result = run_probe(tmp_path, "system")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "glibc"


def test_bad_setting_is_one_line_error(tmp_path) -> None:
    result = subprocess.run([sys.executable, os.path.join(REPO, "codec.py"), "info", "x.adc"], capture_output=True,
                            text=True, env=dict(os.environ, AUDIODEC_MALLOC="/no/such.so"), timeout=60)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: AUDIODEC_MALLOC=/no/such.so"), result.stderr
    assert "Traceback" not in result.stderr


@needs_library
def test_codes_do_not_depend_on_the_allocator(tmp_path) -> None:
    """codec.py encode under tcmalloc/jemalloc and under glibc: the same file, byte for byte."""
    source = os.path.join(REPO, "data", "demo", "alsa_speakers.wav")
    outputs = {}
    for setting in ("auto", "system"):
        out = tmp_path / f"{setting}.adc"
        result = subprocess.run(
            [sys.executable, os.path.join(REPO, "codec.py"), "encode", "--model", "demo48k", "--cuda", "-1",
             "--num_threads", "2", "--resample", "-i", source, "-o", str(out)],
            capture_output=True, text=True, env=dict(os.environ, AUDIODEC_MALLOC=setting), timeout=300, cwd=REPO,
        )
        assert result.returncode == 0, result.stderr
        outputs[setting] = out.read_bytes()
    assert outputs["auto"] == outputs["system"]


def test_a_child_can_be_given_the_systems_allocator(monkeypatch) -> None:
    """What bin/train_benchmark.py gives the original trainer: our preload gone, a user's own kept."""
    from utils.runtime.cpu_process import environment_without_fast_malloc

    monkeypatch.setenv("AUDIODEC_MALLOC_PRELOADED", "/lib/libtcmalloc_minimal.so.4")
    monkeypatch.setenv("LD_PRELOAD", "/lib/libtcmalloc_minimal.so.4 /opt/users_own.so")
    env = environment_without_fast_malloc()
    assert env["LD_PRELOAD"] == "/opt/users_own.so" and env["AUDIODEC_MALLOC"] == "system"
    assert "AUDIODEC_MALLOC_PRELOADED" not in env
    monkeypatch.setenv("LD_PRELOAD", "/lib/libtcmalloc_minimal.so.4")
    assert "LD_PRELOAD" not in environment_without_fast_malloc()
    monkeypatch.delenv("AUDIODEC_MALLOC_PRELOADED")
    assert environment_without_fast_malloc()["LD_PRELOAD"] == "/lib/libtcmalloc_minimal.so.4"  # the user's own


RELEASE_PROBE = """
import sys
sys.path.insert(0, {repo!r})
import torch
from utils.runtime.cpu_process import current_malloc, release_free_memory

def resident_mib():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096 / 2**20

before = resident_mib()
blocks = [torch.ones(256, 1024) for _ in range(1024)]  # 1 GiB in blocks of 1 MiB
del blocks
held = resident_mib()
print(current_malloc(), release_free_memory(), round(before), round(held), round(resident_mib()))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
@pytest.mark.parametrize("library", ["system", *[path for path in (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4", "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
) if os.path.exists(path)]])  # fmt: skip
def test_freed_memory_goes_back_to_the_system_from_each_allocator(tmp_path, library: str) -> None:
    """release_free_memory(): what a benchmark calls before the original runs beside it, so that the two
    processes' peaks do not add up. How much of a freed GiB an allocator keeps until then is its own choice
    (tcmalloc and jemalloc with our settings usually keep it all, not always), so the test asserts the
    outcome: after the call the process is back within 200 MiB of where it was before the GiB."""
    script = tmp_path / "release.py"
    script.write_text(RELEASE_PROBE.format(repo=REPO))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIODEC_MALLOC") and k != "LD_PRELOAD"}
    if library != "system":
        env["LD_PRELOAD"] = library
    if "jemalloc" in library:
        env["MALLOC_CONF"] = JEMALLOC_CONF
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    allocator, released, before, held, after = result.stdout.split()
    assert allocator == released == {"system": "glibc"}.get(library, allocator)
    assert library == "system" or allocator in library
    assert float(after) < float(before) + 200, f"resident {before} MiB, {held} after freeing a GiB, {after} released"
