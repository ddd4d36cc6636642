"""Training speed of a recipe: seconds per step and samples per second of its metric-loss phase
(stage 1) and of its adversarial phase, per precision and with or without ``torch.compile``.

The steps are the trainer's own (:meth:`~trainer.base.GANTrainer.train_step`, models, losses and
optimizers built from the config as ``codecTrain.py`` builds them) on random audio of the config's
batch shape, so the figures measure compute, not the disk. The first steps (``warmup``; compilation
happens there) are not timed.

Every ``train_mode`` is timed: an autoencoder recipe has both phases, a denoising recipe stage 1
only (noisy and clean random audio), a vocoder recipe the phases its start steps give (the released
ones train adversarially from the first step). A vocoder whose analyzer checkpoint or statistics
file is not there yet gets stand-ins of the same shapes (:func:`stand_ins`): the step's arithmetic
does not depend on the weights.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from dataloader.loader import train_mode
from trainer.autoencoder import AutoencoderTrainer
from trainer.base import GANTrainer
from trainer.builder import build_trainer
from trainer.data import StepBatch, TrainingData
from trainer.distributed import DistributedContext, configure_tf32
from trainer.memory import out_of_memory
from trainer.vocoder import VocoderTrainer
from utils.checkpoint import build_generator, generator_state_dict
from utils.errors import CodecError
from utils.experiment_config import config_path_for

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
    tf32: bool | None = None  # on a GPU: TF32 matmuls and convolutions (compute capability 8 and newer)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _vocoder_starts(config: Mapping[str, Any]) -> tuple[int, int]:
    """A vocoder's generator and discriminator start steps: each trains at steps above its own."""
    return int(config.get("generator_train_start_steps", 0)), int(config.get("discriminator_train_start_steps", 0))


def config_phases(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The phases a config trains: a denoising encoder has no discriminator; a vocoder has a stage 1
    only where its discriminator starts after its generator."""
    mode = train_mode(config)
    if mode == "denoise":
        return ("stage1",)
    if mode == "vocoder":
        generator, discriminator = _vocoder_starts(config)
        return PHASES if discriminator > generator else ("adversarial",)
    return PHASES


def _phase_start(trainer: GANTrainer, phase: str) -> int:
    """The first step of ``phase``: where the generator trains, and the discriminator too (adversarial)."""
    if isinstance(trainer, VocoderTrainer):  # each trains at the steps above its start step
        first = trainer.generator_start + 1
        return max(first, trainer.discriminator_start + 1) if phase == "adversarial" else first
    if isinstance(trainer, AutoencoderTrainer):
        return trainer.discriminator_start if phase == "adversarial" else trainer.generator_start
    return 0


def _analyzer_recipe(config_path: Path, analyzer: str) -> Path | None:
    """The config an analyzer checkpoint was (or will be) trained from: the ``config.yml`` of its
    experiment folder, else the recipe named like that folder (``exp/autoencoder/X/...`` ->
    ``config/autoencoder/X.yaml`` beside the vocoder's ``config/vocoder/``)."""
    saved = Path(config_path_for(analyzer))
    if saved.is_file():
        return saved
    folder = Path(analyzer).parent
    recipe = config_path.resolve().parent.parent / folder.parent.name / f"{folder.name}.yaml"
    return recipe if recipe.is_file() else None


def stand_ins(
    config: Mapping[str, Any], config_path: str | Path, folder: str | Path
) -> tuple[dict[str, Any], Path | None]:
    """``config`` with what a vocoder recipe reads from earlier stages made present: an analyzer of the
    autoencoder recipe's structure with random weights in place of a missing analyzer checkpoint, and
    statistics of 0 mean and unit scale in place of a missing statistics file (written in ``folder``).
    Also returns the analyzer's config file (for timing the original alongside), None for other modes.

    Raises:
        CodecError: the analyzer is missing and no config says what it would be.
    """
    if train_mode(config) != "vocoder":
        return dict(config), None
    config = {**config, "generator_params": dict(config["generator_params"])}
    analyzer = str(config.get("analyzer") or "")
    recipe = _analyzer_recipe(Path(config_path), analyzer) if analyzer else None
    if recipe is None:
        raise CodecError(
            f"the vocoder's analyzer '{analyzer}' has no config.yml beside it and no recipe "
            f"config/<mode>/<name>.yaml named by its folder: set 'analyzer' to an autoencoder checkpoint"
        )
    folder = Path(folder)
    if not Path(analyzer).is_file():
        with open(recipe) as handle:
            analyzer_config = yaml.safe_load(handle)
        (folder / "analyzer").mkdir(parents=True, exist_ok=True)
        (folder / "analyzer" / "config.yml").write_text(yaml.safe_dump(analyzer_config))
        with torch.random.fork_rng():  # the caller's random stream stays as it was
            torch.manual_seed(0)
            weights = generator_state_dict(build_generator(analyzer_config, inference=False))
        config["analyzer"] = str(folder / "analyzer" / "checkpoint.pkl")
        torch.save({"model": {"generator": weights}}, config["analyzer"])
    stats = str(config["generator_params"].get("stats") or "")
    if stats and not Path(stats).is_file():
        channels = int(config["generator_params"]["in_channels"])
        config["generator_params"]["stats"] = str(folder / "stats.npy")
        np.save(
            config["generator_params"]["stats"], np.stack([np.zeros(channels), np.ones(channels)]).astype(np.float32)
        )
    return config, recipe


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
    if phase not in config_phases(config):
        raise CodecError(
            f"a {train_mode(config)} recipe of these start steps has no {phase} phase: time "
            f"{' or '.join(config_phases(config))}"
        )
    # (no learning curve: the steps train on random audio and need no corpus)
    run_config = {**config, "precision": precision, "compile": compile, "fast_conv": fast_conv, "learning_curve": None}
    if compile:
        from torch import _dynamo

        # Each setting compiles anew: graphs kept from an earlier one count against Dynamo's limit of
        # recompilations per function, past which it runs that function eagerly.
        _dynamo.reset()
    context = DistributedContext(device=torch.device(device))
    if context.device.type == "cuda":  # as codecTrain.py trains there: cuDNN's autotuner, TF32 where the GPU has it
        torch.backends.cudnn.benchmark = True
        configure_tf32(context.device, bool(config.get("tf32", True)))
    torch.manual_seed(seed)
    data = TrainingData(run_config, context, seed)
    with tempfile.TemporaryDirectory() as expdir:
        trainer = build_trainer(run_config, context, expdir, seed, data=data)
        trainer.steps = _phase_start(trainer, phase)
        length = int(run_config["batch_length"])
        if phase == "adversarial":
            length = int(run_config.get("adv_batch_length") or length)
        batch_size = data.plan.global_batch
        audio = 0.1 * torch.randn(batch_size, 1, length, generator=torch.Generator().manual_seed(seed))
        if train_mode(run_config) == "denoise":  # (noisy, clean)
            audio = (audio + 0.03 * torch.randn(audio.shape, generator=torch.Generator().manual_seed(seed + 1)), audio)
        batch = StepBatch(audio, batch_size)
        if context.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(context.device)
        try:
            start = time.perf_counter()
            for _ in range(warmup):
                trainer.train_step(batch)
            _synchronize(context.device)
            warmed = time.perf_counter()
            for _ in range(steps):
                trainer.train_step(batch)
            _synchronize(context.device)
            seconds = (time.perf_counter() - warmed) / steps
        except (RuntimeError, MemoryError) as error:
            failed = out_of_memory(error, trainer.steps, context.device)
            if failed is None:
                raise
            raise failed from None
    cuda = context.device.type == "cuda"
    peak = torch.cuda.max_memory_allocated(context.device) / 2**20 if cuda else None
    return PhaseTiming(
        phase=phase, precision=precision, compile=compile, compiled="+".join(trainer.compiled), fast_conv=fast_conv,
        fast_conv_form=trainer.fast_conv_form,
        batch_size=batch_size, batch_length=length, steps=steps,
        seconds_per_step=seconds, samples_per_second=batch_size / seconds, warmup_seconds=warmed - start,
        peak_memory_mib=peak, tf32=torch.backends.cuda.matmul.allow_tf32 if cuda else None,
    )  # fmt: skip
