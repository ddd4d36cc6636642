"""Two gloo processes (torchrun, CPU) train to the parameters one process reaches on the same global batch.

Each file is exactly one crop long (``pad_short``), so crops take no random draws; the sampler gives
the two ranks the even and odd samples of the one-process batch. Covers the EMA codebook all-reduce
(metric-loss step) and the re-wrapping of the generator when the efficient paradigm freezes the encoder.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_trainer import save_recipe, tiny_recipe, write_wavs

REPO = Path(__file__).resolve().parent.parent


def train(root: Path, tag: str, batch_size: int, processes: int) -> Path:
    config = tiny_recipe(
        root, batch_size=batch_size, pad_short=True, batch_length=160, adv_batch_length=160,
        start_steps={"generator": 0, "discriminator": 2}, train_max_steps=2, adv_train_max_steps=3,
        save_interval_steps=100, eval_interval_steps=100, log_interval_steps=1,
    )
    config["data"]["path"] = str(root / "exact")
    recipe = save_recipe(config, root / f"{tag}.yaml")
    launcher = [sys.executable, str(REPO / "codecTrain.py")]
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                    str(processes), str(REPO / "codecTrain.py")]
    result = subprocess.run([*launcher, "-c", recipe, "--tag", tag, "--exp_root", str(root / "exp")],
                            cwd=root, capture_output=True, text=True, timeout=400,
                            env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "exp" / tag / "checkpoint-3steps.pkl"


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path: Path) -> None:
    write_wavs(tmp_path / "exact" / "train", 8, 160, seed=5)
    write_wavs(tmp_path / "exact" / "dev", 2, 160, seed=6)
    single = torch.load(train(tmp_path, "single", 4, 1), map_location="cpu", weights_only=True)
    double = torch.load(train(tmp_path, "ddp", 2, 2), map_location="cpu", weights_only=True)
    for part in ("generator", "discriminator"):
        for key, tensor in single["model"][part].items():
            torch.testing.assert_close(double["model"][part][key], tensor, rtol=1e-4, atol=1e-5, msg=f"{part} {key}")
    embed = "quantizer.codebook.layers.0.embed"
    assert not torch.equal(single["model"]["generator"][embed], torch.zeros_like(single["model"]["generator"][embed]))
