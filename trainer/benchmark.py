"""Training speed of a recipe: seconds per step and samples per second of its metric-loss phase
(stage 1) and of its adversarial phase, per precision and with or without ``torch.compile``.

The steps are the trainer's own (:meth:`~trainer.base.GANTrainer.train_step`, models, losses and
optimizers built from the config as ``codecTrain.py`` builds them) on random audio of the config's
batch shape, so the figures measure compute, not the disk. The first steps (``warmup``; compilation
happens there) are not timed.
"""

from __future__ import annotations

import platform
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from trainer.builder import build_trainer
from trainer.data import StepBatch, TrainingData
from trainer.distributed import DistributedContext

PHASES = ("stage1", "adversarial")


@dataclass
class PhaseTiming:
    """One measured setting."""

    phase: str
    precision: str
    compile: bool | str  # the run option (trainer.base.compiled_networks)
    compiled: str  # what it compiled: "generator", "generator+discriminator" or ""
    fast_conv: bool
    fast_conv_form: str  # what it ran: "time_major", "blocked" (trainer.fast_conv), or "" (off, or on a GPU)
    batch_size: int
    batch_length: int
    steps: int
    seconds_per_step: float
    samples_per_second: float
    warmup_seconds: float  # the untimed first steps, compilation included
    peak_memory_mib: float | None  # on a GPU

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _adversarial_start(config: Mapping[str, Any]) -> int:
    """The first step at which the discriminator trains (autoencoder or vocoder recipes)."""
    if "start_steps" in config:
        return int((config["start_steps"] or {}).get("discriminator", 200000))
    return int(config.get("discriminator_train_start_steps", 0)) + 1


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_phase(
    config: Mapping[str, Any],
    phase: str,
    precision: str = "fp32",
    compile: bool | str = False,
    device: str = "cpu",
    steps: int = 3,
    warmup: int = 1,
    seed: int = 0,
    fast_conv: bool = False,
) -> PhaseTiming:
    """Time ``steps`` training steps of ``phase`` (``stage1`` or ``adversarial``) after ``warmup`` ones."""
    if phase not in PHASES:
        raise ValueError(f"phase '{phase}' is not one of {', '.join(PHASES)}")
    run_config = {**config, "precision": precision, "compile": compile, "fast_conv": fast_conv}
    if compile:
        from torch import _dynamo

        # Each setting compiles anew: graphs kept from an earlier one count against Dynamo's limit of
        # recompilations per function, past which it runs that function eagerly.
        _dynamo.reset()
    context = DistributedContext(device=torch.device(device))
    torch.manual_seed(seed)
    data = TrainingData(run_config, context, seed)
    with tempfile.TemporaryDirectory() as expdir:
        trainer = build_trainer(run_config, context, expdir, seed, data=data)
        if phase == "adversarial":
            trainer.steps = _adversarial_start(run_config)
            length = int(run_config.get("adv_batch_length") or run_config["batch_length"])
        else:
            length = int(run_config["batch_length"])
        batch_size = data.plan.global_batch
        audio = (0.1 * torch.randn(batch_size, 1, length, generator=torch.Generator().manual_seed(seed)))
        batch = StepBatch(audio, batch_size)
        if context.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(context.device)
        start = time.perf_counter()
        for _ in range(warmup):
            trainer.train_step(batch)
        _synchronize(context.device)
        warmed = time.perf_counter()
        for _ in range(steps):
            trainer.train_step(batch)
        _synchronize(context.device)
        seconds = (time.perf_counter() - warmed) / steps
    peak = torch.cuda.max_memory_allocated(context.device) / 2**20 if context.device.type == "cuda" else None
    return PhaseTiming(
        phase=phase, precision=precision, compile=compile, compiled="+".join(trainer.compiled), fast_conv=fast_conv,
        fast_conv_form=trainer.fast_conv_form,
        batch_size=batch_size, batch_length=length, steps=steps,
        seconds_per_step=seconds, samples_per_second=batch_size / seconds, warmup_seconds=warmed - start,
        peak_memory_mib=peak,
    )  # fmt: skip
