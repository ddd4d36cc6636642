"""Everything a training run is built from a recipe config: models, losses, optimizers, schedulers,
data, the trainer of the config's ``train_mode``; and :func:`run_training`, what ``codecTrain.py`` calls."""

from __future__ import annotations

import inspect
import logging
import os
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from losses import LOSSES
from models.vocoder.HiFiGAN import StatisticsFileError
from models.vocoder.modules.discriminator import DISCRIMINATORS
from trainer.autoencoder import AutoencoderTrainer
from trainer.base import METRIC_LOSSES, GANTrainer
from trainer.data import BatchPlan, TrainingData, plan_batches
from trainer.denoise import DenoiseTrainer
from trainer.distributed import (
    DistributedContext,
    configure_tf32,
    init_distributed,
    raise_first_error,
    shutdown_distributed,
)
from trainer.exp_lock import hold_experiment
from trainer.memory import check_models_fit, out_of_memory
from trainer.options import TrainOptions, read_config
from trainer.state import read_newest_checkpoint, resolve_resume
from trainer.vocoder import VocoderTrainer
from utils.audio import librosa_filters
from utils.checkpoint import build_generator
from utils.errors import CodecError, built_from_config
from utils.experiment_config import output_delay
from utils.files import make_output_folder, write_text_atomic
from utils.runtime.cpu_process import current_malloc

logger = logging.getLogger(__name__)

TRAINERS: dict[str, type[GANTrainer]] = {
    "autoencoder": AutoencoderTrainer,
    "vocoder": VocoderTrainer,
    "denoise": DenoiseTrainer,
}


RUN_OPTION_DEFAULTS: dict[str, Any] = {
    "precision": "fp32", "compile": False, "fast_conv": False, "tf32": True, "ddp_bf16_compress": False,
}


TRAINING_KEYS = ("model_type", "sampling_rate", "generator_params", "discriminator_params", "batch_size",
                 "batch_length", "train_max_steps")
WHOLE_NUMBER_KEYS = ("sampling_rate", "batch_size", "batch_length", "adv_batch_length", "train_max_steps",
                     "adv_train_max_steps", "save_interval_steps", "eval_interval_steps", "log_interval_steps",
                     "num_workers", "micro_batch", "batch_size_per_rank")
# Counts that are divided by or stepped with: 0 has no meaning there
POSITIVE_KEYS = ("sampling_rate", "batch_size", "batch_length", "save_interval_steps", "eval_interval_steps",
                 "log_interval_steps", "micro_batch", "batch_size_per_rank")
# and every use_* key: YAML's "false" in quotes is a true string
SWITCH_KEYS = ("pad_short", "pin_memory", "fast_conv", "tf32", "ddp_bf16_compress")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)  # YAML's true is an int to Python


def read_recipe(path: str | Path) -> dict[str, Any]:
    """A training recipe: a config (:func:`read_config`) with the settings every training reads.

    Raises:
        CodecError: missing, not YAML, or another kind of config (e.g. a statistic one).
    """
    config = read_config(path)
    missing = [key for key in TRAINING_KEYS if key not in config]
    if missing:
        raise CodecError(f"{path} is not a training recipe (no {', '.join(missing)}): give one under "
                         "config/autoencoder, config/vocoder or config/denoise")
    for key in [key for key in config if key.startswith("lambda_") or key.endswith("_grad_norm")]:
        if config[key] is not None and not _is_number(config[key]):
            raise CodecError(f"{path}: {key} {config[key]!r} is not a number: fix the config")
    for key in WHOLE_NUMBER_KEYS:
        value = config.get(key)
        if value is not None and not (_is_number(value) and value == int(value)):
            raise CodecError(f"{path}: {key} {value!r} is not a whole number: fix the config")
        if value is not None and key in POSITIVE_KEYS and value < 1:
            raise CodecError(f"{path}: {key} {value!r}: give 1 or more")
    budget = config.get("cpu_budget_minutes")
    if budget is not None and not (_is_number(budget) and budget > 0):
        raise CodecError(f"{path}: cpu_budget_minutes {budget!r}: give minutes above 0, or leave it out")
    for key in [key for key in config if key.startswith("use_") or key in SWITCH_KEYS]:
        if config[key] is not None and not isinstance(config[key], bool):
            raise CodecError(f"{path}: {key} {config[key]!r} is not true or false (unquoted): fix the config")
    _check_loss_switches(config, path)
    for key in ("generator_params", "discriminator_params"):
        if not isinstance(config[key], dict):
            raise CodecError(f"{path}: {key} is a {type(config[key]).__name__}, not a mapping of settings: "
                             "fix the config")
    data = config.get("data")
    if not isinstance(data, dict) or "path" not in data or not isinstance(data.get("subset"), dict):
        raise CodecError(f"{path}: data needs a path and a subset mapping (train, valid, test folders or lists): "
                         "fix the config")
    return config


def _check_loss_switches(config: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Every ``use_<name>_loss`` names a loss the trainer weighs: a misspelt one would train without it."""
    known = (*METRIC_LOSSES, "feat_match")
    for key in config:
        name = key[len("use_"):-len("_loss")] if key.startswith("use_") and key.endswith("_loss") else None
        if name is not None and name not in known:
            raise CodecError(f"{path}: {key} switches on no loss the trainer knows ({', '.join(known)}): "
                             "fix the name (a new loss goes in losses.LOSSES and trainer.base.METRIC_LOSSES)")


def _by_name(module: Any, name: str, what: str) -> type:
    found = getattr(module, name, None)
    if not isinstance(found, type):
        raise CodecError(f"{what} '{name}' is not a class of {module.__name__}: fix the config")
    return found


def build_optimizer(config: Mapping[str, Any], role: str, parameters) -> torch.optim.Optimizer:
    """``torch.optim.<{role}_optimizer_type>`` over ``parameters`` with ``{role}_optimizer_params``."""
    optimizer_class = _by_name(torch.optim, config[f"{role}_optimizer_type"], f"{role}_optimizer_type")
    key = f"{role}_optimizer_params"
    return built_from_config(optimizer_class, key, config.get(key, {}), parameters)


def build_scheduler(config: Mapping[str, Any], role: str, optimizer: torch.optim.Optimizer) -> Any:
    """``torch.optim.lr_scheduler.<{role}_scheduler_type>`` (default StepLR) with ``{role}_scheduler_params``."""
    name = config.get(f"{role}_scheduler_type", "StepLR")
    scheduler_class = _by_name(torch.optim.lr_scheduler, name, f"{role}_scheduler_type")
    key = f"{role}_scheduler_params"
    return built_from_config(scheduler_class, key, config.get(key, {}), optimizer)


def build_criteria(config: Mapping[str, Any], device: torch.device) -> dict[str, nn.Module]:
    """The adversarial losses, and the metric / feature-matching losses the ``use_*_loss`` switches turn on."""
    delay = output_delay(config)
    for key in ("batch_length", "adv_batch_length"):
        if config.get(key) and delay >= int(config[key]):
            raise CodecError(f"output_delay {delay} leaves nothing of the {key} {config[key]} crops to compare: "
                             "make it shorter than the crops")
    names = ["generator_adv", "discriminator_adv"]
    names += [name for name in (*METRIC_LOSSES, "feat_match") if config.get(f"use_{name}_loss", False)]
    for name in names:
        if name in METRIC_LOSSES and f"lambda_{name}_loss" not in config:
            raise CodecError(f"use_{name}_loss is on but the config has no lambda_{name}_loss (its weight)")
        if name in METRIC_LOSSES:
            _check_crops_fit(config, name, delay)
    return {name: built_from_config(LOSSES[name], f"{name}_loss_params", config.get(f"{name}_loss_params", {}))
            .to(device) for name in names}


def _check_crops_fit(config: Mapping[str, Any], name: str, delay: int) -> None:
    """A centred STFT pads each side by half its FFT, mirroring the signal: a crop, less the output
    ``delay`` the losses take off it, must be longer."""
    params = config.get(f"{name}_loss_params", {})
    if "fft_sizes" in params or "fft_size" in params:
        sizes = params.get("fft_sizes") or ([params["fft_size"]] if "fft_size" in params else [])
    else:
        default = inspect.signature(LOSSES[name]).parameters.get("fft_sizes")
        sizes = default.default if default is not None and default.default is not inspect.Parameter.empty else ()
    for key in ("batch_length", "adv_batch_length"):
        length = config.get(key)
        if sizes and length and int(length) - delay <= max(sizes) // 2:
            shortened = f" less the output_delay of {delay}" if delay else ""
            raise CodecError(
                f"{key} {length}{shortened} is too short for the {name} loss's FFT of {max(sizes)} samples: crops "
                f"must be longer than {max(sizes) // 2 + delay}; lengthen {key} or shorten {name}_loss_params' "
                "fft_sizes"
            )


def build_discriminator(config: Mapping[str, Any]) -> nn.Module:
    """The discriminator of the config's ``model_type`` with ``discriminator_params``."""
    model_type = config["model_type"]
    if model_type not in DISCRIMINATORS:
        raise CodecError(f"no discriminator for model_type '{model_type}': use one of {', '.join(DISCRIMINATORS)}")
    return built_from_config(DISCRIMINATORS[model_type], "discriminator_params", config.get("discriminator_params", {}),
                             name=f"the {model_type} discriminator")


def build_training_generator(config: Mapping[str, Any]) -> nn.Module:
    """The generator to train; a vocoder reads its input statistics from the file the config names."""
    try:
        return build_generator(dict(config), inference=False)
    except (FileNotFoundError, StatisticsFileError) as error:
        raise CodecError(str(error)) from None


def models_on_meta(config: Mapping[str, Any]) -> dict[str, nn.Module]:
    """The config's generator and discriminator on the meta device (shapes only, no memory), by the key
    of their settings; none where they do not build."""
    try:
        with torch.device("meta"):
            return {"generator_params": build_training_generator(config),
                    "discriminator_params": build_discriminator(config)}
    except Exception:  # the real build reports the config's error in its own words
        return {}


def build_trainer(
    config: Mapping[str, Any],
    context: DistributedContext,
    expdir: str | Path,
    seed: int,
    writer: Any | None = None,
    plan: BatchPlan | None = None,
    data: TrainingData | None = None,
) -> GANTrainer:
    """The trainer of the config's ``train_mode``, with its models, losses, optimizers and data
    (``plan``: how the global batch is shared; default: the config's ``batch_size`` on this job;
    ``data``: a data stream of the caller's, used as it is, e.g. without files for a benchmark)."""
    mode = config.get("train_mode", "autoencoder")
    if mode not in TRAINERS:
        raise CodecError(f"train_mode '{mode}' is not one of {', '.join(TRAINERS)}: fix the config")
    if "model_type" not in config:
        raise CodecError("the config has no model_type")
    if data is None:
        data = TrainingData(config, context, seed, plan)
        data.set_batch_length(int(config["batch_length"]))
    check_models_fit(models_on_meta(config), config, context.device)
    generator = build_training_generator(config).to(context.device)
    discriminator = build_discriminator(config).to(context.device)
    optimizers = {
        "generator": build_optimizer(config, "generator", generator.parameters()),
        "discriminator": build_optimizer(config, "discriminator", discriminator.parameters()),
    }
    schedulers = {role: build_scheduler(config, role, optimizer) for role, optimizer in optimizers.items()}
    return TRAINERS[mode](
        config, generator, discriminator, build_criteria(config, context.device), optimizers, schedulers, data,
        context, expdir, writer,
    )


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all ranks alike: DDP starts every rank from rank 0's weights anyway)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def experiment_config(
    config: Mapping[str, Any], options: TrainOptions, expdir: Path, plan: BatchPlan | None = None
) -> dict[str, Any]:
    """What goes into ``<expdir>/config.yml``: the recipe plus the command line and ``outdir``, as the
    original, and what ran: the run options in effect and, with ``plan``, the global ``batch_size``
    and the number of processes (``world_size``)."""
    full = dict(config)
    given = vars(options)
    full.update({key: value for key, value in given.items()
                 if value is not None and (key not in ("initial", "analyzer") or value)})
    for key, default in RUN_OPTION_DEFAULTS.items():
        if full.get(key) is None:
            full[key] = default
    if plan is not None:
        full.update(batch_size=plan.global_batch, world_size=plan.world_size)
        if plan.micro_batch:
            full["micro_batch"] = plan.micro_batch
    full["outdir"] = str(expdir)
    return full


# The settings that may change from one run of an experiment to the next (a resume with --precision
# bf16, say): config.yml keeps each run's under `runs`, with the step it started from.
RUN_RECORD_KEYS = ("config", "resume", "initial", "precision", "compile", "fast_conv", "tf32", "batch_size",
                   "world_size", "micro_batch", "ddp_bf16_compress", "threads", "cpu_budget_minutes", "seed")


def record_config(expdir: Path, config: Mapping[str, Any], resume: Path | None, steps: int) -> None:
    """Write ``<expdir>/config.yml``: the config this run trains with (``resume`` the checkpoint it
    resumed from), and under ``runs`` the settings of each run of the experiment, earlier ones read
    from the config.yml a resumed run replaces."""
    record = {**config, "resume": str(resume) if resume is not None else ""}
    run = {"from_step": steps, **{key: record[key] for key in RUN_RECORD_KEYS if record.get(key) is not None}}
    runs = []
    previous_path = expdir / "config.yml"
    if resume is not None and previous_path.is_file():
        try:
            previous = yaml.safe_load(previous_path.read_text()) or {}
        except yaml.YAMLError:
            previous = {}
        if isinstance(previous, dict):
            earlier = previous.get("runs") or [
                {"from_step": 0, **{key: previous[key] for key in RUN_RECORD_KEYS if previous.get(key) is not None}}]
            runs = [entry for entry in earlier if isinstance(entry, dict) and entry.get("from_step", 0) < steps]
    record["runs"] = [*runs, run]
    write_text_atomic(previous_path, yaml.safe_dump(record, sort_keys=False))


def load_starting_point(trainer: GANTrainer, config: Mapping[str, Any], expdir: Path, request: str,
                        resume: Path | None) -> Path | None:
    """Load what a run starts from: the checkpoint it resumes (``request`` ``auto``: the newest of
    ``expdir`` that can be read), else the config's ``initial`` parameters. Returns the checkpoint
    resumed from, or None."""
    state = None
    if resume is not None and request == "auto":
        found = read_newest_checkpoint(expdir, warn=trainer.context.is_main)
        resume, state = found if found is not None else (None, None)
    if resume is not None:
        trainer.load_checkpoint(resume, state=state)
        return resume
    if request == "auto":
        logger.info("No checkpoint in %s yet: training from the start", expdir)
    initial = config.get("initial") or ""
    if initial:
        if not Path(initial).is_file():
            raise CodecError(f"initial checkpoint {initial} not found: train the model it names first")
        trainer.load_checkpoint(initial, params_only=True)
    elif config.get("train_mode") == "denoise" and trainer.context.is_main:  # said once, not once per rank
        # The original trains so too; the encoder then learns codes no trained decoder reads.
        logger.warning("The denoise recipe has no 'initial': the encoder trains against a random frozen "
                       "decoder and codebooks; set initial to the autoencoder checkpoint it denoises for")
    return None


def run_steps(trainer: GANTrainer) -> None:
    """Train: ``trainer.run()``, with an allocation that fails (a batch or a model too large for the
    device) as one line instead of the allocator's message in a traceback."""
    try:
        trainer.run()
    except RuntimeError as error:
        failed = out_of_memory(error, trainer.steps, trainer.context.device)
        if failed is None:
            raise
        raise failed from None


def run_training(options: TrainOptions) -> Path:
    """Train as ``codecTrain.py`` does; returns the experiment folder ``<exp_root>/<tag>``.

    Runs under ``torchrun`` as DDP (see :mod:`trainer.distributed`). ``--resume`` restores a full
    training state (``auto``: the newest checkpoint of the experiment, if any); otherwise the config's
    ``initial`` checkpoint, when given, provides the starting parameters.
    """
    config = read_recipe(options.config)
    librosa_filters()  # the mel losses' filters: without a usable home folder, one line naming the fix
    if options.analyzer and config.get("train_mode") != "vocoder":
        raise CodecError(f"--analyzer {options.analyzer}: {options.config} is not a vocoder recipe (train_mode: "
                         f"{config.get('train_mode', 'autoencoder')}), which has no analyzer: leave --analyzer out")
    try:
        context = init_distributed(options.ngpu)
    except CodecError:
        if int(os.environ.get("LOCAL_RANK", "0")) > 0:
            # The node's first process says why, once, and fails the job; a failing exit here would let
            # torchrun stop that process before it has said it.
            raise SystemExit(0) from None
        raise
    finished = False
    try:
        if not context.is_main:
            logging.getLogger().setLevel(logging.WARNING)
        seed_everything(options.seed)
        if options.threads:
            torch.set_num_threads(options.threads)
        if context.device.type == "cuda" and options.disable_cudnn == "False":
            torch.backends.cudnn.benchmark = True
        expdir = Path(options.exp_root) / options.tag
        plan = plan_batches(config, context.world_size, options.batch_size_per_rank, options.micro_batch)
        config = experiment_config(config, options, expdir, plan)
        configure_tf32(context.device, bool(config["tf32"]))
        resume = resolve_resume(options.resume, expdir)
        writer = None
        lock = None
        fresh = context.is_main and not expdir.exists()
        try:
            error = None
            if context.is_main:
                try:
                    make_output_folder(expdir, "the experiment folder")
                    lock = hold_experiment(expdir)  # before anything in the folder is written
                except CodecError as caught:
                    error = caught
                    if fresh:  # (the lock's file on a full disk, say): a run that cannot start leaves no folder
                        shutil.rmtree(expdir, ignore_errors=True)
            raise_first_error(error, context)  # the other ranks stop with rank 0 instead of waiting on it
            try:
                trainer = build_trainer(config, context, expdir, options.seed, None, plan)
                resume = load_starting_point(trainer, config, expdir, options.resume, resume)
            except CodecError as caught:
                error = caught
            raise_first_error(error, context)  # every rank built the same config: one line, not one per rank
            if context.is_main:  # the run starts: only now is the folder's record of what ran changed
                record_config(expdir, config, resume, trainer.steps)
                from torch.utils.tensorboard import SummaryWriter

                writer = trainer.writer = SummaryWriter(str(expdir / "tensorboard"))
        except BaseException:
            if lock is not None:  # None: the folder is another run's, or this process is not rank 0
                if fresh:  # a run that cannot start leaves no experiment folder behind
                    if writer is not None:
                        writer.close()
                    shutil.rmtree(expdir, ignore_errors=True)
                lock.release()
            raise
        logger.info("Training %s (%s) from step %d in %s", config["model_type"], config.get("train_mode",
                    "autoencoder"), trainer.steps, expdir)
        if context.device.type == "cpu":
            threads = torch.get_num_threads()
            logger.info("On the CPU: %d thread%s per process, malloc %s", threads, "" if threads == 1 else "s",
                        current_malloc())
        try:
            run_steps(trainer)
        except BaseException:
            if fresh and lock is not None and trainer.last_saved_steps is None and not trainer.logged:
                writer.close()  # a run that failed before it logged or saved anything leaves no folder
                shutil.rmtree(expdir, ignore_errors=True)
            raise
        finally:
            if lock is not None:
                lock.release()
        if writer is not None:
            writer.close()
        finished = True
        return expdir
    finally:
        shutdown_distributed(finished)
