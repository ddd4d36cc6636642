"""utils/install_requirements.py, the first step of run.sh and test.sh: where torch is taken from."""

from __future__ import annotations

import http.server
import socket
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
