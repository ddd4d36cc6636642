"""Two gloo processes (torchrun, CPU) train to the parameters one process reaches with the same config.

The config's ``batch_size`` is the global batch: two ranks with ``batch_size: 4`` read 2 samples each
and equal one process with ``batch_size: 4``, step for step; ``batch_size: 3`` (3 = 2 + 1, uneven
shares) with micro-batches of 1 (gradient accumulation) equals one process with ``batch_size: 3``.
Each file is exactly one crop long (``pad_short``), so crops take no random draws; the sampler gives
the two ranks the even and odd samples of the one-process batch. Covers the EMA codebook all-reduce
(metric-loss step) and the re-wrapping of the generator when the efficient paradigm freezes the encoder.
With files longer than a crop, each rank draws its own crops: two ranks resume bit for bit from their
own random states. An error every rank meets alike is printed once.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.test_preemption import assert_same_training_state
from tests.test_trainer import save_recipe, tiny_recipe, write_wavs

REPO = Path(__file__).resolve().parent.parent


def train(root: Path, tag: str, batch_size: int, processes: int, *extra: str, data: str = "exact",
          save_interval_steps: int = 100, returncode: int = 0) -> tuple[Path, str]:
    # No spectral convergence loss: a ratio of norms over the whole (micro-)batch, it is not a mean of
    # per-sample terms, so it differs by how the batch is cut (docs/training.md).
    config = tiny_recipe(
        root, batch_size=batch_size, use_stft_loss=False, pad_short=True, batch_length=160, adv_batch_length=160,
        start_steps={"generator": 0, "discriminator": 2}, train_max_steps=2, adv_train_max_steps=3,
        save_interval_steps=save_interval_steps, eval_interval_steps=100, log_interval_steps=1,
    )
    config["data"]["path"] = str(root / data)
    recipe = save_recipe(config, root / f"{tag}.yaml")
    launcher = [sys.executable, str(REPO / "codecTrain.py")]
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                    str(processes), str(REPO / "codecTrain.py")]
    result = subprocess.run([*launcher, "-c", recipe, "--tag", tag, "--exp_root", str(root / "exp"), *extra],
                            cwd=root, capture_output=True, text=True, timeout=400,
                            env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == returncode, result.stderr[-3000:]
    return root / "exp" / tag / "checkpoint-3steps.pkl", result.stderr


def assert_same_models(path: Path, reference: Path) -> None:
    state, expected = (torch.load(file, map_location="cpu", weights_only=True) for file in (path, reference))
    for part in ("generator", "discriminator"):
        for key, tensor in expected["model"][part].items():
            torch.testing.assert_close(state["model"][part][key], tensor, rtol=1e-4, atol=1e-5, msg=f"{part} {key}")
    embed = expected["model"]["generator"]["quantizer.codebook.layers.0.embed"]
    assert not torch.equal(embed, torch.zeros_like(embed))


@pytest.mark.slow
def test_two_processes_equal_one_with_the_same_batch_size_also_with_fast_conv(tmp_path: Path) -> None:
    write_wavs(tmp_path / "exact" / "train", 8, 160, seed=5)
    write_wavs(tmp_path / "exact" / "dev", 2, 160, seed=6)
    single, _ = train(tmp_path, "single", 4, 1)
    double, log = train(tmp_path, "ddp", 4, 2)
    assert "global batch 4 = 2 ranks x 2" in log
    config = yaml.safe_load((tmp_path / "exp" / "ddp" / "config.yml").read_text())
    assert config["batch_size"] == 4 and config["world_size"] == 2
    assert_same_models(double, single)
    # fast_conv's form depends on the CPU (time-major or blocked): DDP must train as one process either way.
    fast, log = train(tmp_path, "fast", 4, 2, "--fast_conv")
    assert "fast_conv: " in log and yaml.safe_load((tmp_path / "exp" / "fast" / "config.yml").read_text())["fast_conv"]
    assert_same_models(fast, single)


@pytest.mark.slow
def test_uneven_shares_and_accumulation_equal_one_process(tmp_path: Path) -> None:
    write_wavs(tmp_path / "exact" / "train", 6, 160, seed=5)
    write_wavs(tmp_path / "exact" / "dev", 2, 160, seed=6)
    single, _ = train(tmp_path, "single", 3, 1)
    double, log = train(tmp_path, "ddp", 3, 2, "--micro_batch", "1")
    assert "global batch 3 = 2 ranks x 1-2 (2 micro-batches of <= 1 accumulated per step)" in log
    assert_same_models(double, single)


@pytest.mark.slow
def test_bf16_compressed_discriminator_gradients_train_close_to_one_process(tmp_path: Path) -> None:
    write_wavs(tmp_path / "exact" / "train", 8, 160, seed=5)
    write_wavs(tmp_path / "exact" / "dev", 2, 160, seed=6)
    single, _ = train(tmp_path, "single", 4, 1)
    compressed, _ = train(tmp_path, "bf16", 4, 2, "--ddp_bf16_compress")
    assert yaml.safe_load((tmp_path / "exp" / "bf16" / "config.yml").read_text())["ddp_bf16_compress"] is True
    state, expected = (torch.load(file, map_location="cpu", weights_only=True) for file in (compressed, single))
    differences = []
    for key, tensor in expected["model"]["discriminator"].items():
        # One adversarial step at lr 2e-3: bf16 gradients can move Adam's update by at most about lr.
        torch.testing.assert_close(state["model"]["discriminator"][key], tensor, rtol=0, atol=5e-3, msg=key)
        differences.append((state["model"]["discriminator"][key] - tensor).abs().max().item())
    assert max(differences) > 0  # the gradients went through bfloat16


@pytest.mark.slow
def test_a_cpu_budget_stops_every_rank_after_the_same_step(tmp_path: Path) -> None:
    """Rank 0 decides when the budget is spent and every rank follows (a broadcast on the CPU group), so
    the run ends with one checkpoint and exit status 0 instead of a rank waiting in the next all-reduce."""
    write_wavs(tmp_path / "exact" / "train", 8, 160, seed=5)
    write_wavs(tmp_path / "exact" / "dev", 2, 160, seed=6)
    _, log = train(tmp_path, "budget", 4, 2, "--cpu_budget_minutes", "1e-9")
    assert [path.name for path in (tmp_path / "exp" / "budget").glob("checkpoint-*")] == ["checkpoint-1steps.pkl"]
    assert "The CPU budget (1e-09 min of training) is spent." in log
    assert "Finished training at step 1 " in log


@pytest.mark.slow
def test_two_ranks_drawing_different_random_crops_resume_bit_identically(tmp_path: Path) -> None:
    """Batch 3 on 2 ranks: rank 0 crops 2 files a step, rank 1 one, so their random states part; each
    resumes with its own (one process's checkpoint holds no per-rank states, as before)."""
    write_wavs(tmp_path / "long" / "train", 6, 400, seed=5)  # longer than the 160-sample crops
    write_wavs(tmp_path / "long" / "dev", 2, 160, seed=6)
    straight, _ = train(tmp_path, "straight", 3, 2, data="long", save_interval_steps=1)
    first = torch.load(straight.parent / "checkpoint-1steps.pkl", map_location="cpu", weights_only=True)
    assert len(first["rng_per_rank"]) == 2
    assert torch.equal(first["rng_per_rank"][0]["torch"], first["rng"]["torch"])
    assert not torch.equal(first["rng_per_rank"][1]["torch"], first["rng"]["torch"])
    (tmp_path / "exp" / "resumed").mkdir()
    shutil.copy(straight.parent / "checkpoint-1steps.pkl", tmp_path / "exp" / "resumed")
    resumed, log = train(tmp_path, "resumed", 3, 2, "--resume", "auto", data="long", save_interval_steps=1)
    assert "random state" not in log
    assert_same_training_state(resumed, straight)

    # Another number of processes takes rank 0's state, as a one-process checkpoint always gives it.
    (tmp_path / "exp" / "alone").mkdir()
    shutil.copy(straight.parent / "checkpoint-2steps.pkl", tmp_path / "exp" / "alone")
    alone, log = train(tmp_path, "alone", 3, 1, "--resume", "auto", data="long")
    assert ("checkpoint-2steps.pkl holds the random states of 2 processes and this run has 1: every process "
            "resumes with rank 0's, so the random crops are not those of an uninterrupted run") in log
    assert "rng_per_rank" not in torch.load(alone, map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_a_damaged_checkpoint_every_rank_reads_is_reported_once(tmp_path: Path) -> None:
    write_wavs(tmp_path / "exact" / "train", 4, 160, seed=5)
    write_wavs(tmp_path / "exact" / "dev", 2, 160, seed=6)
    damaged = tmp_path / "checkpoint-9steps.pkl"
    damaged.write_bytes(b"PK\x03\x04 cut short")
    _, log = train(tmp_path, "damaged", 4, 2, "--resume", str(damaged), returncode=1)
    assert log.count("error: ") == 1, log
    assert f"error: cannot read checkpoint {damaged} (" in log
    assert not (tmp_path / "exp" / "damaged").exists()


@pytest.mark.slow
def test_models_too_large_for_any_machine_are_reported_once_before_they_are_allocated(tmp_path: Path) -> None:
    config = tiny_recipe(tmp_path)
    config["generator_params"] = {**config["generator_params"], "codebook_size": 10**11}  # 13.6 TB of codebooks
    recipe = save_recipe(config, tmp_path / "huge.yaml")
    result = subprocess.run([sys.executable, "-m", "trainer.torchrun", "--standalone", "--nproc_per_node", "2",
                             str(REPO / "codecTrain.py"), "-c", recipe, "--tag", "huge", "--exp_root",
                             str(tmp_path / "exp"), "--ngpu", "0"], cwd=REPO, capture_output=True, text=True,
                            timeout=400, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr.count("error: ") == 1, result.stderr
    assert "error: generator_params codebook_size: 100000000000 makes the models' parameters and buffers take" in (
        result.stderr)
    assert not (tmp_path / "exp" / "huge").exists()
