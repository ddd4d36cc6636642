"""Outputs that cannot be written, met the way a user meets them: standard output on a full disk, a
plot on a full disk, a file another user owns in a sticky folder. One line each, exit status 1, no
traceback, no half-written file, and what was asked for on disk is not lost with what was printed."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import REPO
from utils.cli import run_main
from utils.errors import CodecError
from utils.eval import metrics
from utils.eval.probe import speech_like_signal
from utils.files import check_output_folder

RATE = 16000
FULL = "error: cannot write to standard output (No space left on device): free space, or redirect it elsewhere\n"
needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full (a Linux device) here")


class FullStream:
    """A text stream on a full disk: every write fails as /dev/full's does."""

    encoding = "utf-8"

    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def flush(self) -> None:
        pass


def test_standard_output_that_takes_no_text_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(sys, "stdout", FullStream())
    with pytest.raises(SystemExit) as stop:
        run_main(lambda: print("scores"))
    assert stop.value.code == 1
    assert capsys.readouterr().err == FULL


@needs_dev_full
@pytest.mark.parametrize("unbuffered", ["1", ""])
def test_a_command_whose_stdout_is_dev_full_says_so_in_one_line(unbuffered: str) -> None:
    """Buffered (the default), the text fails at the end's flush; unbuffered, at the print."""
    program = (f"import sys\nsys.path.insert(0, {REPO!r})\nfrom utils.cli import run_main\n"
               "run_main(lambda: print('a line'))\n")
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-c", program], stdout=full, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": unbuffered}, timeout=120)  # fmt: skip
    assert (result.returncode, result.stderr) == (1, FULL)


@needs_dev_full
def test_evaluate_writes_its_json_though_the_table_cannot_be_printed(tmp_path: Path) -> None:
    speech = speech_like_signal(1.0, RATE)
    sf.write(tmp_path / "ref.wav", speech, RATE)
    sf.write(tmp_path / "deg.wav", speech + 0.01 * np.random.default_rng(0).standard_normal(len(speech)), RATE)
    scores = tmp_path / "scores.json"
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, os.path.join(REPO, "bin", "evaluate.py"), str(tmp_path / "ref.wav"),
                                 str(tmp_path / "deg.wav"), "--no-visqol", "--json", str(scores)],
                                stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)  # fmt: skip
    assert (result.returncode, result.stderr) == (1, FULL)
    assert json.loads(scores.read_text())["files"][0]["file"] == "ref.wav"


def _plot(kind: str, path: Path) -> None:
    """One of the toolkit's plots written to `path`: evaluate's spectrograms, a learning curve, the
    model report's rate-quality plot."""
    if kind == "spectrograms":
        spectrogram = np.zeros((80, 50))
        metrics.save_spectrogram_figure(path, {"reference": spectrogram, "decoded": spectrogram}, 48000)
    elif kind == "curve":
        from trainer.curve import plot_curves

        plot_curves({"run": [{"steps": step, "pesq_wb": 1 + 0.1 * step} for step in (1, 2)]}, path)
    else:
        from bin.model_report import save_rate_quality_plot

        save_rate_quality_plot(path, [{"system": "custom K=8", "kbps": 12.8, "pesq_wb": 2.0, "estoi": 0.7}])


@pytest.mark.parametrize("kind", ["spectrograms", "curve", "rate_quality"])
def test_a_plot_on_a_full_disk_is_one_line_and_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              kind: str) -> None:
    from matplotlib.figure import Figure

    def savefig(self, name, **kwargs) -> None:
        with open(name, "wb") as stream:  # a part of the image, then the disk is full
            stream.write(b"\x89PNG")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Figure, "savefig", savefig)
    path = tmp_path / "plots" / "a.png"
    path.parent.mkdir()
    with pytest.raises(CodecError, match=rf"^no space left on device writing {path}: free space or write elsewhere$"):
        _plot(kind, path)
    assert os.listdir(path.parent) == []


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="no users' ownership of files here")
def test_another_users_file_in_a_sticky_folder_is_refused_before_the_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only its owner (or the folder's, or root) may replace it, as in /tmp: the rename at the end would
    fail. Another user is simulated by this process claiming another user id."""
    folder = tmp_path / "shared"
    folder.mkdir()
    taken = folder / "taken.wav"
    taken.write_bytes(b"RIFF")
    check_output_folder(taken)  # this user's own file
    monkeypatch.setattr(os, "geteuid", lambda: taken.stat().st_uid + 1)
    check_output_folder(taken)  # no sticky bit: the folder's writers may replace any file in it
    folder.chmod(folder.stat().st_mode | stat.S_ISVTX)
    check_output_folder(folder / "new.wav")
    with pytest.raises(CodecError, match=rf"^cannot replace {taken}: it is another user's, in a folder where only "
                                         r"its owner may replace it \(the sticky bit, as in /tmp\): give another"):
        check_output_folder(taken)
