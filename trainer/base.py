"""The GAN training loop shared by the three flavours (autoencoder, vocoder, denoise).

One step: the generator pass and its update (metric losses, the flavour's extra terms such as the VQ
loss, and, once the discriminator is on, adversarial + feature-matching losses), then the
discriminator update on real audio and on the generator's output re-computed without gradient.
Intervals (in steps, as the original counts them): log losses, evaluate on the validation set (losses,
audio and log-mel images of a few samples), save a checkpoint. A flavour says what the batch holds,
how the generator produces audio, which parts are frozen, and when each network trains.

Under DDP (see :mod:`trainer.distributed`) the generator's training pass and the discriminator's
update go through their DDP wrappers; everything without gradient uses the bare modules, and only
rank 0 writes logs, TensorBoard and checkpoints.

A step learns from the recipe's global batch (:mod:`trainer.data`): this rank's share arrives as one
tensor, is cut into micro-batches when the plan says so, and each micro-batch's loss is weighted by
its share of the global batch, so that the accumulated gradient is the global batch's mean gradient.

Run options (recorded in ``config.yml``; all off in the original recipes, whose fp32 training is then
the original's, step for step):
- ``precision``: ``fp32`` (default), ``bf16`` or ``fp16``: the generator and discriminator forward
  passes under autocast (fp16 with a gradient scaler per network); the residual VQ and every loss run
  in float32 (their log/sqrt and the EMA statistics lose too much in 16 bits).
- ``compile``: ``torch.compile`` the generator and, except on the CPU, the discriminator (``true``);
  ``all`` or ``generator`` compile those on any device (:func:`compiled_networks`).
- ``fast_conv``: on the CPU, convolutions through faster kernels, the generator's time-major on
  AVX-512 CPUs (the discriminators' too in bf16; :mod:`trainer.fast_conv`), and the generator's ELUs
  and LeakyReLUs on the native engine
  (:mod:`trainer.fast_activation`); the gradients' last bits differ from the original's.
- ``ddp_bf16_compress``: all-reduce the discriminator's gradients as bfloat16.
- ``output_delay``: D samples by which the generator's output may lag its input. Every loss that
  compares output with target (metric losses, feature matching, the discriminator's real/fake pair)
  sees output[D:] against target[:-D], so a causal model can use D samples of lookahead.
The discriminator's parameters are frozen during the generator's pass (their gradients there would
be thrown away), and the logged losses stay on the device until the log interval.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
import shutil
import sysconfig
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from layers.vq import ResidualVQ, keep_statistics_eager
from losses import MelSpectrogram
from trainer.curve import LearningCurve
from trainer.data import StepBatch, TrainingData
from trainer.distributed import CodebookSync, DistributedContext, all_reduce_mean, all_reduce_sum, cpu_group, wrap_ddp
from trainer.fast_activation import use_native_activations
from trainer.fast_conv import time_major_suits, use_fast_convolutions
from trainer.options import COMPILE_SETTINGS
from trainer.preemption import PreemptionHandler
from trainer.state import capture_rng_state, checkpoint_path, read_training_checkpoint, restore_rng_state
from utils.checkpoint import (
    atomic_torch_save,
    generator_state_dict,
    load_generator_state,
    load_state_strictly,
)
from utils.errors import CodecError
from utils.experiment_config import output_delay
from utils.runtime import native_build

logger = logging.getLogger(__name__)

# Metric losses: criterion name -> the names its outputs are logged under. Each is weighted by
# lambda_<name>_loss.
METRIC_LOSSES: dict[str, tuple[str, ...]] = {
    "mel": ("mel_loss",),
    "stft": ("spectral_convergence_loss", "log_stft_magnitude_loss"),
    "shape": ("shape_loss",),
    "complex_stft": ("complex_stft_loss",),
    "phase": ("phase_loss",),
    "time_l1": ("time_l1_loss",),
}

NUM_EVAL_SAMPLES = 2  # validation samples written to TensorBoard as audio and log-mel images

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}



def compiled_networks(setting: Any, device: torch.device) -> tuple[str, ...]:
    """The networks that the run option ``compile`` compiles: none (false), the generator, or both.

    ``true`` leaves the discriminators eager on the CPU, where compiled they trained slower than eager
    (docs/training.md). ``all`` compiles them on the CPU too, ``generator`` on no device.
    """
    if setting is None or setting is False:
        return ()
    if setting is True:
        return COMPILE_SETTINGS["generator" if device.type == "cpu" else "all"]
    if isinstance(setting, str) and setting in COMPILE_SETTINGS:
        return COMPILE_SETTINGS[setting]
    raise CodecError(f"compile: {setting!r} is not one of true, false, {', '.join(COMPILE_SETTINGS)}")


def check_cpp_compiler() -> None:
    """Raise a CodecError before training where torch.compile's CPU kernels cannot be built: Inductor
    compiles them with a C++ compiler (g++, or $CXX), which a machine with only gcc lacks; without
    this the first step would fail inside Inductor."""
    try:
        from torch._inductor import exc
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:  # an Inductor without this entry point: it says so itself
        return
    try:
        get_cpp_compiler()
    except exc.InvalidCxxCompiler:
        raise CodecError(
            "compile on the CPU needs a C++ compiler for torch.compile's kernels (g++, or set CXX): install g++ "
            "(bash utils/system_deps.sh), or train without compile"
        ) from None


def check_gpu_compiler() -> None:
    """Raise a CodecError before training where torch.compile cannot build its GPU kernels' launcher:
    Triton compiles it with a C compiler ($CC, else gcc or clang) against Python's headers, and without
    them the first step would fail inside Triton, minutes into the run."""
    if not (os.environ.get("CC") or shutil.which("gcc") or shutil.which("clang")):
        raise CodecError("compile on a GPU needs a C compiler for Triton's kernel launcher (gcc or clang, or set "
                         "CC): install one, or train without compile")
    headers = sysconfig.get_paths()["include"]
    if not os.path.exists(os.path.join(headers, "Python.h")):
        raise CodecError(f"compile on a GPU needs Python's headers for Triton's kernel launcher (no Python.h in "
                         f"{headers}): install them (Debian/Ubuntu: python3-dev), or train without compile")


DiscriminatorOutputs = list[list[torch.Tensor]]


class LossTracker:
    """Running sums of named scalars, averaged over the number of times each was recorded.

    Tensor values stay where they are (float64 sums on the device): adding one costs no host sync;
    :meth:`totals` reads them all in one transfer.
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor | float] = {}
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, name: str, value: torch.Tensor | float) -> None:
        value = value.detach().to(torch.float64) if torch.is_tensor(value) else float(value)
        self.sums[name] = self.sums.get(name, 0.0) + value
        self.counts[name] += 1

    def totals(self) -> dict[str, float]:
        """The sums as numbers (one device-to-host transfer for all of them)."""
        tensors = {name: value for name, value in self.sums.items() if torch.is_tensor(value)}
        read = dict(zip(tensors, torch.stack(list(tensors.values())).tolist())) if tensors else {}
        return {name: read.get(name, value) for name, value in self.sums.items()}

    def means(self) -> dict[str, float]:
        return {name: total / self.counts[name] for name, total in self.totals().items()}

    def reset(self) -> None:
        self.sums.clear()
        self.counts.clear()


def _split_real_fake(outputs: DiscriminatorOutputs) -> tuple[DiscriminatorOutputs, DiscriminatorOutputs]:
    """Outputs of one pass on cat([real, fake]) -> (outputs on real, outputs on fake)."""
    halves = [[layer.chunk(2) for layer in layers] for layers in outputs]
    real = [[pair[0] for pair in layers] for layers in halves]
    fake = [[pair[1] for pair in layers] for layers in halves]
    return real, fake


def _to_float(outputs: Any) -> Any:
    """Tensors (nested in lists/tuples) as float32: losses are computed in full precision."""
    if torch.is_tensor(outputs):
        return outputs.float()
    return [_to_float(item) for item in outputs]


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """The parameters of ``module`` that require grad stop requiring it inside the block, so that a
    forward pass through it builds no graph for its weights (the input's gradient still flows)."""
    trainable = [parameter for parameter in module.parameters() if parameter.requires_grad]
    for parameter in trainable:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in trainable:
            parameter.requires_grad_(True)


def _no_sync(module: nn.Module, skip: bool) -> contextlib.AbstractContextManager:
    """DDP's ``no_sync`` when ``skip`` (a micro-batch before the last one of the step)."""
    return module.no_sync() if skip and isinstance(module, DistributedDataParallel) else contextlib.nullcontext()


# Keys of an optimizer's settings that torch releases add or drop; the others tell the optimizer apart.
_VERSION_KEYS = {"params", "initial_lr", "foreach", "maximize", "capturable", "differentiable", "fused",
                 "decoupled_weight_decay"}


def _check_same_optimizer(path: str | Path, name: str, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Refuse to resume ``name``'s optimizer from a checkpoint of another kind of optimizer (its state
    would load, and the first step fail on a setting it lacks): by the type the checkpoint names, or,
    in one written before it named them, by its settings."""
    ours = type(optimizer).__name__
    theirs = (state.get("optimizer_types") or {}).get(name)
    if theirs is None:
        groups = state["optimizer"][name].get("param_groups") or [{}]
        settings = set(groups[0]) - _VERSION_KEYS
        if settings == set(optimizer.param_groups[0]) - _VERSION_KEYS:
            return
        theirs = f"an optimizer with {', '.join(sorted(settings))}"
    if theirs != ours:
        raise CodecError(f"{path} was trained with {theirs} as {name}_optimizer_type, the config names {ours}: "
                         "resume with the config it was trained with, or start from its parameters (--initial)")


def _scheduler_arguments(scheduler: Any) -> set[str]:
    """The config's settings of ``scheduler``: its constructor's arguments, which its state stores by name."""
    return set(inspect.signature(type(scheduler)).parameters) - {"optimizer", "last_epoch", "verbose"}


def _check_same_scheduler(path: str | Path, name: str, scheduler: Any, state: dict) -> None:
    """Refuse to resume ``name``'s scheduler from a checkpoint of another kind of scheduler: its state
    would load over the config's (``load_state_dict`` takes any keys), and the schedule silently follow
    neither. By the type the checkpoint names, or, in one written before it named them, by the
    settings its state stores."""
    ours = type(scheduler).__name__
    theirs = (state.get("scheduler_types") or {}).get(name)
    if theirs is None:
        stored = state["scheduler"][name]
        if _scheduler_arguments(scheduler) & set(scheduler.state_dict()) <= set(stored):
            return
        kept = {"base_lrs", "last_epoch", "verbose"}  # every scheduler's, not settings of a config
        settings = sorted(key for key in stored if not key.startswith("_") and key not in kept)
        theirs = f"a scheduler with {', '.join(settings)}"
    if theirs != ours:
        raise CodecError(f"{path} was trained with {theirs} as {name}_scheduler_type, the config names {ours}: "
                         f"put {name}_scheduler_type and its params back in the config to resume, or train anew "
                         f"under another --tag (--initial {path} starts from its parameters)")


def _as_configured(value: Any) -> Any:
    """A stored optimizer or scheduler setting as a config writes it: sequences as lists, a milestone
    Counter as its sorted milestones, a tensor as its number(s)."""
    if isinstance(value, Counter):
        return sorted(value.elements())
    if isinstance(value, list | tuple):
        return [_as_configured(item) for item in value]
    return value.tolist() if torch.is_tensor(value) else value


def _changed_setting(ours: Mapping[str, Any], theirs: Mapping[str, Any], keys: set[str]) -> tuple | None:
    """(key, checkpoint's value, config's value) of the first of ``keys`` whose values differ, or None."""
    for key in sorted(keys & set(ours) & set(theirs)):
        mine, saved = _as_configured(ours[key]), _as_configured(theirs[key])
        if mine != saved:
            return key, saved, mine
    return None


def _check_same_settings(path: str | Path, name: str, optimizer: torch.optim.Optimizer, scheduler: Any,
                         state: dict) -> None:
    """Refuse to resume where the config changed a setting of ``name``'s optimizer or scheduler: their
    states would load the checkpoint's values over the config's, silently, while config.yml records the
    config's. Settings torch adds or drops between releases are not compared."""
    part, changed = "optimizer", None
    for ours, theirs in zip(optimizer.param_groups, state["optimizer"][name].get("param_groups") or []):
        # A group's lr is where its schedule has got to; the config's is where it started (initial_lr).
        ours = {**ours, "lr": ours.get("initial_lr", ours["lr"])}
        theirs = {**theirs, "lr": theirs.get("initial_lr", theirs.get("lr"))}
        changed = changed or _changed_setting(ours, theirs, set(optimizer.defaults) - _VERSION_KEYS)
    if changed is None:
        part = "scheduler"
        changed = _changed_setting(scheduler.state_dict(), state["scheduler"][name], _scheduler_arguments(scheduler))
    if changed is None:
        return
    key, saved, mine = changed
    raise CodecError(f"{path} was trained with {name}_{part}_params {key}: {saved}, the config gives {mine}: put "
                     f"{key}: {saved} back in the config to resume, or train anew under another --tag (--initial "
                     f"{path} starts from its parameters)")


class GANTrainer:
    """Generator/discriminator training loop; flavours override the hooks marked below.

    Args:
        config: the recipe config (loss switches and weights, schedule, intervals).
        generator: the generator being trained (bare module).
        discriminator: its discriminator (bare module).
        criteria: losses by name (``mel``, ``stft``, ``shape``, ``generator_adv``,
            ``discriminator_adv``, ``feat_match``), those the config switches on.
        optimizers: ``{"generator": ..., "discriminator": ...}``.
        schedulers: the same keys.
        data: the training/validation data stream.
        context: this process's place in the job.
        expdir: experiment folder (checkpoints, TensorBoard).
        writer: TensorBoard writer (rank 0), else None.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        generator: nn.Module,
        discriminator: nn.Module,
        criteria: Mapping[str, nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer],
        schedulers: Mapping[str, Any],
        data: TrainingData,
        context: DistributedContext,
        expdir: str | Path,
        writer: Any | None = None,
    ) -> None:
        self.config = config
        self.generator = generator
        self.discriminator = discriminator
        self.criteria = dict(criteria)
        self.optimizers = dict(optimizers)
        self.schedulers = dict(schedulers)
        self.data = data
        self.context = context
        self.device = context.device
        self.expdir = Path(expdir)
        self.writer = writer
        self.steps = 0
        self.train_losses = LossTracker()
        self.eval_losses = LossTracker()
        self.last_saved_steps: int | None = None
        self.logged = False  # whether this run has written a log line of losses (kept should it fail)
        self._finite_at: int | None = None  # the step whose weights were last found finite
        precision = str(config.get("precision") or "fp32")
        if precision not in PRECISIONS:
            raise CodecError(f"precision '{precision}' is not one of {', '.join(PRECISIONS)}")
        self.amp_dtype = PRECISIONS[precision]
        self.output_delay = output_delay(config)
        self.scalers = {}
        self.updates = dict.fromkeys(self.optimizers, 0)  # optimizer steps taken, not skipped by a scaler
        if precision == "fp16":
            self.scalers = {name: torch.amp.GradScaler(self.device.type) for name in self.optimizers}
            for name, optimizer in self.optimizers.items():
                optimizer.register_step_post_hook(self._counter(name))
        self.fast_conv_form = ""  # what fast_conv runs: "time_major", "blocked", or nothing
        if config.get("fast_conv"):
            self._use_fast_convolutions()
        self.compiled = compiled_networks(config.get("compile"), self.device)
        if self.compiled and self.device.type == "cpu":
            check_cpp_compiler()
        elif self.compiled:
            check_gpu_compiler()
        if self.compiled:
            keep_statistics_eager()
        for name in self.compiled:
            getattr(self, name).compile()
        self.configure_parameters()
        self.generator_ddp = wrap_ddp(self.generator, context)
        self.discriminator_ddp = wrap_ddp(self.discriminator, context, bool(config.get("ddp_bf16_compress")))
        self.codebook_sync = CodebookSync(self.generator, context, accumulate=data.plan.accumulation > 1)
        self._eval_mel = self._build_eval_mel()
        self.train_seconds = {"cpu": 0.0, "wall": 0.0}  # in training steps (evaluation and saving excluded)
        budget = config.get("cpu_budget_minutes")
        self.cpu_budget_seconds = float(budget) * 60 if budget else math.inf
        self.curve = self._build_curve()
        if precision != "fp32" or self.compiled:
            compiled = f", compiled: {' and '.join(self.compiled)}" if self.compiled else ""
            eager = " (the discriminator stays eager on the CPU: 'compile: all' compiles it too)" if (
                config.get("compile") is True and "discriminator" not in self.compiled) else ""
            logger.info("Precision %s%s%s", precision, compiled, eager)

    def _use_fast_convolutions(self) -> None:
        if self.device.type != "cpu":
            logger.warning("fast_conv is for training on the CPU: the %s keeps its own convolutions", self.device)
            return
        blocked = "%d dilated convolutions with phase gradients, %d pointwise ones as batched products"
        if time_major_suits():
            self.fast_conv_form = "time_major"
            generator = use_fast_convolutions(self.generator, time_major=True)["time_major"]
            # oneDNN's channels-last bf16 kernels (AMX) beat its blocked ones on the discriminators'
            # grouped and (k, 1) layers; in fp32 they do not.
            if self.amp_dtype == torch.bfloat16:
                discriminator = use_fast_convolutions(self.discriminator, time_major=True)["time_major"]
                logger.info("fast_conv: %d generator and %d discriminator convolutions time-major (AVX-512, bf16)",
                            generator, discriminator)  # fmt: skip
            else:
                discriminator = use_fast_convolutions(self.discriminator)
                logger.info("fast_conv: %d generator convolutions time-major (AVX-512); discriminator: " + blocked,
                            generator, discriminator["phase_gradient"], discriminator["pointwise"])  # fmt: skip
        else:
            self.fast_conv_form = "blocked"
            counts = [use_fast_convolutions(model) for model in (self.generator, self.discriminator)]
            dilated, pointwise = (sum(c[kind] for c in counts) for kind in ("phase_gradient", "pointwise"))
            logger.info("fast_conv: " + blocked, dilated, pointwise)
        routed = use_native_activations(self.generator)
        if any(routed.values()):
            logger.info("fast_conv: the activations of %d residual units and %d residual blocks (with their "
                        "convolutions' padding), %d other ELUs and %d other LeakyReLUs on the native engine",
                        *routed.values())  # fmt: skip
        elif not native_build.available():
            logger.info("fast_conv: activations through ATen (%s)", native_build.unavailable_reason())

    # ---- flavour hooks -----------------------------------------------------------------------
    def configure_parameters(self) -> None:
        """Freeze what the flavour never trains (before the DDP wrapping)."""

    def unpack(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch -> (generator input, target audio (B, C, T)), on the device."""
        audio = batch.to(self.device, non_blocking=True)
        return audio, audio

    def generator_active(self) -> bool:
        """Whether the generator trains at the current step."""
        return True

    def discriminator_active(self) -> bool:
        """Whether the discriminator (and the adversarial losses) are on at the current step."""
        return False

    def prepare_step(self) -> None:
        """Set train/eval modes (and freeze parts) before a training step."""
        self.generator.train()
        self.discriminator.train()

    def generate(self, inputs: torch.Tensor, losses: LossTracker, prefix: str, training: bool) -> tuple:
        """Generator pass -> (audio (B, C, T), extra loss terms (scalar) or 0.0).

        ``training``: the pass whose loss is back-propagated (through DDP when distributed).
        """
        raise NotImplementedError

    # ---- losses -----------------------------------------------------------------------------
    def align(self, predicted: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(output, target) as the losses compare them: output[D:] against target[:-D] (``output_delay``)."""
        delay = self.output_delay
        if not delay:
            return predicted, target
        return predicted[..., delay:], target[..., : target.shape[-1] - delay]

    def metric_loss(self, predicted: torch.Tensor, target: torch.Tensor, losses: LossTracker, prefix: str):
        """Weighted sum of the metric losses the config switches on."""
        total = 0.0
        for name, labels in METRIC_LOSSES.items():
            if name not in self.criteria:
                continue
            values = self.criteria[name](predicted, target)
            values = values if isinstance(values, tuple) else (values,)
            for label, value in zip(labels, values):
                value = value * self.config[f"lambda_{name}_loss"]
                losses.add(f"{prefix}/{label}", value)
                total = total + value
        return total

    def adversarial_loss(
        self, outputs_fake: DiscriminatorOutputs, outputs_real: DiscriminatorOutputs | None, losses, prefix: str
    ) -> torch.Tensor:
        """lambda_adv * (generator adversarial loss + lambda_feat_match * feature matching)."""
        loss = self.criteria["generator_adv"](outputs_fake)
        if outputs_real is not None and "feat_match" in self.criteria:
            feat_match = self.criteria["feat_match"](outputs_fake, outputs_real)
            losses.add(f"{prefix}/feature_matching_loss", feat_match)
            loss = loss + self.config["lambda_feat_match"] * feat_match
        loss = loss * self.config["lambda_adv"]
        losses.add(f"{prefix}/adversarial_loss", loss)
        return loss

    def discriminator_loss(
        self, outputs_fake: DiscriminatorOutputs, outputs_real: DiscriminatorOutputs, losses, prefix: str
    ) -> torch.Tensor:
        real_loss, fake_loss = self.criteria["discriminator_adv"](outputs_fake, outputs_real)
        loss = real_loss + fake_loss
        losses.add(f"{prefix}/real_loss", real_loss)
        losses.add(f"{prefix}/fake_loss", fake_loss)
        losses.add(f"{prefix}/discriminator_loss", loss)
        return loss

    def record_vq(self, vq_loss: torch.Tensor, perplexity: torch.Tensor, losses: LossTracker, prefix: str):
        """lambda_vq_loss * sum(vq_loss (n,)); logs it and the batch perplexity (n,) of each codebook.

        The perplexity is of the codes one batch chose, at most the batch's number of vectors: it is
        logged as ``batch_perplexity_<i>`` and, for the tools that read the original's name, ``ppl_<i>``.
        """
        for index, value in enumerate(perplexity.unbind(0)):
            losses.add(f"{prefix}/batch_perplexity_{index}", value)
            losses.add(f"{prefix}/ppl_{index}", value)
        loss = vq_loss.sum() * self.config["lambda_vq_loss"]
        losses.add(f"{prefix}/vqloss", loss)
        return loss

    # ---- one step ---------------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to the run's precision around the networks' forward passes (none in fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def full_precision(self, outputs: Any) -> Any:
        """Network outputs as the losses take them: float32."""
        return outputs if self.amp_dtype is None else _to_float(outputs)

    def _backward(self, name: str, loss: torch.Tensor) -> None:
        scaler = self.scalers.get(name)
        (scaler.scale(loss) if scaler is not None else loss).backward()

    def _step(self, name: str, module: nn.Module) -> None:
        optimizer, scaler = self.optimizers[name], self.scalers.get(name)
        max_norm = self.config.get(f"{name}_grad_norm", -1)
        if max_norm > 0:
            if scaler is not None:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm)
        if scaler is not None:
            updates = self.updates[name]
            scaler.step(optimizer)
            scaler.update()
            if self.updates[name] == updates:  # overflowing gradients: no update, so the schedule waits too
                return
        else:
            optimizer.step()
        self.schedulers[name].step()

    def _counter(self, name: str):
        """An optimizer step hook counting ``name``'s updates: a skipped step is seen without reading
        the scale back from the device."""

        def count(optimizer, args, kwargs) -> None:
            self.updates[name] += 1

        return count

    def micro_batches(
        self, inputs: torch.Tensor, target: torch.Tensor, global_size: int
    ) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
        """This rank's share -> (inputs, target, loss weight) per micro-batch.

        The weight, size x ranks / global size, makes the sum of the weighted micro-batch gradients,
        averaged over the ranks by DDP, the mean gradient of the global batch; it is 1 when one
        micro-batch per rank holds an equal share.
        """
        micro = self.data.plan.micro_batch or inputs.shape[0]
        if micro >= inputs.shape[0]:
            parts = [(inputs, target)]
        else:
            parts = list(zip(inputs.split(micro), target.split(micro)))
        world_size = self.context.world_size
        return [(part_inputs, part_target, part_inputs.shape[0] * world_size / global_size)
                for part_inputs, part_target in parts]

    def generator_loss(
        self, inputs: torch.Tensor, target: torch.Tensor, discriminator_on: bool, losses: LossTracker, prefix: str
    ) -> torch.Tensor:
        """The generator's training loss on one micro-batch (metric, VQ and, when on, adversarial terms)."""
        with self.autocast():
            predicted, extra = self.generate(inputs, losses, prefix, training=True)
        predicted, target = self.align(self.full_precision(predicted), target)
        loss = extra + self.metric_loss(predicted, target, losses, prefix)
        if discriminator_on:
            # No gradient for the discriminator's weights here: the discriminator update clears them.
            with frozen(self.discriminator), self.autocast():
                outputs_fake = self.discriminator(predicted)
            outputs_real = None
            if "feat_match" in self.criteria:
                with torch.no_grad(), self.autocast():
                    outputs_real = self.discriminator(target)
            outputs_fake, outputs_real = self.full_precision(outputs_fake), (
                None if outputs_real is None else self.full_precision(outputs_real))
            loss = loss + self.adversarial_loss(outputs_fake, outputs_real, losses, prefix)
        losses.add(f"{prefix}/generator_loss", loss)
        return loss

    def train_step(self, batch: StepBatch | Any) -> None:
        """One generator update and (when on) one discriminator update, on one step's batch.

        ``batch``: a :class:`~trainer.data.StepBatch` (this rank's share and the global batch size), or
        a plain batch, taken as the whole global batch.
        """
        self.prepare_step()
        data, global_size = batch if isinstance(batch, StepBatch) else (batch, None)
        inputs, target = self.unpack(data)
        parts = self.micro_batches(inputs, target, global_size or inputs.shape[0])
        last = len(parts) - 1
        losses, prefix = self.train_losses, "train"
        discriminator_on = self.discriminator_active()
        if self.generator_active():
            self.optimizers["generator"].zero_grad()
            for index, (part_inputs, part_target, weight) in enumerate(parts):
                with _no_sync(self.generator_ddp, index < last):
                    loss = self.generator_loss(part_inputs, part_target, discriminator_on, losses, prefix)
                    self._backward("generator", loss if weight == 1 else loss * weight)
            self.codebook_sync.flush()
            self._step("generator", self.generator)
        if discriminator_on:
            self.optimizers["discriminator"].zero_grad()
            for index, (part_inputs, part_target, weight) in enumerate(parts):
                # Re-computing the output after the generator update gives better quality (original).
                with torch.no_grad(), self.autocast():
                    predicted, _ = self.generate(part_inputs, LossTracker(), prefix, training=False)
                predicted, part_target = self.align(predicted, part_target)
                with _no_sync(self.discriminator_ddp, index < last):
                    # Real and generated audio in one pass: DDP allows one forward per backward.
                    with self.autocast():
                        outputs = self.discriminator_ddp(torch.cat([part_target, predicted.detach()]))
                    outputs_real, outputs_fake = _split_real_fake(self.full_precision(outputs))
                    loss = self.discriminator_loss(outputs_fake, outputs_real, losses, prefix)
                    self._backward("discriminator", loss if weight == 1 else loss * weight)
            self.codebook_sync.flush()
            self._step("discriminator", self.discriminator)

    @torch.no_grad()
    def eval_step(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Validation losses of one batch; returns (target, generated audio)."""
        inputs, target = self.unpack(batch)
        losses, prefix = self.eval_losses, "eval"
        with self.autocast():
            predicted, extra = self.generate(inputs, losses, prefix, training=False)
        predicted, target = self.align(self.full_precision(predicted), target)
        loss = extra + self.metric_loss(predicted, target, losses, prefix)
        if self.discriminator_active():
            with self.autocast():
                outputs_fake, outputs_real = self.discriminator(predicted), self.discriminator(target)
            outputs_fake, outputs_real = self.full_precision(outputs_fake), self.full_precision(outputs_real)
            loss = loss + self.adversarial_loss(outputs_fake, outputs_real, losses, prefix)
            self.discriminator_loss(outputs_fake, outputs_real, losses, prefix)
        losses.add(f"{prefix}/generator_loss", loss)
        return target, predicted

    # ---- the loop ---------------------------------------------------------------------------
    def phases(self) -> list[tuple[int, int]]:
        """(last step, crop length) of each phase: metric losses, then the adversarial phase if configured."""
        phases = [(int(self.config["train_max_steps"]), int(self.config["batch_length"]))]
        if self.config.get("adv_train_max_steps"):
            length = self.config.get("adv_batch_length") or self.config["batch_length"]
            phases.append((int(self.config["adv_train_max_steps"]), int(length)))
        return phases

    def run(self) -> None:
        """Train to the last step of the last phase, then save a checkpoint.

        A stop signal (see :mod:`trainer.preemption`) saves a checkpoint at the step reached and returns.
        """
        preemption = PreemptionHandler().install()
        try:
            for max_steps, batch_length in self.phases():
                if self.steps >= max_steps:
                    continue
                if self.budget_spent():
                    break
                self.data.set_batch_length(batch_length)
                if self._train_until(max_steps, preemption):
                    preemption.requeue()
                    return
        finally:
            preemption.uninstall()
        if self.budget_spent():
            logger.info("The CPU budget (%.3g min of training) is spent.", self.cpu_budget_seconds / 60)
        self.save_checkpoint()
        self.score_curve()
        logger.info("Finished training at step %d (%.1f CPU min, %.1f wall min in training steps).", self.steps,
                    self.train_seconds["cpu"] / 60, self.train_seconds["wall"] / 60)

    def _train_until(self, max_steps: int, preemption: PreemptionHandler) -> bool:
        """Train until ``max_steps``; True when stopped early by a signal (a checkpoint is then saved)."""
        progress = tqdm(initial=self.steps, total=max_steps, desc="[train]", disable=not self.context.is_main)
        try:
            cpu, wall = time.process_time(), time.monotonic()
            for batch in self.data.batches():
                self.train_step(batch)
                self.steps += 1
                self.train_seconds["cpu"] += time.process_time() - cpu
                self.train_seconds["wall"] += time.monotonic() - wall
                progress.update(1)
                self._check_intervals()
                if preemption.should_stop():
                    self.save_checkpoint()
                    return True
                if self.steps >= max_steps:
                    return False
                if self.budget_spent():
                    return False
                cpu, wall = time.process_time(), time.monotonic()
        finally:
            progress.close()
        return False

    def budget_spent(self) -> bool:
        """Whether the run's ``cpu_budget_minutes`` of training CPU time are spent (rank 0 decides)."""
        if math.isinf(self.cpu_budget_seconds):
            return False
        spent = self.train_seconds["cpu"] >= self.cpu_budget_seconds
        if self.context.world_size == 1:
            return spent  # nothing to agree on
        decision = torch.tensor([float(spent)])  # on the CPU group: reading it back does not wait for the GPU
        torch.distributed.broadcast(decision, 0, group=cpu_group())
        return bool(decision.item())

    def _check_intervals(self) -> None:
        if self.steps % self.config["log_interval_steps"] == 0:
            self._write_train_log()
        if self.steps % self.config["eval_interval_steps"] == 0:
            self.evaluate()
        if self.steps % self.config["save_interval_steps"] == 0:
            self.save_checkpoint()
        if self.curve is not None and self.curve.due(self.steps):
            self.score_curve()

    # ---- learning curve (trainer.curve) -------------------------------------------------------
    def _build_curve(self) -> LearningCurve | None:
        params = self.config.get("learning_curve")
        if not params or not self.context.is_main:
            return None
        generator_params = self.config.get("generator_params") or {}
        hop = self.config.get("hop_size") or math.prod(generator_params.get("enc_strides") or [1])
        return LearningCurve(params, (self.config.get("data") or {}).get("path", "."),
                             int(self.config["sampling_rate"]), int(hop), self.expdir, self.output_delay)

    @torch.no_grad()
    def reconstruct(self, audio: torch.Tensor) -> torch.Tensor:
        """The generator's output for audio (B, 1, T), in eval mode (what the learning curve scores)."""
        inputs, _ = self.unpack(audio)
        with self.autocast():
            predicted, _ = self.generate(inputs, LossTracker(), "curve", training=False)
        return self.full_precision(predicted)

    def score_curve(self) -> None:
        """Add a learning-curve point at this step (rank 0, when the config asks for a curve)."""
        if self.curve is None or self.curve.scored(self.steps):
            return
        self.generator.eval()
        self.discriminator.eval()
        point = self.curve.score(self.reconstruct, self.generator, self.codebook_usage(), self.steps,
                                 self.train_seconds["cpu"], self.train_seconds["wall"])
        self.curve.write(self.expdir.name)
        self._write_scalars({f"curve/{name}": value for name, value in point.items()
                             if name not in ("steps",) and math.isfinite(value)})
        self.generator.train()
        self.discriminator.train()

    def codebook_usage(self) -> dict[str, float]:
        """Codes in use and entropy in bits of each of the generator's codebooks, from their EMA cluster
        sizes (equal on every rank), by log name; empty for a generator without codebooks."""
        codebooks = getattr(getattr(self.generator, "quantizer", None), "codebook", None)
        if not isinstance(codebooks, ResidualVQ):
            return {}
        values = {}
        for index, (in_use, entropy) in enumerate(codebooks.usage()):
            values[f"train/codes_in_use_{index}"] = in_use
            values[f"train/code_entropy_bits_{index}"] = entropy
        return values

    def _write_train_log(self) -> None:
        means = all_reduce_mean(self.train_losses.means(), self.context)
        means.update(self.codebook_usage())
        self.train_losses.reset()
        for name, optimizer in self.optimizers.items():
            means[f"learning_rate/{name}"] = optimizer.param_groups[0]["lr"]
        self._write_scalars(means)
        self._check_finite(means)

    def _check_finite(self, means: Mapping[str, float] | None = None) -> None:
        """Stop a run whose weights are no longer finite (non-finite samples in the data, a learning rate
        too high), before it writes such a checkpoint: every later step would be as lost. The weights are
        the same on every rank, so every rank stops here alike."""
        if self._finite_at == self.steps:  # a log and a checkpoint at the same step
            return
        broken = [role for role, network in (("generator", self.generator), ("discriminator", self.discriminator))
                  if not torch.stack([torch.isfinite(p).all() for p in network.parameters()]).all().item()]
        if not broken:
            self._finite_at = self.steps
            return
        losses = [name for name, value in (means or {}).items() if not math.isfinite(value)][:3]
        last = (f"the last checkpoint is {checkpoint_path(self.expdir, self.last_saved_steps)}"
                if self.last_saved_steps else "no checkpoint was written")
        raise CodecError(
            f"training diverged at step {self.steps}: the {' and '.join(broken)} weights are no longer finite"
            f"{' (' + ', '.join(losses) + ' too)' if losses else ''}; check the data for NaN or infinite samples "
            f"or lower the learning rate: {last}"
        )

    def _write_scalars(self, values: Mapping[str, float]) -> None:
        if not self.context.is_main:
            return
        self.logged = True
        for name, value in sorted(values.items()):
            # Four decimals would show a learning rate of 1e-5 as 0.0000.
            shown = f"{value:.3g}" if name.startswith("learning_rate/") else f"{value:.4f}"
            logger.info("(Steps: %d) %s = %s.", self.steps, name, shown)
            if self.writer is not None:
                self.writer.add_scalar(name, value, self.steps)
        if self.writer is not None:
            self.writer.flush()

    def evaluate(self) -> None:
        """Average the validation losses (over all ranks) and write a few samples."""
        self.generator.eval()
        self.discriminator.eval()
        self.eval_losses.reset()
        batches = 0
        for batch in tqdm(self.data.dev_batches(), total=len(self.data.dev_loader), desc="[eval]",
                          disable=not self.context.is_main, leave=False):
            target, predicted = self.eval_step(batch)
            if batches == 0:
                self._write_samples(target, predicted)
            batches += 1
        totals = self.eval_losses.totals()
        names = sorted(totals)
        sums = torch.tensor([totals[name] for name in names] + [batches], dtype=torch.float64, device=self.device)
        all_reduce_sum(sums, self.context)
        means = {name: total / max(sums[-1].item(), 1) for name, total in zip(names, sums[:-1].tolist())}
        self._write_scalars(means)
        self.eval_losses.reset()
        self.generator.train()
        self.discriminator.train()

    def _build_eval_mel(self) -> MelSpectrogram | None:
        params = self.config.get("mel_loss_params")
        if not params:
            return None
        return MelSpectrogram(
            fs=params.get("fs", self.config["sampling_rate"]), fft_size=params["fft_sizes"][0],
            hop_size=params["hop_sizes"][0], win_length=params["win_lengths"][0], num_mels=params["num_mels"],
            fmin=params.get("fmin"), fmax=params.get("fmax"), log_base=params.get("log_base"),
        ).to(self.device)

    def _write_samples(self, target: torch.Tensor, predicted: torch.Tensor) -> None:
        """Audio and a log-mel image (target above generated) of the first validation samples."""
        if self.writer is None:
            return
        rate = int(self.config["sampling_rate"])
        for index in range(min(NUM_EVAL_SAMPLES, target.shape[0])):
            tag = f"eval_samples/{index}"
            self.writer.add_audio(f"{tag}/target", target[index, 0].clamp(-1, 1).cpu(), self.steps, rate)
            self.writer.add_audio(f"{tag}/generated", predicted[index, 0].clamp(-1, 1).cpu(), self.steps, rate)
            if self._eval_mel is not None:
                mels = self._eval_mel(torch.stack([target[index, :1], predicted[index, :1]]))
                image = torch.cat([mels[0], mels[1]], dim=0).flip(0)
                image = (image - image.min()) / (image.max() - image.min()).clamp(min=1e-8)
                self.writer.add_image(f"{tag}/log_mel_target_over_generated", image.unsqueeze(0).cpu(), self.steps)
        self.writer.flush()

    # ---- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The checkpoint, in the original layout (plus ``rng``, ``data``, ``train_seconds``,
        ``optimizer_types``, ``scheduler_types`` and, in fp16, ``scaler``; :meth:`save_checkpoint` adds
        ``rng_per_rank``)."""
        state = {
            "model": {
                "generator": generator_state_dict(self.generator),
                "discriminator": self.discriminator.state_dict(),
            },
            "optimizer": {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()},
            "scheduler": {name: scheduler.state_dict() for name, scheduler in self.schedulers.items()},
            "steps": self.steps,
            "epochs": self.data.epoch,
            "rng": capture_rng_state(),
            "data": self.data.state_dict(),
            "train_seconds": dict(self.train_seconds),
            "optimizer_types": {name: type(optimizer).__name__ for name, optimizer in self.optimizers.items()},
            "scheduler_types": {name: type(scheduler).__name__ for name, scheduler in self.schedulers.items()},
        }
        if self.scalers:
            state["scaler"] = {name: scaler.state_dict() for name, scaler in self.scalers.items()}
        return state

    def save_checkpoint(self) -> None:
        """Write ``checkpoint-<steps>steps.pkl`` (rank 0, atomically; once per step)."""
        if self.last_saved_steps == self.steps:
            return
        self._check_finite()
        rng_per_rank = self._gather_rng_states()
        if not self.context.is_main:
            self.last_saved_steps = self.steps  # (rank 0's file)
            return
        path = checkpoint_path(self.expdir, self.steps)
        state = self.state_dict()
        if rng_per_rank is not None:
            state["rng_per_rank"] = rng_per_rank
        atomic_torch_save(state, str(path))
        self.last_saved_steps = self.steps
        logger.info("Saved checkpoint %s", path)

    def _gather_rng_states(self) -> list[dict[str, Any]] | None:
        """Every rank's random state, by rank, on rank 0 (every rank calls this; None on the others and
        in a one-process run). Each rank draws the random crops of its own share, so the ranks' states
        part as soon as their shares differ in size or in the files shorter than a crop."""
        if not self.context.is_distributed:
            return None
        states = [None] * self.context.world_size if self.context.is_main else None
        torch.distributed.gather_object(capture_rng_state(), states, dst=0, group=cpu_group())
        return states

    def _restore_rng_state(self, path: str | Path, state: Mapping[str, Any]) -> None:
        """This rank's random state from a checkpoint: its own where the checkpoint holds one per rank
        of a run of as many processes, else rank 0's (``rng``), saying so where the crops then differ
        from those of an uninterrupted run."""
        per_rank, world_size = state.get("rng_per_rank"), self.context.world_size
        if isinstance(per_rank, list) and len(per_rank) == world_size:
            restore_rng_state(per_rank[self.context.rank])
            return
        if "rng" not in state:
            return
        if isinstance(per_rank, list):
            logger.info("%s holds the random states of %d processes and this run has %d: every process resumes "
                        "with rank 0's, so the random crops are not those of an uninterrupted run",
                        path, len(per_rank), world_size)  # fmt: skip
        elif world_size > 1:
            logger.info("%s holds one random state: each of the %d processes resumes with it, so the random crops "
                        "are not those of an uninterrupted run", path, world_size)  # fmt: skip
        restore_rng_state(state["rng"])

    def load_checkpoint(self, path: str | Path, params_only: bool = False, state: dict | None = None) -> None:
        """Load a checkpoint: everything to resume, or (``params_only``) only the models' parameters
        (``state``: what the checkpoint holds, where the caller has read it already)."""
        if state is None:
            state = read_training_checkpoint(path, "give another checkpoint" if params_only else (
                "resume from another checkpoint, or with --resume auto from the newest that can be read"))
        fix = "give a checkpoint of this recipe"
        load_generator_state(self.generator, state["model"]["generator"], f"{path} does not fit the recipe's generator",
                             fix)
        if "discriminator" in state["model"]:
            load_state_strictly(self.discriminator, state["model"]["discriminator"],
                                f"{path} does not fit the recipe's discriminator", fix)
        elif not params_only:
            raise CodecError(f"{path} has no discriminator: it cannot be resumed from")
        if params_only:
            logger.info("Initialized the parameters from %s", path)
            return
        for name, optimizer in self.optimizers.items():
            _check_same_optimizer(path, name, optimizer, state)
            _check_same_scheduler(path, name, self.schedulers[name], state)
            _check_same_settings(path, name, optimizer, self.schedulers[name], state)
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizer"][name])
        for name, scheduler in self.schedulers.items():
            scheduler.load_state_dict(state["scheduler"][name])
        for name, scaler in self.scalers.items():
            if name in state.get("scaler", {}):
                scaler.load_state_dict(state["scaler"][name])
        self.steps = int(state["steps"])
        self.data.load_state_dict(state.get("data", {"epoch": state.get("epochs", 0), "position": 0}))
        self.train_seconds.update(state.get("train_seconds", {}))
        self._restore_rng_state(path, state)
        self.last_saved_steps = self.steps
        logger.info("Resumed from %s at step %d (epoch %d)", path, self.steps, self.data.epoch)
