"""utils/install_requirements.py, the first step of run.sh and test.sh: where torch is taken from."""

from __future__ import annotations

import http.server
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from tests.conftest import REPO
from utils import install_requirements as setup


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> dict:
    """A Linux machine without torch, without an NVIDIA driver, whose CPU index answers; pip recorded."""
    state = {"system": "Linux", "torch": None, "driver": False, "answers": True, "fails": set(), "calls": []}

    def pip(*arguments: str) -> int:
        state["calls"].append(arguments)
        return 1 if any(index in arguments for index in state["fails"]) else 0

    monkeypatch.setattr(setup.platform, "system", lambda: state["system"])
    monkeypatch.setattr(setup, "installed_torch", lambda: state["torch"])
    monkeypatch.setattr(setup, "has_nvidia_driver", lambda: state["driver"])
    monkeypatch.setattr(setup, "index_answers", lambda url: state["answers"])
    monkeypatch.setattr(setup, "pip", pip)
    monkeypatch.delenv("TORCH_INDEX_URL", raising=False)
    return state


REQUIREMENTS = Path(REPO, "requirements.txt")
EVERYTHING = ("-r", str(REQUIREMENTS))


def test_the_pin_is_read_from_the_requirements(tmp_path: Path) -> None:
    assert setup.pinned_torch(REQUIREMENTS) == "2.13.0"
    (tmp_path / "r.txt").write_text("numpy==2.3.5\ntorchvision==0.1\n torch == 2.9.1  # a comment\n")
    assert setup.pinned_torch(tmp_path / "r.txt") == "2.9.1"
    (tmp_path / "r.txt").write_text("torch>=2.5\n")
    assert setup.pinned_torch(tmp_path / "r.txt") is None


def test_a_machine_without_a_gpu_takes_the_cpu_build_first(machine: dict, capsys: pytest.CaptureFixture) -> None:
    assert setup.install(REQUIREMENTS) == 0
    assert machine["calls"] == [("--index-url", setup.CPU_INDEX, "torch==2.13.0"), EVERYTHING]
    assert "torch 2.13.0 from https://download.pytorch.org/whl/cpu (no NVIDIA driver here" in capsys.readouterr().out


@pytest.mark.parametrize(
    "change",
    [{"driver": True}, {"system": "Darwin"}, {"system": "Windows"}, {"torch": "2.13.0+cu130"}, {"torch": "2.13.0"}],
)
def test_pypi_alone_where_its_torch_is_right_or_installed(machine: dict, change: dict) -> None:
    machine.update(change)
    assert setup.install(REQUIREMENTS) == 0
    assert machine["calls"] == [EVERYTHING]


def test_another_installed_version_is_replaced_by_the_pinned_one(machine: dict) -> None:
    machine["torch"] = "2.5.1+cpu"
    setup.install(REQUIREMENTS)
    assert machine["calls"] == [("--index-url", setup.CPU_INDEX, "torch==2.13.0"), EVERYTHING]


def test_an_index_that_does_not_answer_or_fails_leaves_torch_to_pypi(machine: dict, capsys) -> None:
    machine["answers"] = False
    assert setup.install(REQUIREMENTS) == 0
    assert machine["calls"] == [EVERYTHING]
    assert "does not answer: torch comes from PyPI" in capsys.readouterr().out
    machine.update(answers=True, calls=[], fails={setup.CPU_INDEX})
    assert setup.install(REQUIREMENTS) == 0
    assert machine["calls"] == [("--index-url", setup.CPU_INDEX, "torch==2.13.0"), EVERYTHING]
    assert "could not be installed from https://download.pytorch.org/whl/cpu: taking it from PyPI" in (
        capsys.readouterr().out)


def test_torch_index_url_is_taken_on_any_machine_and_its_failure_stops(
    machine: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    cuda = "https://download.pytorch.org/whl/cu126"
    monkeypatch.setenv("TORCH_INDEX_URL", cuda)
    machine.update(driver=True, answers=False)
    assert setup.install(REQUIREMENTS) == 0
    assert machine["calls"] == [("--index-url", cuda, "torch==2.13.0"), EVERYTHING]
    machine.update(calls=[], fails={cuda})
    assert setup.install(REQUIREMENTS) == 1
    assert machine["calls"] == [("--index-url", cuda, "torch==2.13.0")]


class _Index(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200 if self.path == "/simple/torch/" else 404)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_the_index_probe_asks_for_torch_s_page() -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        assert setup.index_answers(f"{url}/simple") and setup.index_answers(f"{url}/simple/")
        assert not setup.index_answers(f"{url}/other")  # 404
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert not setup.index_answers(f"http://127.0.0.1:{port}/simple")
    assert not setup.index_answers("https://no-such-host.invalid/simple")


# utils/setup_venv.sh, with a stand-in python3 on PATH: how .venv is made, and made again.
FAILED_VENV = """#!/bin/sh
mkdir -p .venv/bin .venv/lib/python3.13/site-packages && printf '#!/bin/sh\\nexit 1\\n' > .venv/bin/python
chmod +x .venv/bin/python
echo "The virtual environment was not created successfully because ensurepip is not"
echo "available.  On Debian/Ubuntu systems, you need to install the python3-venv"
echo "Failing command: $PWD/.venv/bin/python3"
exit 1
"""
WORKING_VENV = """#!/bin/sh
mkdir -p .venv/bin && printf '#!/bin/sh\\necho "$*" >> %s\\n' > .venv/bin/python && chmod +x .venv/bin/python
"""


def answering(version: str, script: str) -> str:
    """A stand-in python that says it is ``version`` when asked (``-c``), else runs ``script``."""
    shebang, rest = script.split("\n", 1)
    return f'{shebang}\nif [ "$1" = -c ]; then echo {version}; exit 0; fi\n{rest}'


def run_setup(tmp_path: Path, python3: str | None, version: str = "3.11.9") -> subprocess.CompletedProcess:
    """setup_venv.sh in tmp_path/project, with a python3 stand-in (None: no python3) of ``version``."""
    project, tools = tmp_path / "project", tmp_path / "bin"
    (project / "utils").mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(REPO, "utils", "setup_venv.sh"), project / "utils")
    tools.mkdir(exist_ok=True)
    for tool in ("dirname", "find", "head", "rm", "grep", "tail", "mkdir", "chmod"):
        if not (tools / tool).exists():
            (tools / tool).symlink_to(shutil.which(tool))
    (tools / "python3").unlink(missing_ok=True)
    if python3 is not None:
        (tools / "python3").write_text(answering(version, python3.replace("%s", str(tmp_path / "calls"))))
        (tools / "python3").chmod(0o755)
    return subprocess.run([shutil.which("bash"), str(project / "utils" / "setup_venv.sh")], cwd=project,
                          env={"PATH": str(tools)}, capture_output=True, text=True, timeout=60)


def test_a_venv_without_pip_is_refused_in_one_line_and_not_left_behind(tmp_path: Path) -> None:
    for _ in range(2):  # the second run finds no .venv of the first to stumble on
        result = run_setup(tmp_path, FAILED_VENV)
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr.splitlines() == [
            "error: python3 -m venv could not make .venv: its venv module has no pip to install (ensurepip is not "
            "available): install Python's venv package (Debian/Ubuntu: apt-get install python3-venv) and run again"]
        assert not (tmp_path / "project" / ".venv").exists()
    result = run_setup(tmp_path, None)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: no python3 on PATH: install Python 3.11 or newer and run again"]


@pytest.mark.parametrize("version", ["3.9.6", "3.10.12", "2.7.18"])  # a stock Mac's, Ubuntu 22.04's, Python 2
def test_a_python3_older_than_3_11_is_refused_in_one_line_and_makes_no_venv(tmp_path: Path, version: str) -> None:
    result = run_setup(tmp_path, WORKING_VENV, version)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: python3 is Python {version} and the toolkit needs 3.11 or newer: make .venv with a newer one "
        "(e.g. python3.11 -m venv .venv) or put one first on PATH as python3, then run again"]
    assert not (tmp_path / "project" / ".venv").exists() and not (tmp_path / "calls").exists()


def old_venv(tmp_path: Path, *packages: str) -> Path:
    """A .venv of Python 3.9.6 with pip, holding ``packages`` (dist-info names) besides pip's own."""
    venv = tmp_path / "project" / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(answering("3.9.6", "#!/bin/sh\nexit 0\n"))  # -m pip --version: it has pip
    (venv / "bin" / "python").chmod(0o755)
    for package in ("pip-23.0.1", "setuptools-58.1.0", *packages):
        (venv / "lib" / "python3.9" / "site-packages" / f"{package}.dist-info").mkdir(parents=True)
    return venv


def test_a_venv_of_an_older_python_holding_only_pip_is_made_again(tmp_path: Path) -> None:
    """What an older python3 left (a run before this check): nothing of the user's, so made again with 3.11+."""
    venv = old_venv(tmp_path)
    result = run_setup(tmp_path, WORKING_VENV)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert (tmp_path / "calls").read_text().splitlines() == ["-m utils.install_requirements"]
    assert not (venv / "lib" / "python3.9").exists()


def test_a_venv_of_an_older_python_holding_packages_is_named_and_kept(tmp_path: Path) -> None:
    venv = old_venv(tmp_path, "numpy-1.26.4")
    result = run_setup(tmp_path, WORKING_VENV)
    assert result.returncode == 1 and result.stdout == "" and not (tmp_path / "calls").exists()
    assert result.stderr.splitlines() == [
        "error: .venv has Python 3.9.6 and the toolkit needs 3.11 or newer: remove .venv (rm -rf .venv) and run "
        "again with a python3 of 3.11 or newer first on PATH"]
    assert (venv / "lib" / "python3.9" / "site-packages" / "numpy-1.26.4.dist-info").is_dir()


def test_a_bare_venv_left_without_pip_is_made_again(tmp_path: Path) -> None:
    venv = tmp_path / "project" / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("#!/bin/sh\nexit 1\n")  # no pip, no package: what a failed venv leaves
    (venv / "bin" / "python").chmod(0o755)
    result = run_setup(tmp_path, WORKING_VENV)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "calls").read_text().splitlines() == ["-m utils.install_requirements"]  # made afresh


def test_a_venv_without_pip_that_holds_packages_is_kept(tmp_path: Path) -> None:
    venv = tmp_path / "project" / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("#!/bin/sh\nexit 1\n")
    (venv / "bin" / "python").chmod(0o755)
    (venv / "lib" / "python3.11" / "site-packages" / "numpy-2.3.5.dist-info").mkdir(parents=True)
    result = run_setup(tmp_path, WORKING_VENV)
    assert result.returncode == 1 and not (tmp_path / "calls").exists()
    assert result.stderr.splitlines() == [
        "error: .venv has no pip (made by uv or with --without-pip?): add it with .venv/bin/python -m ensurepip, "
        "or remove .venv to have it made again"]
    assert (venv / "lib" / "python3.11" / "site-packages" / "numpy-2.3.5.dist-info").is_dir()


def run_system_deps(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, Path]:
    """utils/system_deps.sh as root on a machine with none of its packages, apt-get a stand-in that logs."""
    bin_dir, log = tmp_path / "bin", tmp_path / "apt.log"
    bin_dir.mkdir()
    stubs = {"apt-get": f'echo "$*" >> {log}', "dpkg-query": "exit 0", "id": "echo 0",
             "dpkg": "echo amd64"}  # fmt: skip
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    path = f"{bin_dir}:/usr/bin:/bin"
    result = subprocess.run(["bash", str(Path(REPO) / "utils" / "system_deps.sh")], capture_output=True, text=True,
                            env={"PATH": path, **env}, timeout=60)  # fmt: skip
    return result, log


def test_system_deps_says_what_it_installs_as_root(tmp_path: Path) -> None:
    result, log = run_system_deps(tmp_path)
    assert result.returncode == 0
    assert "system_deps: installing" in result.stderr and "slurmd" in result.stderr
    assert "AUDIODEC_SYSTEM_DEPS=0 leaves them out" in result.stderr
    assert "install" in log.read_text() and "slurmd" in log.read_text()


def test_system_deps_installs_nothing_when_told_not_to(tmp_path: Path) -> None:
    """A workstation's root runs the suite without SLURM's daemons: the tests that need them skip."""
    result, log = run_system_deps(tmp_path, AUDIODEC_SYSTEM_DEPS="0")
    assert result.returncode == 0
    assert "not installed: AUDIODEC_SYSTEM_DEPS=0" in result.stderr
    assert not log.exists()
