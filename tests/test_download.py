"""python -m utils.download against a real HTTP server on 127.0.0.1 serving a small release-shaped archive."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import socket
import subprocess
import sys
import threading
import zipfile

import pytest
import torch

from tests.conftest import OFFICIAL, REPO
from utils.registry import get_entry

SYM_FILES = [
    "exp/autoencoder/symAD_vctk_48000_hop300/config.yml",
    "exp/autoencoder/symAD_vctk_48000_hop300/checkpoint-200000steps.pkl",
    "exp/autoencoder/symAD_vctk_48000_hop300/checkpoint-700000steps.pkl",
]


def release_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as bundle:
        for name, data in files.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


def official_files(paths: list[str]) -> dict[str, bytes]:
    return {path: open(os.path.join(OFFICIAL, path), "rb").read() for path in paths}


class ArchiveServer(http.server.ThreadingHTTPServer):
    """Serves `payload` at any path, honours `Range: bytes=N-`, and cuts the next `cuts` responses halfway."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ArchiveHandler)
        self.payload = b""
        self.cuts = 0
        self.ranges: list[str | None] = []  # the Range header of every request, in order

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/exp.zip"


class ArchiveHandler(http.server.BaseHTTPRequestHandler):
    server: ArchiveServer

    def do_GET(self) -> None:
        asked = self.headers.get("Range")
        self.server.ranges.append(asked)
        start = int(asked.removeprefix("bytes=").rstrip("-")) if asked else 0
        size = len(self.server.payload)
        body = self.server.payload[start:]
        self.send_response(206 if asked else 200)
        if asked:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.server.cuts > 0:
            self.server.cuts -= 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    archive_server = ArchiveServer()
    thread = threading.Thread(target=archive_server.serve_forever, daemon=True)
    thread.start()
    yield archive_server
    archive_server.shutdown()
    archive_server.server_close()


def download(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "utils.download", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def assert_one_error(result: subprocess.CompletedProcess, words: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and words in errors[0], result.stderr


def leftovers(root) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


def test_installs_checks_and_records(server, tmp_path) -> None:
    server.payload = release_zip(official_files(SYM_FILES))
    digest = hashlib.sha256(server.payload).hexdigest()
    result = download("vctk_sym", "--root", str(tmp_path), "--url", server.url, "--sha256", digest)
    assert result.returncode == 0, result.stderr
    assert f"archive sha256 {digest}" in result.stderr
    for path in SYM_FILES:
        assert (tmp_path / path).read_bytes() == open(os.path.join(OFFICIAL, path), "rb").read()
    assert json.loads((tmp_path / "exp" / ".downloads.json").read_text()) == {server.url: digest}
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]  # no .part, no staging folder
    listing = subprocess.run([sys.executable, os.path.join(REPO, "demoFile.py"), "--list-models",
                              "--root", str(tmp_path)], capture_output=True, text=True, timeout=120).stdout
    lines = {line.split()[0]: line for line in listing.splitlines()}
    assert f"installed in {tmp_path}" in lines["vctk_sym"]
    assert "python -m utils.download vctk_v1" in lines["vctk_v1"]

    again = download("vctk_sym", "--root", str(tmp_path), "--url", server.url)
    assert again.returncode == 0 and "already installed" in again.stderr
    assert len(server.ranges) == 1  # nothing fetched the second time

    (tmp_path / SYM_FILES[2]).unlink()  # a later download of the same URL must match the recorded hash
    server.payload = release_zip({**official_files(SYM_FILES), "exp/README": b"changed"})
    changed = download("vctk_sym", "--root", str(tmp_path), "--url", server.url)
    assert_one_error(changed, "recorded")
    assert not (tmp_path / SYM_FILES[2]).exists()


def test_wrong_checksum_leaves_nothing(server, tmp_path) -> None:
    server.payload = release_zip(official_files(SYM_FILES))
    result = download("vctk_sym", "--root", str(tmp_path), "--url", server.url, "--sha256", "0" * 64)
    assert_one_error(result, "sha256")
    assert f"archive sha256 {hashlib.sha256(server.payload).hexdigest()}" in result.stderr
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("payload, words", [
    (release_zip({"weights/model.bin": b"\0" * 1000, "README.md": b"hello"}), "not the AudioDec release archive"),
    (b"<html>404 page of some mirror</html>" * 100, "not a zip archive"),
])
def test_foreign_archive_leaves_nothing(server, tmp_path, payload: bytes, words: str) -> None:
    server.payload = payload
    assert_one_error(download("vctk_sym", "--root", str(tmp_path), "--url", server.url), words)
    assert leftovers(tmp_path) == []


def torch_saved(state: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def nan_weights(path: str) -> bytes:
    """The checkpoint at `path` (under OFFICIAL) with its first convolution's weights NaN."""
    state = torch.load(os.path.join(OFFICIAL, path), map_location="cpu", weights_only=True)
    state["model"]["generator"]["encoder.conv.conv.weight"].fill_(float("nan"))
    return torch_saved(state)


@pytest.mark.parametrize("checkpoint, words", [
    (lambda: b"not a checkpoint" * 100, "cannot read checkpoint"),
    (lambda: nan_weights(SYM_FILES[2]), "has non-finite weights (nan in encoder.conv.conv.weight)"),
    (lambda: torch_saved({"model": {"generator": [1, 2, 3]}}), "model.generator is not a state dict (list)"),
])
def test_checkpoint_that_is_not_weights_leaves_nothing(server, tmp_path, checkpoint, words: str) -> None:
    files = official_files(SYM_FILES)
    files[SYM_FILES[2]] = checkpoint()
    server.payload = release_zip(files)
    result = download("vctk_sym", "--root", str(tmp_path), "--url", server.url)
    assert_one_error(result, "failed its check")
    assert words in result.stderr
    assert leftovers(tmp_path) == []


def test_archive_without_a_model_asked_for(server, tmp_path) -> None:
    server.payload = release_zip(official_files(SYM_FILES))
    assert_one_error(download("--all", "--root", str(tmp_path), "--url", server.url), "the archive lacks")
    assert leftovers(tmp_path) == []


def test_cut_connection_is_resumed_within_the_run(server, tmp_path) -> None:
    server.payload = release_zip(official_files(SYM_FILES))
    server.cuts = 1
    result = download("vctk_sym", "--root", str(tmp_path), "--url", server.url)
    assert result.returncode == 0, result.stderr
    assert server.ranges[0] is None and server.ranges[1] == f"bytes={len(server.payload) // 2}-"
    assert (tmp_path / SYM_FILES[1]).is_file()


def test_cut_download_resumes_on_the_next_run(server, tmp_path) -> None:
    server.payload = release_zip(official_files(SYM_FILES))
    server.cuts = 3
    first = download("vctk_sym", "--root", str(tmp_path), "--url", server.url)
    assert_one_error(first, "run the same command again to resume")
    parts = [name for name in os.listdir(tmp_path) if name.endswith(".part")]
    assert len(parts) == 1 and not (tmp_path / "exp").exists()
    kept = os.path.getsize(tmp_path / parts[0])
    assert 0 < kept < len(server.payload)
    second = download("vctk_sym", "--root", str(tmp_path), "--url", server.url)
    assert second.returncode == 0, second.stderr
    assert server.ranges[-1] == f"bytes={kept}-"
    assert all((tmp_path / path).is_file() for path in SYM_FILES)
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".part")]


def test_unknown_and_unreleased_names(server, tmp_path) -> None:
    assert_one_error(download("vctk_v9", "--root", str(tmp_path), "--url", server.url), "unknown model 'vctk_v9'")
    assert_one_error(download("demo48k", "--root", str(tmp_path), "--url", server.url), "not in the released archive")
    assert server.ranges == [] and leftovers(tmp_path) == []


def test_a_root_that_is_not_a_folder(server, tmp_path) -> None:
    (tmp_path / "file").write_text("not a folder")
    assert_one_error(download("vctk_sym", "--root", str(tmp_path / "file"), "--url", server.url), "is a file: give the")
    assert_one_error(download("vctk_sym", "--root", str(tmp_path / "nowhere"), "--url", server.url),
                     "does not exist: create it first")
    assert server.ranges == []


def test_no_network(tmp_path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = download("vctk_sym", "--root", str(tmp_path), "--url", f"http://127.0.0.1:{port}/exp.zip")
    assert_one_error(result, "cannot reach")
    assert leftovers(tmp_path) == []


def test_missing_model_error_names_the_command(tmp_path) -> None:
    result = subprocess.run([sys.executable, os.path.join(REPO, "demoFile.py"), "--model", "vctk_sym", "--root",
                             str(tmp_path), "-i", os.path.join(OFFICIAL, "input", "test_48k.wav"),
                             "-o", str(tmp_path / "out.wav")], capture_output=True, text=True, timeout=120)
    assert_one_error(result, f"python -m utils.download vctk_sym --root {tmp_path}")
    assert get_entry("vctk_sym").released and not get_entry("demo48k").released


@pytest.mark.parametrize("form", ["path", "file-url"])
def test_a_mirror_on_this_machine_installs_and_is_left_in_place(tmp_path, form: str) -> None:
    archive = tmp_path / "mirror" / "exp.zip"
    archive.parent.mkdir()
    archive.write_bytes(release_zip(official_files(SYM_FILES)))
    root = tmp_path / "root"
    root.mkdir()
    url = str(archive) if form == "path" else archive.as_uri()
    result = download("vctk_sym", "--root", str(root), "--url", url)
    assert result.returncode == 0, result.stderr
    for path in SYM_FILES:
        assert (root / path).read_bytes() == open(os.path.join(OFFICIAL, path), "rb").read()
    assert archive.is_file() and not [name for name in os.listdir(root) if name.startswith(".exp-download")]
    missing = download("vctk_v1", "--root", str(root), "--url", str(tmp_path / "nope.zip"))
    assert_one_error(missing, f"--url {tmp_path / 'nope.zip'}: no such file: give the release archive's path or URL")
    odd = download("vctk_v1", "--root", str(root), "--url", "http//example.invalid/exp.zip")
    assert_one_error(odd, "no such file")
