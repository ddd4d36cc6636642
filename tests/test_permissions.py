"""Files and folders the user may not read, and outputs that cannot be written: one line naming the
problem and the fix, never a quiet skip or a traceback. The suite runs as root, whom permissions do
not stop, so a folder or file of mode 000 is simulated (os.scandir or open raising PermissionError)."""

from __future__ import annotations

import builtins
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from utils.batch import plan
from utils.errors import CodecError
from utils.eval.metrics import match_audio_files

RATE = 16000


def clip(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros((RATE // 10, 1)), RATE)
    return path


@pytest.fixture
def locked_folders(monkeypatch: pytest.MonkeyPatch) -> None:
    """Folders named `locked` cannot be listed, as a folder of mode 000 for a user other than root."""
    real_scandir = os.scandir

    def scandir(path="."):
        if os.path.basename(os.fspath(path)) == "locked":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)


@pytest.fixture
def unreadable_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files named `noread.*` cannot be opened, as a file of mode 000 for a user other than root."""
    real_open = builtins.open

    def guarded(file, *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and os.path.basename(os.fsdecode(file)).startswith("noread."):
            raise PermissionError(13, "Permission denied", os.fsdecode(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)


def test_a_folder_input_with_a_folder_that_cannot_be_listed_is_refused_before_the_work(
    tmp_path: Path, locked_folders: None
) -> None:
    clip(tmp_path / "in" / "a.wav")
    clip(tmp_path / "in" / "locked" / "b.wav")
    with pytest.raises(CodecError, match=r"^cannot list .*in/locked \(Permission denied\): make it readable or "
                                         r"move it out of .*in; its files would be left out$"):
        plan(str(tmp_path / "in"), str(tmp_path / "out"), (".wav",), ".adc")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("side", ["ref", "deg"])
def test_evaluate_folders_with_a_folder_that_cannot_be_listed_are_refused(
    tmp_path: Path, locked_folders: None, side: str
) -> None:
    for folder in ("ref", "deg"):
        clip(tmp_path / folder / "a.wav")
        clip(tmp_path / folder / "sub" / "b.wav")
    (tmp_path / side / "sub").rename(tmp_path / side / "locked")
    label = {"ref": "reference", "deg": "degraded"}[side]
    with pytest.raises(CodecError, match=rf"^cannot list .*{side}/locked \(Permission denied\): make it readable or "
                                         rf"move it out of the {label} folder"):
        match_audio_files(tmp_path / "ref", tmp_path / "deg")
