"""Preemption-safe training: trainer/preemption.py's signal flag, its agreement across ranks, requeue."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

from trainer import distributed as distributed_module
from trainer.distributed import cpu_group, shutdown_distributed
from trainer.preemption import PreemptionHandler

ROOT = Path(__file__).resolve().parent.parent
SAMPLING_RATE = 48000
needs_trainer = pytest.mark.skipif(
    not (ROOT / "codecTrain.py").is_file() or not (ROOT / "trainer" / "base.py").is_file(),
    reason="the trainer (codecTrain.py, trainer/base.py) is not in this checkout yet",
)


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGTERM])
def test_a_stop_signal_sets_the_flag_and_uninstall_restores(signum: signal.Signals) -> None:
    previous = signal.getsignal(signum)
    with PreemptionHandler() as preemption:
        assert not preemption.should_stop()
        os.kill(os.getpid(), signum)
        assert preemption.requested and preemption.received == signum
        assert preemption.should_stop()
    assert signal.getsignal(signum) is previous


@pytest.fixture
def unused_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rank_stops_at(rank: int, world_size: int, port: int, as_nccl: bool, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    if as_nccl:  # what a GPU job's default group reports: the stop flags then go through a gloo group of their own
        dist.get_backend = lambda group=None: dist.Backend.NCCL if group is None else dist.Backend.GLOO
    preemption = PreemptionHandler().install()
    stopped_at = None
    for step in range(1, 6):
        if rank == 1 and step == 3:
            os.kill(os.getpid(), signal.SIGUSR1)
        if preemption.should_stop():
            stopped_at = step
            break
    group = cpu_group()
    results[rank] = (stopped_at, group is not None and group is cpu_group() and group is not dist.group.WORLD)
    shutdown_distributed(finished=True)  # a barrier, then leaving the group without gloo's exit hang
    results[rank] += (distributed_module._cpu_process_group is None,)


@pytest.mark.parametrize("as_nccl", [False, True], ids=["gloo", "as_nccl"])
def test_every_rank_stops_at_the_step_one_rank_was_signalled(unused_tcp_port: int, as_nccl: bool) -> None:
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank_stops_at, args=(2, unused_tcp_port, as_nccl, results), nprocs=2, join=True)
        # Under NCCL the CPU group is made once, shared, and forgotten when the process group is left.
        assert dict(results) == {0: (3, as_nccl, True), 1: (3, as_nccl, True)}



RELAY_SCRIPT = """
import signal, subprocess, sys
from trainer.torchrun import StopSignalRelay, child_processes

calls = []
relay = StopSignalRelay(lambda signum, frame: calls.append(signal.Signals(signum).name))
relay(signal.SIGINT, None)  # not a stop signal: torchrun's
relay(signal.SIGTERM, None)  # no rank yet: torchrun's
rank = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
found = child_processes() == [rank.pid]
relay(signal.SIGTERM, None)
ended = rank.wait(timeout=10)
relay(signal.SIGTERM, None)  # a second one: torchrun's
print(calls, found, ended, relay.passed_on)
"""


def test_torchruns_relay_passes_the_first_stop_signal_to_the_ranks_and_leaves_the_rest_to_torchrun() -> None:
    result = subprocess.run([sys.executable, "-c", RELAY_SCRIPT], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.stdout.strip() == "['SIGINT', 'SIGTERM', 'SIGTERM'] True -15 True", result.stderr
    assert "torchrun: SIGTERM passed on to its 1 training process: they save" in result.stderr


FAILING_RANK = """
import os, sys
if os.environ["RANK"] == "1":
    print("error: rank 1 cannot go on: fix it", file=sys.stderr)
    sys.exit(3)
"""


def test_a_failed_rank_ends_the_recipes_torchrun_with_its_error_line_and_no_traceback(tmp_path: Path) -> None:
    """torchrun alone follows the rank's error with its ChildFailedError block and a traceback."""
    script = tmp_path / "fails.py"
    script.write_text(FAILING_RANK)
    result = subprocess.run([sys.executable, "-m", "trainer.torchrun", "--standalone", "--nproc_per_node", "2",
                             str(script)], cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "error: rank 1 cannot go on: fix it" in result.stderr
    assert "Traceback" not in result.stderr and "ChildFailedError" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[-1] == f"torchrun: {script} failed: rank 1 exited with status 3"


@pytest.fixture
def fake_scontrol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    calls = tmp_path / "calls"
    stub = tmp_path / "scontrol"
    stub.write_text(f'#!/usr/bin/env bash\necho "$*" >> {calls}\n')
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    return calls


def test_requeue_asks_scontrol_under_slurm_when_enabled(fake_scontrol: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    monkeypatch.setenv("AUDIODEC_REQUEUE", "1")
    assert PreemptionHandler().requeue()
    assert fake_scontrol.read_text() == "requeue 1234\n"


@pytest.mark.parametrize(("job", "enabled"), [("1234", "0"), (None, "1")])
def test_no_requeue_unless_enabled_and_under_slurm(
    fake_scontrol: Path, monkeypatch: pytest.MonkeyPatch, job: str | None, enabled: str
) -> None:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    if job is not None:
        monkeypatch.setenv("SLURM_JOB_ID", job)
    monkeypatch.setenv("AUDIODEC_REQUEUE", enabled)
    assert not PreemptionHandler().requeue()
    assert not PreemptionHandler(requeue=False).requeue()
    assert not fake_scontrol.exists()


# ---- training runs (shared with test_slurm.py) ---------------------------------------------------


def recipe_sandbox(folder: Path, own: tuple[str, ...] = ()) -> Path:
    """A folder that runs the recipes: links to the repository's code, its own config/ and outputs.

    ``own`` names more entries to leave out (for a test to put its own there).
    """
    folder.mkdir(parents=True, exist_ok=True)
    own = {"config", "corpus", "corpus24k", "exp", "output", "stats", "slurmlogs", *own}
    for entry in ROOT.iterdir():
        if entry.name not in own and not entry.name.startswith("."):
            (folder / entry.name).symlink_to(entry)
    (folder / "config").mkdir()
    for kind in (ROOT / "config").iterdir():
        if kind.is_dir():
            (folder / "config" / kind.name).mkdir()
    return folder


def write_corpus(root: Path, train_samples: int = 12000, train_files: int = 2) -> Path:
    """Synthetic wavs (tones with noise) in root/{train,dev,test}: ``train_files`` in train, one in the others.

    Training files of exactly the crop length (with ``pad_short``) make the crops deterministic.
    """
    generator = np.random.default_rng(0)
    for subset, count, samples in (("train", train_files, train_samples), ("dev", 1, 9600), ("test", 1, 9600)):
        (root / subset).mkdir(parents=True, exist_ok=True)
        time_axis = np.arange(samples) / SAMPLING_RATE
        for index in range(count):
            pitch = generator.uniform(100, 300)
            wave = 0.3 * np.sin(2 * np.pi * pitch * time_axis) + 0.02 * generator.standard_normal(samples)
            sf.write(root / subset / f"{subset}_{index}.wav", wave.astype(np.float32), SAMPLING_RATE)
    return root


def tiny_configs(corpus: Path, steps: int = 2) -> dict[str, dict]:
    """The CPU demo recipes shrunk to widths of 2-16 channels, 4800-sample crops and ``steps`` steps a phase.

    The autoencoder (tag ``autoencoder/tiny``) trains ``steps`` metric steps then ``steps`` adversarial
    ones; the statistics and the vocoder (``statistic/tiny``, ``vocoder/tiny``) use its encoder at
    ``steps``; the vocoder trains ``steps`` steps. Checkpoints every ``steps``; no validation.
    """
    analyzer = f"exp/autoencoder/tiny/checkpoint-{steps}steps.pkl"
    schedule = {
        "save_interval_steps": steps,
        "eval_interval_steps": 10**6,  # validation would cost more than these runs: never
        "log_interval_steps": 1,
        "batch_length": 4800,
        "pad_short": True,
    }

    def load(name: str) -> dict:
        config = yaml.safe_load((ROOT / "config" / name).read_text())
        config["data"]["path"] = str(corpus)
        return config

    autoencoder = load("autoencoder/demo_48000_hop300.yaml")
    autoencoder["generator_params"].update(encode_channels=2, decode_channels=2, code_dim=8, codebook_size=16)
    discriminator = autoencoder["discriminator_params"]
    discriminator.update(scales=1, periods=[2, 3])
    discriminator["scale_discriminator_params"].update(channels=4, max_downsample_channels=8, max_groups=1)
    discriminator["period_discriminator_params"].update(channels=2, max_downsample_channels=8)
    autoencoder["start_steps"]["discriminator"] = steps
    autoencoder.update(train_max_steps=steps, adv_train_max_steps=2 * steps, adv_batch_length=4800, **schedule)

    statistic = load("statistic/demo_48000_hop300.yaml")
    statistic.update(analyzer=analyzer, stats="stats/tiny.npy")

    vocoder = load("vocoder/demo_v1_48000_hop300.yaml")
    vocoder["analyzer"] = analyzer
    vocoder["generator_params"].update(in_channels=8, channels=16, stats="stats/tiny.npy")
    vocoder["discriminator_params"] = discriminator
    vocoder.update(discriminator_train_start_steps=1, train_max_steps=steps, **schedule)
    return {"autoencoder/tiny": autoencoder, "statistic/tiny": statistic, "vocoder/tiny": vocoder}


def write_configs(sandbox: Path, configs: dict[str, dict]) -> None:
    """Write each config to ``<sandbox>/config/<tag>.yaml``."""
    for tag, config in configs.items():
        path = sandbox / "config" / f"{tag}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))


def training_env(**extra: str) -> dict[str, str]:
    """The environment of a training process: this interpreter; one thread (the tiny convolutions
    run tens of times slower with two threads on a loaded machine)."""
    return {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def wait_for_text(path: Path, pattern: str, process: subprocess.Popen | None = None, timeout: float = 120) -> str:
    """Wait until the file holds a match of ``pattern`` (a regex); returns the match."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        match = re.search(pattern, text)
        if match:
            return match.group(0)
        if process is not None and process.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"no {pattern!r} in {path}: {path.read_text() if path.exists() else '(missing)'}")


def assert_same_training_state(path: Path, reference: Path) -> None:
    """Two training checkpoints hold equal parameters, optimizer and scheduler states and step counts."""
    state, expected = (torch.load(file, map_location="cpu", weights_only=True) for file in (path, reference))
    assert state["steps"] == expected["steps"]
    for part in ("model", "optimizer", "scheduler"):
        flat, flat_expected = _flatten(state[part]), _flatten(expected[part])
        assert flat.keys() == flat_expected.keys(), part
        for key, value in flat.items():
            if torch.is_tensor(value):
                assert torch.equal(value, flat_expected[key]), f"{part}.{key} differs"
            else:
                assert value == flat_expected[key], f"{part}.{key} differs"


def _flatten(tree: object, prefix: str = "") -> dict[str, object]:
    """Nested dicts and lists -> {"a.0.b": leaf}."""
    if isinstance(tree, dict):
        children = tree.items()
    elif isinstance(tree, list | tuple):
        children = enumerate(tree)
    else:
        return {prefix.rstrip("."): tree}
    flat: dict[str, object] = {}
    for name, child in children:
        flat.update(_flatten(child, f"{prefix}{name}."))
    return flat


# ---- a local training process stopped by SIGTERM --------------------------------------------------


def train(sandbox: Path, tag: str, log: Path, *extra: str, new_session: bool = False) -> subprocess.Popen:
    command = [sys.executable, "codecTrain.py", "-c", f"config/{tag}.yaml", "--tag", tag, *extra]
    with open(log, "w") as output:
        return subprocess.Popen(command, cwd=sandbox, env=training_env(), stdout=output, stderr=subprocess.STDOUT,
                                start_new_session=new_session)


@needs_trainer
def test_sigterm_saves_the_step_reached_and_resuming_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    sandbox = recipe_sandbox(tmp_path / "recipe")
    corpus = write_corpus(tmp_path / "corpus", train_files=3)  # longer than the crops: random crops
    config = tiny_configs(corpus, steps=2)["autoencoder/tiny"]
    config.update(adv_train_max_steps=1000, save_interval_steps=10**6)
    write_configs(sandbox, {"autoencoder/long": config})

    process = train(sandbox, "autoencoder/long", tmp_path / "stopped.log")
    wait_for_text(tmp_path / "stopped.log", r"\(Steps: 4\)", process)  # in the adversarial phase
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, (tmp_path / "stopped.log").read_text()
    log = (tmp_path / "stopped.log").read_text()
    assert "Stop requested (SIGTERM)" in log
    (checkpoint,) = (sandbox / "exp" / "autoencoder" / "long").glob("checkpoint-*steps.pkl")
    stopped_at = int(re.search(r"checkpoint-(\d+)steps", checkpoint.name).group(1))
    assert 4 <= stopped_at < 1000 and f"Saved checkpoint {checkpoint.relative_to(sandbox)}" in log
    assert torch.load(checkpoint, map_location="cpu", weights_only=True)["steps"] == stopped_at

    # Resume to two steps further, and train the same from scratch in one go: the same state.
    config.update(adv_train_max_steps=stopped_at + 2)
    write_configs(sandbox, {"autoencoder/long": config, "autoencoder/reference": config})
    resumed = train(sandbox, "autoencoder/long", tmp_path / "resumed.log", "--resume", "auto")
    reference = train(sandbox, "autoencoder/reference", tmp_path / "reference.log")
    assert resumed.wait(timeout=120) == 0, (tmp_path / "resumed.log").read_text()
    assert reference.wait(timeout=120) == 0, (tmp_path / "reference.log").read_text()
    assert f"at step {stopped_at}" in (tmp_path / "resumed.log").read_text()
    final = f"checkpoint-{stopped_at + 2}steps.pkl"
    assert_same_training_state(sandbox / "exp/autoencoder/long" / final, sandbox / "exp/autoencoder/reference" / final)


@needs_trainer
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_a_stop_signal_to_the_whole_process_group_spares_the_loader_workers(tmp_path: Path, signum: int) -> None:
    """SLURM signals every process of a job step, the data loader's workers too: the run must still save
    its checkpoint and exit 0, and leave no worker behind."""
    sandbox = recipe_sandbox(tmp_path / "recipe")
    corpus = write_corpus(tmp_path / "corpus", train_files=3)
    config = tiny_configs(corpus, steps=2)["autoencoder/tiny"]
    config.update(adv_train_max_steps=1000, save_interval_steps=10**6, num_workers=2)
    write_configs(sandbox, {"autoencoder/long": config})

    log = tmp_path / "stopped.log"
    process = train(sandbox, "autoencoder/long", log, new_session=True)
    wait_for_text(log, r"\(Steps: 3\)", process)
    os.killpg(process.pid, signum)
    assert process.wait(timeout=60) == 0, log.read_text()
    text = log.read_text()
    assert f"Stop requested ({signal.Signals(signum).name})" in text and "Traceback" not in text, text
    (checkpoint,) = (sandbox / "exp" / "autoencoder" / "long").glob("checkpoint-*steps.pkl")
    assert f"Saved checkpoint {checkpoint.relative_to(sandbox)}" in text
    deadline = time.monotonic() + 20
    while True:  # the workers end when the training process shuts its loader down
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "a loader worker outlived the training process"
        time.sleep(0.2)


@needs_trainer
@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_a_stop_signal_to_the_recipes_torchrun_checkpoints_and_exits_0(tmp_path: Path, signum: int) -> None:
    """torchrun alone exits 1 with a traceback on SIGTERM after its ranks saved and exited 0, and dies of
    SIGUSR1 at once; the recipes' torchrun (trainer/torchrun.py) passes the signal on to its ranks and
    ends as they end."""
    sandbox = recipe_sandbox(tmp_path / "recipe")
    corpus = write_corpus(tmp_path / "corpus", train_files=4)
    config = tiny_configs(corpus, steps=2)["autoencoder/tiny"]
    config.update(adv_train_max_steps=1000, save_interval_steps=10**6)
    write_configs(sandbox, {"autoencoder/long": config})

    log = tmp_path / "torchrun.log"
    command = [sys.executable, "-m", "trainer.torchrun", "--standalone", "--nproc_per_node", "2", "codecTrain.py",
               "-c", "config/autoencoder/long.yaml", "--tag", "autoencoder/long", "--ngpu", "0"]
    with open(log, "w") as output:
        process = subprocess.Popen(command, cwd=sandbox, env=training_env(), stdout=output, stderr=subprocess.STDOUT)
    wait_for_text(log, r"\(Steps: 4\)", process)
    process.send_signal(signum)
    assert process.wait(timeout=120) == 0, log.read_text()
    text = log.read_text()
    name = signal.Signals(signum).name
    assert f"torchrun: {name} passed on to its 2 training processes: they save a checkpoint and exit" in text
    assert f"Stop requested ({name})" in text and "Traceback" not in text, text
    (checkpoint,) = (sandbox / "exp" / "autoencoder" / "long").glob("checkpoint-*steps.pkl")
    assert f"Saved checkpoint {checkpoint.relative_to(sandbox)}" in text
