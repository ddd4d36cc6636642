"""Files and folders the user may not read, and outputs that cannot be written: one line naming the
problem and the fix, never a quiet skip or a traceback. The suite runs as root, whom permissions do
not stop, so a folder or file of mode 000 is simulated (os.scandir or open raising PermissionError)."""

from __future__ import annotations

import builtins
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from utils.audio import read_audio
from utils.batch import plan
from utils.bitstream.adc import BitstreamError, open_adc
from utils.bitstream.entropy import EntropyModel
from utils.checkpoint import read_checkpoint
from utils.errors import CodecError
from utils.eval import metrics
from utils.eval.metrics import match_audio_files
from utils.experiment_config import load_config

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
def unreadable(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], Path]:
    """`unreadable(path)` makes `path` a file that cannot be opened, as one of mode 000 for a user other
    than root: Python's open fails, and libsndfile's as it does there ("System error")."""
    locked: set[str] = set()
    real_open, real_read = builtins.open, sf.read

    def is_locked(file: object) -> bool:
        return isinstance(file, (str, bytes, os.PathLike)) and os.path.abspath(os.fsdecode(file)) in locked

    def guarded_open(file, *args, **kwargs):
        if is_locked(file):
            raise PermissionError(13, "Permission denied", os.fsdecode(file))
        return real_open(file, *args, **kwargs)

    def guarded_read(file, *args, **kwargs):
        if is_locked(file):
            raise sf.LibsndfileError(2, f"Error opening {file!r}: ")  # 2: libsndfile's SF_ERR_SYSTEM
        return real_read(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(sf, "read", guarded_read)

    def lock(path: Path) -> Path:
        locked.add(os.path.abspath(path))
        return path

    return lock


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


PERMISSION = r"\(permission denied\): make it readable for this user \(chmod \+r\)$"


def test_an_audio_file_the_user_may_not_read_is_named_as_such_not_as_no_audio(
    tmp_path: Path, unreadable: Callable[[Path], Path]
) -> None:
    path = unreadable(clip(tmp_path / "a.wav"))
    with pytest.raises(CodecError, match=rf"^cannot read .*a\.wav {PERMISSION}"):
        read_audio(path)


def test_an_adc_or_entropy_file_the_user_may_not_read_is_one_line(
    tmp_path: Path, unreadable: Callable[[Path], Path]
) -> None:
    for name, reader in (("x.adc", open_adc), ("x.entropy", EntropyModel.load)):
        path = tmp_path / name
        path.write_bytes(b"ADC")
        unreadable(path)
        with pytest.raises(BitstreamError, match=rf"^cannot read .*{name} {PERMISSION}"):
            reader(path)


def test_a_checkpoint_or_config_the_user_may_not_read_is_not_called_damaged(
    tmp_path: Path, unreadable: Callable[[Path], Path]
) -> None:
    checkpoint = tmp_path / "checkpoint-1steps.pkl"
    checkpoint.write_bytes(b"PK")
    (tmp_path / "config.yml").write_text("model_type: audiodec\n")
    unreadable(checkpoint)
    with pytest.raises(CodecError, match=rf"^cannot read .*checkpoint-1steps\.pkl {PERMISSION}"):
        read_checkpoint(str(checkpoint))
    unreadable(tmp_path / "config.yml")
    with pytest.raises(CodecError, match=rf"^cannot read .*config\.yml {PERMISSION}"):
        load_config(str(checkpoint))


def test_a_folder_input_that_cannot_be_listed_itself_is_named(tmp_path: Path, locked_folders: None) -> None:
    clip(tmp_path / "locked" / "a.wav")
    with pytest.raises(CodecError, match=r"^cannot list .*/locked \(Permission denied\): make it readable$"):
        plan(str(tmp_path / "locked"), str(tmp_path / "out"), (".wav",), ".adc")


@pytest.fixture
def librosa_without_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    """librosa's filters failing to import as they do for a user whose home folder is missing (numba's
    and platformdirs' RuntimeErrors), simulated: this process has a home folder."""
    import importlib.abc
    import sys

    class NoCaches(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "librosa.filters":
                raise RuntimeError("could not determine the home directory for '~/.cache', set an absolute HOME")
            return None

    monkeypatch.delitem(sys.modules, "librosa.filters", raising=False)
    monkeypatch.setattr(sys, "meta_path", [NoCaches(), *sys.meta_path])
    metrics._mel_filters.cache_clear()
    yield
    metrics._mel_filters.cache_clear()


CACHES = (r"^librosa cannot set up its caches \(could not determine the home directory for '~/.cache', set an "
          r"absolute HOME\): this user's home folder is missing or read-only; set XDG_CACHE_HOME and "
          r"NUMBA_CACHE_DIR to a folder you can write$")


def test_training_and_the_metrics_without_librosas_caches_are_one_line(tmp_path: Path, librosa_without_caches) -> None:
    from tests.test_trainer import save_recipe, tiny_recipe
    from trainer.builder import run_training
    from trainer.options import TrainOptions

    recipe = save_recipe(tiny_recipe(tmp_path), tmp_path / "recipe.yaml")
    with pytest.raises(CodecError, match=CACHES):  # (it said "cannot build MultiMelSpectrogramLoss ... fix the config")
        run_training(TrainOptions(config=recipe, tag="run", exp_root=str(tmp_path / "exp")))
    assert not (tmp_path / "exp" / "run").exists()
    signal = np.sin(np.arange(4800) / 10.0)
    with pytest.raises(CodecError, match=CACHES):
        metrics.log_mel_spectrogram(signal, 48000)
