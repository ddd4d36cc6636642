"""One training run per experiment folder: a second run of the same --tag stops with one error while the
first holds the folder, and trains once it has ended (however it ended); every rank of a second run of
several processes stops with it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_trainer import save_recipe, tiny_recipe
from trainer.builder import run_training
from trainer.exp_lock import LOCK_NAME, hold_experiment
from trainer.options import TrainOptions
from utils.errors import CodecError

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="flock is POSIX")

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from trainer.exp_lock import hold_experiment
    lock = hold_experiment(Path(sys.argv[1]))
    print("held", flush=True)
    time.sleep(120)
""")


def test_a_second_run_of_a_tag_in_training_stops_and_the_next_one_after_it_trains(tmp_path: Path) -> None:
    recipe = save_recipe(tiny_recipe(tmp_path, train_max_steps=1, save_interval_steps=1, eval_interval_steps=1,
                                     adv_train_max_steps=1), tmp_path / "recipe.yaml")  # fmt: skip
    expdir = tmp_path / "exp" / "busy"
    expdir.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(expdir)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CodecError, match=rf"{expdir} is being trained by another run \(pid {holder.pid} on "):
            run_training(TrainOptions(config=recipe, tag="busy", exp_root=str(tmp_path / "exp")))
        assert sorted(path.name for path in expdir.iterdir()) == [LOCK_NAME]  # nothing of the holder's touched
    finally:
        holder.kill()  # as a crashed or preempted run ends: the kernel drops its lock
        holder.wait()
    assert run_training(TrainOptions(config=recipe, tag="busy", exp_root=str(tmp_path / "exp"))) == expdir
    assert (expdir / "checkpoint-1steps.pkl").is_file() and (expdir / "config.yml").is_file()
    assert not (expdir / LOCK_NAME).exists()  # released at the end of the run


def test_every_rank_of_a_run_refused_the_lock_stops_with_one_error(tmp_path: Path) -> None:
    """The ranks are started by hand, as on nodes whose torchrun does not stop them when rank 0 fails:
    rank 1 waited for rank 0 in its first collective, which rank 0 never reached."""
    recipe = save_recipe(tiny_recipe(tmp_path, train_max_steps=1), tmp_path / "recipe.yaml")
    expdir = tmp_path / "exp" / "busy"
    expdir.mkdir(parents=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    job = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
           "OMP_NUM_THREADS": "1"}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(expdir)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    ranks = []
    try:
        assert holder.stdout.readline().strip() == "held"
        for rank in range(2):
            ranks.append(subprocess.Popen(
                [sys.executable, "codecTrain.py", "-c", recipe, "--tag", "busy", "--exp_root", str(tmp_path / "exp"),
                 "--ngpu", "0"], cwd=REPO, stderr=subprocess.PIPE, text=True,
                env={**os.environ, **job, "RANK": str(rank), "LOCAL_RANK": str(rank)}))
        logs = [process.communicate(timeout=120)[1] for process in ranks]
    finally:
        for process in [holder, *ranks]:
            process.kill()
            process.wait()
    assert [process.returncode for process in ranks] == [1, 0], logs
    assert logs[0].count("error: ") == 1 and f"error: {expdir} is being trained by another run (pid " in logs[0]
    assert "error" not in logs[1].lower(), logs[1]
    assert sorted(path.name for path in expdir.iterdir()) == [LOCK_NAME]


def test_the_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    lock = hold_experiment(tmp_path)
    assert f"pid {os.getpid()} on " in (tmp_path / LOCK_NAME).read_text()
    holder = subprocess.run([sys.executable, "-c", HOLDER.replace("time.sleep(120)", ""), str(tmp_path)], cwd=REPO,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert holder.returncode != 0 and "is being trained by another run" in holder.stderr
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()
    holder = subprocess.run([sys.executable, "-c", HOLDER.replace("time.sleep(120)", ""), str(tmp_path)], cwd=REPO,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert holder.returncode == 0 and holder.stdout.strip() == "held"


class _FullDisk:
    """A file on a full disk: it opens, takes text into its buffer, and fails to write it out."""

    def __init__(self, *args, **kwargs) -> None:
        self._real = open(*args, **kwargs)

    def write(self, text) -> int:
        raise OSError(28, os.strerror(28))

    flush = write

    def __getattr__(self, name: str):
        return getattr(self._real, name)


def test_a_lock_on_a_full_disk_is_one_line_and_a_fresh_run_leaves_no_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainer import exp_lock

    monkeypatch.setattr(exp_lock, "open", _FullDisk, raising=False)
    with pytest.raises(CodecError, match=rf"^no space left on device writing {tmp_path / LOCK_NAME}: free space"):
        hold_experiment(tmp_path)
    assert not (tmp_path / LOCK_NAME).exists()
    recipe = save_recipe(tiny_recipe(tmp_path), tmp_path / "recipe.yaml")
    with pytest.raises(CodecError, match="^no space left on device writing .*run/.training.lock"):
        run_training(TrainOptions(config=recipe, tag="run", exp_root=str(tmp_path / "exp")))
    assert not (tmp_path / "exp" / "run").exists()


def test_a_lock_file_that_cannot_be_removed_is_a_warning_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The folder made read-only during the run: the run's own error must stay the one that is seen."""
    lock = hold_experiment(tmp_path)

    def refused(self, missing_ok: bool = False) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "unlink", refused)
    lock.release()
    assert "cannot remove" in caplog.text and "Permission denied" in caplog.text
