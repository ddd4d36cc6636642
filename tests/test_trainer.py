"""The training loop on tiny models and synthetic audio: both autoencoder stages, the efficient
paradigm's freeze, checkpoint layout and loading, exact resume, vocoder and denoise flavours, and the
code statistics."""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from tests.conftest import REPO, skip_without_cpp_compiler
from trainer.analysis import compute_code_statistics, load_analyzer, quantized_latent
from trainer.base import GANTrainer, _check_same_settings
from trainer.builder import build_trainer, run_training
from trainer.data import TrainingData
from trainer.distributed import DistributedContext
from trainer.options import TrainOptions
from trainer.state import latest_checkpoint, read_newest_checkpoint, resolve_resume
from utils.audiodec import StreamingCodec
from utils.checkpoint import load_generator
from utils.errors import CodecError

SAMPLE_RATE = 8000
HOP = 8

TINY_AUTOENCODER: dict[str, Any] = {
    "sampling_rate": SAMPLE_RATE,
    "model_type": "symAudioDec",
    "train_mode": "autoencoder",
    "paradigm": "efficient",
    "generator_params": {
        "input_channels": 1, "output_channels": 1, "encode_channels": 4, "decode_channels": 4, "code_dim": 8,
        "codebook_num": 2, "codebook_size": 16, "bias": True, "enc_ratios": [2, 4], "dec_ratios": [4, 2],
        "enc_strides": [2, 4], "dec_strides": [4, 2], "mode": "causal", "codec": "audiodec",
        "projector": "conv1d", "quantier": "residual_vq",
    },
    "discriminator_params": {
        "scales": 1,
        "scale_discriminator_params": {
            "in_channels": 1, "out_channels": 1, "kernel_sizes": [5, 7, 3, 3], "channels": 4,
            "max_downsample_channels": 8, "max_groups": 4, "bias": True, "downsample_scales": [2, 1],
        },
        "periods": [2, 3],
        "period_discriminator_params": {
            "in_channels": 1, "out_channels": 1, "kernel_sizes": [5, 3], "channels": 4,
            "downsample_scales": [3, 1], "max_downsample_channels": 8, "bias": True,
        },
    },
    "use_mel_loss": True,
    "mel_loss_params": {
        "fs": SAMPLE_RATE, "fft_sizes": [128], "hop_sizes": [32], "win_lengths": [128], "window": "hann_window",
        "num_mels": 16, "fmin": 0, "fmax": 4000, "log_base": None,
    },
    "use_stft_loss": True,
    "stft_loss_params": {"fft_sizes": [64], "hop_sizes": [16], "win_lengths": [64], "window": "hann_window"},
    "use_shape_loss": True,
    "shape_loss_params": {"winlen": [HOP]},
    "generator_adv_loss_params": {"average_by_discriminators": False},
    "discriminator_adv_loss_params": {"average_by_discriminators": False},
    "use_feat_match_loss": True,
    "feat_match_loss_params": {"average_by_discriminators": False, "average_by_layers": False,
                               "include_final_outputs": False},
    "lambda_adv": 1.0, "lambda_feat_match": 2.0, "lambda_vq_loss": 1.0,
    "lambda_mel_loss": 45.0, "lambda_stft_loss": 45.0, "lambda_shape_loss": 45.0,
    "batch_size": 2, "batch_length": 160, "adv_batch_length": 160, "pad_short": False,
    "pin_memory": False, "num_workers": 0,
    "generator_optimizer_type": "Adam",
    "generator_optimizer_params": {"lr": 1.0e-3, "betas": [0.5, 0.9], "weight_decay": 0.0},
    "generator_scheduler_type": "StepLR", "generator_scheduler_params": {"step_size": 2, "gamma": 0.5},
    "generator_grad_norm": 10.0,
    "discriminator_optimizer_type": "Adam",
    "discriminator_optimizer_params": {"lr": 2.0e-3, "betas": [0.5, 0.9], "weight_decay": 0.0},
    "discriminator_scheduler_type": "MultiStepLR",
    "discriminator_scheduler_params": {"gamma": 0.5, "milestones": [1, 3]},
    "discriminator_grad_norm": -1,
    "start_steps": {"generator": 0, "discriminator": 2},
    "train_max_steps": 2, "adv_train_max_steps": 4,
    "save_interval_steps": 2, "eval_interval_steps": 2, "log_interval_steps": 1,
}


def write_wavs(folder: Path, count: int, length: int, seed: int, names: list[str] | None = None) -> list[Path]:
    """``count`` noise-and-tone wavs of ``length`` samples at 8 kHz."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        time = np.arange(length) / SAMPLE_RATE
        tone = 0.3 * np.sin(2 * np.pi * generator.uniform(100, 1000) * time)
        audio = (tone + 0.05 * generator.standard_normal(length)).astype(np.float32)
        path = folder / f"{(names or [])[index] if names else f'utt{index}'}.wav"
        sf.write(path, audio, SAMPLE_RATE, subtype="FLOAT")
        paths.append(path)
    return paths


def tiny_recipe(root: Path, **overrides: Any) -> dict[str, Any]:
    """The tiny autoencoder recipe over synthetic data under ``root/corpus`` (written once)."""
    corpus = root / "corpus"
    if not corpus.exists():
        write_wavs(corpus / "train", 4, 800, seed=1)
        write_wavs(corpus / "dev", 2, 400, seed=2)
        write_wavs(corpus / "test", 2, 1003, seed=3)
    config = copy.deepcopy(TINY_AUTOENCODER)
    config["data"] = {"path": str(corpus), "subset": {"train": "train", "valid": "dev", "test": "test"}}
    config.update(overrides)
    return config


def tiny_vocoder_recipe(root: Path, analyzer: str, stats: str) -> dict[str, Any]:
    """A tiny HiFi-GAN vocoder recipe on the codes of ``analyzer`` (a tiny autoencoder checkpoint): the
    generator trains from step 1, the discriminator from step 2."""
    vocoder = tiny_recipe(
        root, model_type="HiFiGAN", train_mode="vocoder", analyzer=analyzer,
        generator_params={
            "in_channels": 8, "out_channels": 1, "channels": 8, "kernel_size": 7, "upsample_scales": [4, 2],
            "upsample_kernel_sizes": [8, 4], "resblock_kernel_sizes": [3], "resblock_dilations": [[1, 3]],
            "groups": 2, "use_additional_convs": True, "use_weight_norm": True, "stats": stats,
        },
        generator_train_start_steps=0, discriminator_train_start_steps=1, train_max_steps=3,
        save_interval_steps=3, eval_interval_steps=3,
    )  # fmt: skip
    for key in ("start_steps", "adv_train_max_steps", "adv_batch_length", "lambda_vq_loss"):
        vocoder.pop(key)
    return vocoder


def save_recipe(config: dict[str, Any], path: Path) -> str:
    path.write_text(yaml.safe_dump(config))
    return str(path)


def untrained_checkpoint(config: dict[str, Any], folder: Path) -> str:
    """The step-0 checkpoint of ``config``'s freshly built models, config.yml beside it (no training)."""
    context = DistributedContext()
    folder.mkdir(parents=True, exist_ok=True)
    build_trainer(config, context, folder, 0, data=TrainingData(config, context, 0)).save_checkpoint()
    (folder / "config.yml").write_text(yaml.safe_dump(config))
    return str(folder / "checkpoint-0steps.pkl")


def train(config: dict[str, Any], root: Path, tag: str, resume: str = "", seed: int = 7) -> Path:
    recipe = save_recipe(config, root / f"{tag.replace('/', '_')}.yaml")
    return run_training(TrainOptions(config=recipe, tag=tag, exp_root=str(root / "exp"), resume=resume, seed=seed))


def generator_tensors(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]["generator"]


@pytest.fixture(scope="module")
def autoencoder_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """2 metric-loss steps then 2 adversarial steps; returns (root, experiment folder)."""
    root = tmp_path_factory.mktemp("autoencoder")
    return root, train(tiny_recipe(root), root, "autoencoder/tiny")


def test_two_stages_write_original_checkpoints(autoencoder_run: tuple[Path, Path]) -> None:
    root, expdir = autoencoder_run
    assert sorted(path.name for path in expdir.glob("checkpoint-*")) == [
        "checkpoint-2steps.pkl", "checkpoint-4steps.pkl"
    ]
    state = torch.load(expdir / "checkpoint-4steps.pkl", map_location="cpu", weights_only=True)
    assert set(state["model"]) == {"generator", "discriminator"}
    assert set(state["optimizer"]) == set(state["scheduler"]) == {"generator", "discriminator"}
    assert state["steps"] == 4 and isinstance(state["epochs"], int)
    assert "encoder.conv.conv.weight" in state["model"]["generator"]
    assert "quantizer.codebook.layers.1.embed" in state["model"]["generator"]
    for tensor in state["model"]["generator"].values():
        assert torch.isfinite(tensor).all()
    config = yaml.safe_load((expdir / "config.yml").read_text())
    assert config["tag"] == "autoencoder/tiny" and config["seed"] == 7 and config["outdir"] == str(expdir)
    model, _ = load_generator(str(expdir / "checkpoint-4steps.pkl"))
    assert not model.training
    encoder, decoder = str(expdir / "checkpoint-2steps.pkl"), str(expdir / "checkpoint-4steps.pkl")
    codec = StreamingCodec.from_checkpoints(encoder, decoder)
    codes, decoded = codec.code(torch.randn(1, 1, 123) * 0.1)
    assert codes.shape == (1, 2, 16) and decoded.shape == (1, 1, 123) and torch.isfinite(decoded).all()


def test_losses_are_finite_in_both_stages(autoencoder_run: tuple[Path, Path]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, expdir = autoencoder_run
    events = EventAccumulator(str(expdir / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "audio": 0})
    events.Reload()
    tags = events.Tags()
    for name in ("train/mel_loss", "train/spectral_convergence_loss", "train/shape_loss", "train/vqloss",
                 "train/ppl_0", "train/ppl_1", "train/generator_loss", "train/adversarial_loss",
                 "train/feature_matching_loss", "train/discriminator_loss", "learning_rate/generator",
                 "eval/mel_loss", "eval/discriminator_loss"):
        assert name in tags["scalars"], name
        assert all(np.isfinite(event.value) for event in events.Scalars(name)), name
    assert [event.step for event in events.Scalars("train/adversarial_loss")] == [3, 4]
    assert any(tag.endswith("generated") for tag in tags["audio"])
    assert any("log_mel" in tag for tag in tags["images"])


def test_efficient_paradigm_freezes_the_analysis_path(autoencoder_run: tuple[Path, Path]) -> None:
    _, expdir = autoencoder_run
    at_start, at_end = generator_tensors(expdir / "checkpoint-2steps.pkl"), generator_tensors(
        expdir / "checkpoint-4steps.pkl"
    )
    frozen = [key for key in at_start if key.startswith(("encoder.", "projector.", "quantizer."))]
    assert any(key.startswith("quantizer.") for key in frozen)
    for key in frozen:
        assert torch.equal(at_start[key], at_end[key]), key
    assert any(not torch.equal(at_start[key], at_end[key]) for key in at_start if key.startswith("decoder."))


def test_resume_continues_identically(autoencoder_run: tuple[Path, Path]) -> None:
    root, expdir = autoencoder_run
    resumed = train(tiny_recipe(root), root, "autoencoder/resumed", resume=str(expdir / "checkpoint-2steps.pkl"))
    straight = torch.load(expdir / "checkpoint-4steps.pkl", map_location="cpu", weights_only=True)
    again = torch.load(resumed / "checkpoint-4steps.pkl", map_location="cpu", weights_only=True)
    for part in ("generator", "discriminator"):
        for key, tensor in straight["model"][part].items():
            assert torch.equal(tensor, again["model"][part][key]), (part, key)
    assert straight["scheduler"] == again["scheduler"]
    assert straight["data"] == again["data"] and straight["epochs"] == again["epochs"]
    exp_state = straight["optimizer"]["generator"]["state"]
    for index, values in exp_state.items():
        assert torch.equal(values["exp_avg"], again["optimizer"]["generator"]["state"][index]["exp_avg"])


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_loader_workers_start_without_fork(tmp_path: Path, method: str) -> None:
    # Python 3.14 starts processes with forkserver on Linux (spawn on macOS): the workers get the
    # dataset and collater pickled, and must draw the same crops as forked ones.
    import multiprocessing

    recipe = tiny_recipe(tmp_path, num_workers=2)
    forked = train(recipe, tmp_path, "forked")
    previous = multiprocessing.get_start_method()
    multiprocessing.set_start_method(method, force=True)
    try:
        started = train(recipe, tmp_path, method)
    finally:
        multiprocessing.set_start_method(previous, force=True)
    for key, tensor in generator_tensors(forked / "checkpoint-4steps.pkl").items():
        assert torch.equal(tensor, generator_tensors(started / "checkpoint-4steps.pkl")[key]), key


def test_resuming_with_another_optimizer_is_refused_before_training(autoencoder_run, tmp_path: Path) -> None:
    """Adam's state would load into SGD, and the first step fail on its missing momentum."""
    root, expdir = autoencoder_run
    sgd = tiny_recipe(root, generator_optimizer_type="SGD", generator_optimizer_params={"lr": 0.1})
    with pytest.raises(CodecError, match=r"checkpoint-2steps.pkl was trained with Adam as generator_optimizer_type, "
                                         r"the config names SGD: resume with the config it was trained with"):
        train(sgd, root, "autoencoder/sgd", resume=str(expdir / "checkpoint-2steps.pkl"))
    state = torch.load(expdir / "checkpoint-2steps.pkl", map_location="cpu", weights_only=True)
    assert state["optimizer_types"] == {"generator": "Adam", "discriminator": "Adam"}
    del state["optimizer_types"]  # as checkpoints written before it was recorded
    torch.save(state, tmp_path / "older.pkl")
    with pytest.raises(CodecError, match=r"older.pkl was trained with an optimizer with amsgrad, betas, eps, lr, "
                                         r"weight_decay as generator_optimizer_type, the config names SGD"):
        train(sgd, root, "autoencoder/sgd", resume=str(tmp_path / "older.pkl"))
    assert not (root / "exp" / "autoencoder" / "sgd").exists()


@pytest.mark.parametrize(("change", "message"), [
    ({"generator_scheduler_type": "MultiStepLR", "generator_scheduler_params": {"milestones": [1, 3], "gamma": 0.5}},
     "StepLR as generator_scheduler_type, the config names MultiStepLR"),
    ({"discriminator_scheduler_type": "StepLR", "discriminator_scheduler_params": {"step_size": 1, "gamma": 0.5}},
     "MultiStepLR as discriminator_scheduler_type, the config names StepLR"),
    ({"generator_optimizer_type": "AdamW"}, "Adam as generator_optimizer_type, the config names AdamW"),
])
def test_resuming_with_another_scheduler_or_optimizer_type_is_refused(autoencoder_run, tmp_path: Path, change: dict,
                                                                       message: str) -> None:
    """A scheduler's state loads over one of another type (``load_state_dict`` takes any keys) and the
    schedule then follows neither config, silently."""
    root, expdir = autoencoder_run
    recipe = tiny_recipe(root, **change)
    with pytest.raises(CodecError, match=rf"checkpoint-2steps.pkl was trained with {message}: "):
        train(recipe, root, "autoencoder/retyped", resume=str(expdir / "checkpoint-2steps.pkl"))
    assert not (root / "exp" / "autoencoder" / "retyped").exists()


def test_a_checkpoint_that_does_not_name_its_schedulers_is_told_apart_by_their_settings(autoencoder_run,
                                                                                        tmp_path: Path) -> None:
    root, expdir = autoencoder_run
    state = torch.load(expdir / "checkpoint-2steps.pkl", map_location="cpu", weights_only=True)
    assert state["scheduler_types"] == {"generator": "StepLR", "discriminator": "MultiStepLR"}
    del state["scheduler_types"]  # as checkpoints written before it was recorded
    torch.save(state, tmp_path / "older.pkl")
    recipe = tiny_recipe(root, generator_scheduler_type="MultiStepLR",
                         generator_scheduler_params={"milestones": [1, 3], "gamma": 0.5})
    with pytest.raises(CodecError, match=r"older.pkl was trained with a scheduler with gamma, step_size as "
                                         r"generator_scheduler_type, the config names MultiStepLR: put "
                                         r"generator_scheduler_type and its params back in the config to resume"):
        train(recipe, root, "autoencoder/retyped", resume=str(tmp_path / "older.pkl"))
    context = DistributedContext()
    trainer = build_trainer(tiny_recipe(root), context, root / "unused", 0, data=TrainingData(tiny_recipe(root),
                                                                                              context, 0))
    trainer.load_checkpoint(tmp_path / "older.pkl")  # the same types resume
    assert trainer.steps == 2


@pytest.mark.parametrize(("role", "part", "change", "message"), [
    ("generator", "optimizer", {"lr": 5.0e-2}, "generator_optimizer_params lr: 0.001, the config gives 0.05"),
    ("generator", "optimizer", {"betas": [0.8, 0.99]},
     r"generator_optimizer_params betas: \[0.5, 0.9\], the config gives \[0.8, 0.99\]"),
    ("discriminator", "scheduler", {"milestones": [1, 30]},
     r"discriminator_scheduler_params milestones: \[1, 3\], the config gives \[1, 30\]"),
    ("generator", "scheduler", {"step_size": 1000}, "generator_scheduler_params step_size: 2, the config gives 1000"),
])
def test_resuming_with_changed_optimizer_or_scheduler_settings_is_refused(autoencoder_run, role: str, part: str,
                                                                          change: dict, message: str) -> None:
    """The checkpoint's states would load over the config's settings, silently, while config.yml recorded
    the config's."""
    root, expdir = autoencoder_run
    recipe = tiny_recipe(root)
    recipe[f"{role}_{part}_params"] = {**recipe[f"{role}_{part}_params"], **change}
    key = next(iter(change))
    with pytest.raises(CodecError, match=rf"checkpoint-2steps.pkl was trained with {message}: put {key}: .* back "
                                         r"in the config to resume, or train anew under another --tag \(--initial "
                                         r".*checkpoint-2steps.pkl starts from its parameters\)$"):
        train(recipe, root, "autoencoder/changed", resume=str(expdir / "checkpoint-2steps.pkl"))
    assert not (root / "exp" / "autoencoder" / "changed").exists()


def test_settings_stored_in_other_forms_or_by_other_torch_releases_resume(autoencoder_run) -> None:
    """Betas as a list (the original's torch), a learning rate scheduled down from the config's, and the
    param-group keys a torch release adds or drops, are not changes."""
    root, expdir = autoencoder_run
    config = tiny_recipe(root)
    context = DistributedContext()
    trainer = build_trainer(config, context, root / "unused", 0, data=TrainingData(config, context, 0))
    state = torch.load(expdir / "checkpoint-4steps.pkl", map_location="cpu", weights_only=True)
    group = state["optimizer"]["generator"]["param_groups"][0]
    assert group["lr"] != group["initial_lr"] == 1.0e-3  # the schedule has halved it since
    group["betas"] = list(group["betas"])
    for key in ("foreach", "fused", "decoupled_weight_decay", "differentiable", "capturable"):
        group.pop(key)
    for name, optimizer in trainer.optimizers.items():
        _check_same_settings("checkpoint-4steps.pkl", name, optimizer, trainer.schedulers[name], state)


def test_learning_rates_are_logged_with_their_significant_digits(caplog) -> None:
    log = SimpleNamespace(context=DistributedContext(), logged=False, steps=7, writer=None)
    with caplog.at_level("INFO"):
        GANTrainer._write_scalars(log, {"learning_rate/generator": 1.25e-05, "train/mel_loss": 1.23456})
    assert "(Steps: 7) learning_rate/generator = 1.25e-05." in caplog.text
    assert "(Steps: 7) train/mel_loss = 1.2346." in caplog.text


def test_a_refused_resume_leaves_the_experiment_as_it_was(autoencoder_run, tmp_path: Path) -> None:
    """config.yml had been rewritten with the refused recipe (its checkpoints then no longer loaded for
    inference) and a TensorBoard file added, before the checkpoint was found not to fit."""
    root, expdir = autoencoder_run
    before = {path: path.read_bytes() for path in expdir.rglob("*") if path.is_file()}
    wider = tiny_recipe(root)
    wider["generator_params"] = {**wider["generator_params"], "encode_channels": 8, "decode_channels": 8}
    with pytest.raises(CodecError, match=r"checkpoint-4steps.pkl does not fit the recipe's generator"):
        train(wider, root, "autoencoder/tiny", resume="auto")
    assert {path: path.read_bytes() for path in expdir.rglob("*") if path.is_file()} == before


def test_config_yml_keeps_the_settings_of_every_run(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path, adv_train_max_steps=0)
    expdir = train(recipe, tmp_path, "runs")
    first = yaml.safe_load((expdir / "config.yml").read_text())
    assert first["runs"] == [{key: first[key] for key in ("config", "resume", "precision", "compile", "fast_conv",
                                                           "tf32", "batch_size", "world_size", "ddp_bf16_compress",
                                                           "seed")} | {"from_step": 0}]
    longer = tiny_recipe(tmp_path, adv_train_max_steps=0, train_max_steps=4)
    recipe_path = save_recipe(longer, tmp_path / "longer.yaml")
    run_training(TrainOptions(config=recipe_path, tag="runs", exp_root=str(tmp_path / "exp"), resume="auto",
                              seed=7, micro_batch=1))
    second = yaml.safe_load((expdir / "config.yml").read_text())
    assert second["resume"] == str(expdir / "checkpoint-2steps.pkl") and second["micro_batch"] == 1
    assert [run["from_step"] for run in second["runs"]] == [0, 2]
    assert second["runs"][0] == first["runs"][0] and second["runs"][1]["micro_batch"] == 1
    assert second["runs"][1]["config"] == recipe_path and second["runs"][1]["resume"] == second["resume"]


def test_a_run_whose_weights_stop_being_finite_stops_without_a_checkpoint(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path)
    sf.write(tmp_path / "corpus" / "train" / "loud.wav", np.full(800, 3e38, np.float32), SAMPLE_RATE,
             subtype="FLOAT")  # finite samples whose squares are not
    with pytest.raises(CodecError, match=r"training diverged at step \d+: the generator weights are no longer finite "
                                         r"\(.*too\); check the data for NaN or infinite samples or lower the learning "
                                         r"rate: no checkpoint was written"):
        train(recipe, tmp_path, "diverged")
    assert not list((tmp_path / "exp" / "diverged").glob("checkpoint-*"))  # (its logs are kept)


@pytest.mark.parametrize(("split", "workers"), [("train", 0), ("dev", 0), ("train", 1)])
def test_non_finite_samples_stop_the_run_naming_the_file_and_leave_no_folder(tmp_path: Path, split: str,
                                                                             workers: int) -> None:
    recipe = tiny_recipe(tmp_path, num_workers=workers, log_interval_steps=100)
    for path in (tmp_path / "corpus" / split).glob("*.wav"):
        audio = sf.read(path, dtype="float32")[0]
        audio[::50] = np.nan  # every crop meets one
        sf.write(path, audio, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(CodecError, match=rf"corpus/{split}/utt\d.wav has a non-finite sample \(nan\) at [\d.]+ s "
                                         r"\(frame \d+, channel 0\): repair or re-export the file, or remove it"):
        train(recipe, tmp_path, "nan")
    assert not (tmp_path / "exp" / "nan").exists()


def test_resume_auto_and_bad_resume_paths(tmp_path: Path) -> None:
    assert resolve_resume("auto", tmp_path) is None
    for steps in (2, 10, 4):
        (tmp_path / f"checkpoint-{steps}steps.pkl").touch()
    assert latest_checkpoint(tmp_path).name == "checkpoint-10steps.pkl"
    assert resolve_resume("auto", tmp_path).name == "checkpoint-10steps.pkl"
    assert resolve_resume("", tmp_path) is None
    with pytest.raises(CodecError, match="no such checkpoint"):
        resolve_resume(str(tmp_path / "missing.pkl"), tmp_path)


def test_resume_auto_passes_over_damaged_checkpoints_and_resumes_from_the_newest_readable(
    autoencoder_run, tmp_path: Path, caplog
) -> None:
    """A requeued job whose newest checkpoint was damaged (a failed disk, a copy cut short) resumes from
    the one before instead of failing on every restart; the damaged file is left where it is."""
    root, expdir = autoencoder_run
    folder = root / "exp" / "autoencoder" / "damaged"
    folder.mkdir()
    shutil.copy(expdir / "checkpoint-2steps.pkl", folder)
    cut = (expdir / "checkpoint-4steps.pkl").read_bytes()[:5000]
    (folder / "checkpoint-4steps.pkl").write_bytes(cut)
    (folder / "checkpoint-3steps.pkl").write_text("not a checkpoint")
    with caplog.at_level("INFO"):
        path, state = read_newest_checkpoint(folder)
    assert path.name == "checkpoint-2steps.pkl" and state["steps"] == 2
    assert re.search(r"--resume auto: cannot read checkpoint \S*checkpoint-4steps.pkl \(\w+\): it is damaged or not a "
                     r"checkpoint; cannot read checkpoint \S*checkpoint-3steps.pkl \(\w+\): it is damaged or not a "
                     r"checkpoint; resuming from checkpoint-2steps.pkl, the newest that can be read, and leaving "
                     r"checkpoint-4steps.pkl, checkpoint-3steps.pkl as they are", caplog.text)
    assert (folder / "checkpoint-4steps.pkl").read_bytes() == cut

    # The run goes on from step 2 as the uninterrupted one did.
    (folder / "checkpoint-3steps.pkl").unlink()
    resumed = train(tiny_recipe(root), root, "autoencoder/damaged", resume="auto")
    assert yaml.safe_load((resumed / "config.yml").read_text())["resume"] == str(folder / "checkpoint-2steps.pkl")
    for key, tensor in generator_tensors(expdir / "checkpoint-4steps.pkl").items():
        assert torch.equal(tensor, generator_tensors(resumed / "checkpoint-4steps.pkl")[key]), key

    (tmp_path / "checkpoint-1steps.pkl").write_bytes(cut)
    with pytest.raises(CodecError, match=r"--resume auto: no checkpoint in \S+ can be read \(cannot read checkpoint "
                                         r"\S+checkpoint-1steps.pkl \(\w+\): it is damaged or not a checkpoint\): "
                                         r"move them away to train from the start, or give another --tag"):
        read_newest_checkpoint(tmp_path)
    assert read_newest_checkpoint(tmp_path / "empty") is None


def test_an_explicitly_named_damaged_checkpoint_is_refused_naming_the_fix(autoencoder_run, tmp_path: Path) -> None:
    root, expdir = autoencoder_run
    (tmp_path / "checkpoint-4steps.pkl").write_bytes((expdir / "checkpoint-4steps.pkl").read_bytes()[:5000])
    with pytest.raises(CodecError, match=r"cannot read checkpoint \S+checkpoint-4steps.pkl \(\w+\): it is damaged or "
                                         r"not a checkpoint; resume from another checkpoint, or with --resume auto "
                                         r"from the newest that can be read$"):
        train(tiny_recipe(root), root, "autoencoder/named", resume=str(tmp_path / "checkpoint-4steps.pkl"))
    assert not (root / "exp" / "autoencoder" / "named").exists()


def test_statistics_and_vocoder_training(autoencoder_run: tuple[Path, Path]) -> None:
    root, expdir = autoencoder_run
    analyzer_checkpoint = str(expdir / "checkpoint-2steps.pkl")
    config = tiny_recipe(root)
    stats_config = {"sampling_rate": SAMPLE_RATE, "data": config["data"], "analyzer": analyzer_checkpoint}
    stats = compute_code_statistics(stats_config, "train")
    assert stats.shape == (2, 8) and stats.dtype == np.float32
    analyzer = load_analyzer(analyzer_checkpoint)
    frames = []
    for path in sorted((root / "corpus" / "train").glob("*.wav")):
        audio, _ = sf.read(path, dtype="float32", always_2d=True)
        latent = quantized_latent(analyzer, torch.from_numpy(audio.T.copy()).unsqueeze(0))
        frames.append(latent[0].T.double().numpy())
    frames = np.concatenate(frames)
    np.testing.assert_allclose(stats[0], frames.mean(0), rtol=1e-5, atol=1e-6)
    with_empty = root / "with_empty"
    shutil.copytree(root / "corpus" / "train", with_empty, dirs_exist_ok=True)
    sf.write(with_empty / "empty.wav", np.zeros(0, np.float32), SAMPLE_RATE)  # skipped, as training skips it
    np.testing.assert_array_equal(
        compute_code_statistics({**stats_config, "data": {"path": str(root), "subset": {"train": "with_empty"}}}),
        stats)
    (root / "stereo").mkdir(exist_ok=True)
    sf.write(root / "stereo" / "two.wav", np.zeros((400, 2), np.float32), SAMPLE_RATE)
    with pytest.raises(CodecError, match=r"two.wav has 2 channel\(s\) but the analyzer .* takes 1"):
        compute_code_statistics({**stats_config, "data": {"path": str(root), "subset": {"train": "stereo"}}})
    stats_path = root / "stats" / "tiny.npy"
    stats_path.parent.mkdir(exist_ok=True)
    np.save(stats_path, stats)

    vocoder = tiny_vocoder_recipe(root, analyzer_checkpoint, str(stats_path))
    vocoder_dir = train(vocoder, root, "vocoder/tiny")
    state = torch.load(vocoder_dir / "checkpoint-3steps.pkl", map_location="cpu", weights_only=True)
    np.testing.assert_allclose(state["model"]["generator"]["mean"].numpy(), stats[0])
    assert "input_conv.conv.weight_g" in state["model"]["generator"]
    codec = StreamingCodec.from_checkpoints(analyzer_checkpoint, str(vocoder_dir / "checkpoint-3steps.pkl"))
    assert torch.isfinite(codec.code(torch.randn(1, 1, 160) * 0.1)[1]).all()

    vocoder["generator_params"]["stats"] = str(root / "stats" / "missing.npy")
    with pytest.raises(CodecError, match="statistics file"):
        train(vocoder, root, "vocoder/no_stats")


def test_denoise_trains_encoder_only(autoencoder_run: tuple[Path, Path]) -> None:
    root, expdir = autoencoder_run
    corpus = root / "corpus"
    clean = sorted(path.stem for path in (corpus / "train").glob("*.wav"))
    for split, count, length, seed in (("train", 4, 800, 1), ("dev", 2, 400, 2)):
        names = clean if split == "train" else sorted(path.stem for path in (corpus / split).glob("*.wav"))
        write_wavs(corpus / f"noisy_{split}", count, length, seed=seed + 10, names=names)
    config = tiny_recipe(
        root, train_mode="denoise", initial=str(expdir / "checkpoint-4steps.pkl"), train_max_steps=2,
        save_interval_steps=2, eval_interval_steps=2, start_steps={"generator": 0, "discriminator": 2},
    )
    config.pop("adv_train_max_steps")
    config["data"]["subset"] = {"clean_train": "train", "clean_valid": "dev", "noisy_train": "noisy_train",
                                "noisy_valid": "noisy_dev"}
    denoise_dir = train(config, root, "denoise/tiny")
    before, after = generator_tensors(expdir / "checkpoint-4steps.pkl"), generator_tensors(
        denoise_dir / "checkpoint-2steps.pkl"
    )
    for key in before:
        if key.startswith(("decoder.", "quantizer.")):
            assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["encoder.conv.conv.weight"], after["encoder.conv.conv.weight"])


# ---- the global batch, GPUs asked for, mixed precision ----------------------------------------------


def exact_recipe(root: Path, **overrides: Any) -> dict[str, Any]:
    """The tiny recipe on files exactly one crop long (no random crop draws), without the spectral
    convergence loss (a ratio of norms over a whole batch, not a mean of per-sample terms)."""
    if not (root / "exact").exists():
        write_wavs(root / "exact" / "train", 6, 160, seed=5)
        write_wavs(root / "exact" / "dev", 2, 160, seed=6)
    config = tiny_recipe(root, pad_short=True, use_stft_loss=False, eval_interval_steps=100, **overrides)
    config["data"]["path"] = str(root / "exact")
    return config


def test_micro_batches_accumulate_to_the_whole_batch(tmp_path: Path) -> None:
    config = exact_recipe(tmp_path, batch_size=3)
    recipe = save_recipe(config, tmp_path / "exact.yaml")
    runs = {
        micro: run_training(TrainOptions(config=recipe, tag=f"micro{micro}", exp_root=str(tmp_path / "exp"),
                                         seed=7, micro_batch=micro))
        for micro in (None, 1)
    }  # fmt: skip
    whole, accumulated = (torch.load(run / "checkpoint-4steps.pkl", map_location="cpu", weights_only=True)
                          for run in runs.values())  # fmt: skip
    for part in ("generator", "discriminator"):
        for key, tensor in whole["model"][part].items():
            torch.testing.assert_close(accumulated["model"][part][key], tensor, rtol=1e-4, atol=1e-5, msg=key)
    saved = yaml.safe_load((runs[1] / "config.yml").read_text())
    assert saved["batch_size"] == 3 and saved["micro_batch"] == 1 and saved["world_size"] == 1
    assert saved["precision"] == "fp32" and saved["compile"] is False


def test_a_gpu_request_without_gpus_stops_with_one_error_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    if torch.cuda.device_count() >= 1:
        pytest.skip("this machine has a GPU: the request would be met")
    recipe = save_recipe(tiny_recipe(tmp_path), tmp_path / "tiny.yaml")
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, str(root / "codecTrain.py"), "-c", recipe, "--tag", "gpu", "--exp_root",
         str(tmp_path / "exp"), "--ngpu", "1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --ngpu 1 asks for 1 GPU(s) per node but this process sees 0")
    assert "--ngpu 0" in lines[0]
    if torch.version.cuda is None and torch.version.hip is None:  # the fix is another torch
        assert f"this torch ({torch.__version__}) is a CPU build: install a CUDA one" in lines[0]
    else:
        assert "sbatch --gpus-per-node" in lines[0]
    assert not list((tmp_path / "exp").rglob("checkpoint-*"))


def test_a_later_process_of_a_node_without_its_gpus_leaves_the_error_to_the_first(tmp_path: Path) -> None:
    """Under torchrun every process finds the GPUs missing; only the node's first says so and fails the
    job. The others exit quietly with status 0: a failing exit would make torchrun stop the first
    process, possibly before it has printed its line."""
    import os

    if torch.cuda.device_count() >= 2:
        pytest.skip("this machine has the GPUs: the request would be met")
    recipe = save_recipe(tiny_recipe(tmp_path), tmp_path / "tiny.yaml")
    env = {**os.environ, "RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}
    result = subprocess.run(
        [sys.executable, str(Path(REPO, "codecTrain.py")), "-c", recipe, "--tag", "gpu", "--exp_root",
         str(tmp_path / "exp"), "--ngpu", "2"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert result.returncode == 0 and "error:" not in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "exp").exists()


def test_crops_shorter_than_a_loss_fft_stop_with_one_error_line_and_no_experiment_folder(tmp_path: Path) -> None:
    """A centred STFT cannot mirror-pad a crop shorter than half its FFT: the config is refused before
    training, in one line that names the setting, and the experiment folder it would have made is gone."""
    params = {**TINY_AUTOENCODER["mel_loss_params"], "fft_sizes": [512], "win_lengths": [512]}
    recipe = save_recipe(tiny_recipe(tmp_path, mel_loss_params=params, adv_batch_length=320), tmp_path / "short.yaml")
    result = subprocess.run(
        [sys.executable, str(Path(REPO, "codecTrain.py")), "-c", recipe, "--tag", "short", "--exp_root",
         str(tmp_path / "exp"), "--ngpu", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: batch_length 160 is too short for the mel loss's FFT of 512 samples: crops must be longer than 256; "
        "lengthen batch_length or shorten mel_loss_params' fft_sizes"
    )
    assert not (tmp_path / "exp" / "short").exists()


def test_the_vq_runs_in_fp32_under_autocast() -> None:
    from layers.vq import ResidualVQ

    torch.manual_seed(0)
    quantizer = ResidualVQ(num_quantizers=2, dim=8, codebook_size=16).train()
    twin = copy.deepcopy(quantizer)
    latent = torch.randn(2, 5, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        quantized, losses, perplexities = quantizer(latent)
    expected = twin(latent)
    assert quantized.dtype == losses.dtype == torch.float32
    for value, reference in zip((quantized, losses, perplexities), expected):
        assert torch.equal(value, reference)
    for (name, buffer), reference in zip(quantizer.named_buffers(), twin.buffers()):
        assert buffer.dtype == torch.float32 and torch.equal(buffer, reference), name


def cpu_autocast_works(dtype: torch.dtype) -> str:
    """Why this CPU cannot run a convolution under autocast to ``dtype`` ('' when it can)."""
    try:
        with torch.autocast("cpu", dtype=dtype):
            output = torch.nn.Conv1d(1, 2, 3)(torch.randn(1, 1, 8))
    except RuntimeError as error:
        return f"{dtype} autocast fails here ({error}; CPU capability {torch.backends.cpu.get_cpu_capability()})"
    return "" if output.dtype == dtype else f"autocast gave {output.dtype}, not {dtype}"


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_mixed_precision_run_trains_both_stages(tmp_path: Path, precision: str) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    reason = cpu_autocast_works(dtype)
    if reason:
        pytest.skip(reason)
    config = tiny_recipe(tmp_path, eval_interval_steps=4)
    recipe = save_recipe(config, tmp_path / "tiny.yaml")
    expdir = run_training(TrainOptions(config=recipe, tag=precision, exp_root=str(tmp_path / "exp"),
                                       seed=7, precision=precision))  # fmt: skip
    first, last = (torch.load(expdir / f"checkpoint-{steps}steps.pkl", map_location="cpu", weights_only=True)
                   for steps in (2, 4))  # fmt: skip
    for key, tensor in last["model"]["generator"].items():
        assert tensor.dtype == torch.float32 and torch.isfinite(tensor).all(), key
    key = "decoder.conv1.conv.weight"
    trained = not torch.equal(first["model"]["generator"][key], last["model"]["generator"][key])
    assert ("scaler" in last) == (precision == "fp16")
    for name, updates in (("generator", 4), ("discriminator", 2)):
        skipped = 0
        if precision == "fp16":
            # The gradient scaler skips the steps whose scaled gradients overflow, halving its scale.
            skipped = round(math.log2(2.0**16 / last["scaler"][name]["scale"]))
        # The learning-rate schedule counts the updates made, not the steps the scaler skipped.
        assert last["scheduler"][name]["last_epoch"] == updates - skipped, name
    assert trained or precision == "fp16" and last["scaler"]["generator"]["scale"] < 2.0**16
    assert yaml.safe_load((expdir / "config.yml").read_text())["precision"] == precision
    events = EventAccumulator(str(expdir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    for name in ("train/mel_loss", "train/discriminator_loss", "eval/mel_loss"):
        assert all(np.isfinite(event.value) for event in events.Scalars(name)), name


def test_the_training_benchmark_times_both_phases(tmp_path: Path) -> None:
    from trainer.benchmark import time_phase
    from trainer.fast_conv import time_major_suits
    from utils.runtime.cpu_process import cpu_name

    config = tiny_recipe(tmp_path)
    for phase in ("stage1", "adversarial"):
        timing = time_phase(config, phase, steps=1, warmup=1)
        assert timing.phase == phase and timing.batch_size == 2 and timing.batch_length == 160
        assert timing.seconds_per_step > 0 and timing.samples_per_second == pytest.approx(2 / timing.seconds_per_step)
        assert timing.fast_conv_form == ""
    assert cpu_name()
    timing = time_phase(config, "stage1", steps=1, warmup=1, fast_conv=True)
    assert timing.fast_conv and timing.fast_conv_form == ("time_major" if time_major_suits() else "blocked")


def test_the_training_benchmark_needs_no_learning_curve_corpus_and_runs_out_of_memory_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It trains on random audio: a recipe's learning curve (a corpus folder) is not built; an allocation
    that fails in a step is the trainer's one line, not a traceback."""
    from trainer.benchmark import time_phase

    config = {**tiny_recipe(tmp_path), "learning_curve": {"interval_steps": 1, "subset": str(tmp_path / "none")}}
    assert time_phase(config, "stage1", steps=1, warmup=0).steps == 1

    def fails(self, batch) -> None:
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 123456789 bytes.")

    monkeypatch.setattr(GANTrainer, "train_step", fails)
    with pytest.raises(CodecError, match=r"^out of CPU memory at step \d+ \(allocating 123456789 bytes\): lower"):
        time_phase(config, "stage1", steps=1, warmup=0)


def test_compile_on_a_gpu_is_refused_without_what_triton_builds_with(monkeypatch: pytest.MonkeyPatch) -> None:
    """Triton compiles its launcher with a C compiler against Python.h: without them, one line before training."""
    import sysconfig

    from trainer import base

    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(base.shutil, "which", lambda name: None)
    with pytest.raises(CodecError, match=r"^compile on a GPU needs a C compiler .*\(gcc or clang, or set CC\)"):
        base.check_gpu_compiler()
    monkeypatch.setenv("CC", "cc")
    monkeypatch.setattr(sysconfig, "get_paths", lambda: {"include": "/nonexistent/include"})
    with pytest.raises(CodecError, match=r"Python's headers .*no Python.h in /nonexistent/include.*python3-dev"):
        base.check_gpu_compiler()


def test_the_training_benchmark_times_vocoder_recipes_with_stand_ins_for_what_is_not_trained_yet(
    tmp_path: Path,
) -> None:
    """A vocoder recipe before its analyzer exists: an analyzer of its autoencoder recipe's structure
    (the recipe named by the analyzer's experiment folder) and unit statistics stand in."""
    from trainer.benchmark import config_phases, stand_ins, time_phase

    configs = tmp_path / "config"
    (configs / "autoencoder").mkdir(parents=True)
    (configs / "vocoder").mkdir()
    recipe = save_recipe(tiny_recipe(tmp_path), configs / "autoencoder" / "tiny.yaml")
    missing = tmp_path / "exp" / "autoencoder" / "tiny" / "checkpoint-9steps.pkl"
    vocoder = tiny_vocoder_recipe(tmp_path, str(missing), str(tmp_path / "stats" / "tiny.npy"))
    path = save_recipe(vocoder, configs / "vocoder" / "tiny.yaml")
    assert config_phases(vocoder) == ("stage1", "adversarial")
    ready, analyzer_config = stand_ins(vocoder, path, tmp_path / "stand_ins")
    assert analyzer_config == Path(recipe).resolve() and vocoder["analyzer"] == str(missing)
    codebook = load_analyzer(ready["analyzer"]).quantizer.codebook  # of the recipe's structure
    assert (codebook.num_quantizers, codebook.codebook_size) == (2, 16)
    stats = np.load(ready["generator_params"]["stats"])
    assert stats.shape == (2, 8) and (stats[0] == 0).all() and (stats[1] == 1).all()
    for phase in ("stage1", "adversarial"):
        timing = time_phase(ready, phase, steps=1, warmup=1)
        assert timing.phase == phase and timing.batch_size == 2 and timing.seconds_per_step > 0

    # An analyzer and statistics that exist are used as they are.
    again, _ = stand_ins(ready, path, tmp_path / "elsewhere")
    assert again["analyzer"] == ready["analyzer"] and again["generator_params"] == ready["generator_params"]
    # The released vocoders train their discriminator from the first step: no stage 1 to time.
    released = {**ready, "generator_train_start_steps": 1, "discriminator_train_start_steps": 0}
    assert config_phases(released) == ("adversarial",)
    with pytest.raises(CodecError, match="no stage1 phase: time adversarial"):
        time_phase(released, "stage1", steps=1, warmup=0)
    lost = {**vocoder, "analyzer": str(tmp_path / "exp" / "autoencoder" / "other" / "checkpoint.pkl")}
    with pytest.raises(CodecError, match="analyzer .* has no config.yml beside it and no recipe"):
        stand_ins(lost, path, tmp_path / "lost")
    result = subprocess.run(
        [sys.executable, str(Path(REPO, "bin", "train_benchmark.py")), "-c", save_recipe(lost, configs / "v.yaml")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1 and result.stderr.strip().startswith("error: the vocoder's analyzer")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("mode, starts, phase, active", [
    ("autoencoder", (0, 2), "stage1", (True, False)),
    ("autoencoder", (0, 2), "adversarial", (True, True)),
    ("vocoder", (0, 1), "stage1", (True, False)),
    ("vocoder", (0, 1), "adversarial", (True, True)),
    ("vocoder", (1, 0), "adversarial", (True, True)),
])  # fmt: skip
def test_a_timed_phase_starts_where_its_trainer_trains_what_the_phase_names(mode, starts, phase, active) -> None:
    """The benchmark's first step of a phase is one where the trainer's own rules train the generator
    (and the discriminator in the adversarial phase), and the step before it is not."""
    from trainer.autoencoder import AutoencoderTrainer
    from trainer.benchmark import _phase_start
    from trainer.vocoder import VocoderTrainer

    trainer = (AutoencoderTrainer if mode == "autoencoder" else VocoderTrainer).__new__(
        AutoencoderTrainer if mode == "autoencoder" else VocoderTrainer
    )
    trainer.generator_start, trainer.discriminator_start = starts
    trainer.steps = _phase_start(trainer, phase)
    assert (trainer.generator_active(), trainer.discriminator_active()) == active
    trainer.steps -= 1
    assert (trainer.generator_active(), trainer.discriminator_active()) != active


def test_the_training_benchmark_times_a_denoising_recipe(tmp_path: Path) -> None:
    from trainer.benchmark import config_phases, time_phase

    denoise = tiny_recipe(tmp_path, train_mode="denoise")
    assert config_phases(denoise) == ("stage1",)
    timing = time_phase(denoise, "stage1", steps=1, warmup=1)
    assert timing.phase == "stage1" and timing.seconds_per_step > 0
    with pytest.raises(CodecError, match="denoise recipe .* has no adversarial phase: time stage1"):
        time_phase(denoise, "adversarial", steps=1, warmup=0)


@pytest.mark.slow
def test_each_compiled_benchmark_setting_compiles_its_own_graphs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Graphs of an earlier setting (or round) must not use up Dynamo's recompilation limit, past which
    the function would run eagerly and the 'compiled' figures would time eager code."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from trainer.benchmark import time_phase

    skip_without_cpp_compiler()
    # Dynamo's graphs and limit are the same whatever backend runs them: the eager one spares Inductor's work.
    inductor_compile = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda module, **options: inductor_compile(
        module, **{**options, "backend": "eager"}))  # fmt: skip
    config = tiny_recipe(tmp_path)
    # The limit's name before torch 2.6: cache_size_limit.
    name = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
    compiled, limit = [], getattr(torch._dynamo.config, name)
    with torch._dynamo.config.patch(**{name: 1}):  # the config's own patch: it restores the value
        for _ in range(2):
            before = counters["stats"]["unique_graphs"]
            timing = time_phase(config, "stage1", "fp32", "generator", steps=1, warmup=1)
            compiled.append(counters["stats"]["unique_graphs"] - before)
            assert timing.compiled == "generator"
    torch._dynamo.reset()
    assert compiled[0] > 0 and compiled[1] == compiled[0]
    assert getattr(torch._dynamo.config, name) == limit


def test_benchmark_rounds_report_medians_and_the_median_of_each_rounds_ratio(capsys) -> None:
    """`--rounds`: per setting the median seconds per step and, against the original, the median of the
    ratios taken within each round (not a ratio of medians taken at different times)."""
    from bin.train_benchmark import _summary

    def row(seconds: float, ratio: float | None = None) -> dict:
        extra = {} if ratio is None else {"vs_original": ratio}
        return {"phase": "stage1", "precision": "fp32", "compile": False, "compiled": "", "batch_size": 16,
                "seconds_per_step": seconds, **extra}  # fmt: skip

    # The machine slows down over the rounds; ours is 1.25x, 1.0x and 1.5x the original within each round.
    rounds = [([row(4.0, 5.0 / 4.0)], row(5.0)), ([row(8.0, 8.0 / 8.0)], row(8.0)), ([row(2.0, 3.0 / 2.0)], row(3.0))]
    (ours,), original = _summary(rounds)
    assert ours["seconds_per_step"] == 4.0 and ours["rounds_seconds_per_step"] == [4.0, 8.0, 2.0]
    assert ours["samples_per_second"] == pytest.approx(4.0)
    assert ours["rounds_vs_original"] == [1.25, 1.0, 1.5] and ours["vs_original"] == 1.25
    assert original["seconds_per_step"] == 5.0 and original["rounds_seconds_per_step"] == [5.0, 8.0, 3.0]
    assert "1.25x the original's steps/s (rounds: 1.25, 1.00, 1.50)" in capsys.readouterr().out
    (alone,), nothing = _summary([([row(3.0)], None), ([row(1.0)], None)])
    assert nothing is None and alone["seconds_per_step"] == 2.0 and "vs_original" not in alone


def test_benchmark_rounds_from_the_command_line(tmp_path: Path) -> None:
    config = save_recipe(tiny_recipe(tmp_path), tmp_path / "tiny.yaml")
    command = [sys.executable, str(Path(REPO, "bin", "train_benchmark.py")), "-c", config, "--phases", "stage1",
               "--precisions", "fp32", "--steps", "1", "--warmup", "0", "--threads", "1"]  # fmt: skip
    result = subprocess.run([*command, "--rounds", "2", "--json", str(tmp_path / "out.json")], capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    (row,) = json.loads((tmp_path / "out.json").read_text())["results"]
    assert len(row["rounds_seconds_per_step"]) == 2
    assert row["seconds_per_step"] == pytest.approx(sum(row["rounds_seconds_per_step"]) / 2)
    bad = subprocess.run([*command, "--rounds", "0"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and bad.stderr.strip() == "error: --rounds 0: give 1 or more"
    bad = subprocess.run([*command, "--warmup", "-1"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and bad.stderr.strip() == "error: --warmup -1: give 0 or more"
    bad = subprocess.run([*command, "--compile", "on,sometimes"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and bad.stderr.strip() == (
        "error: --compile 'on,sometimes': give a comma-separated list of off, on, generator, all")
    for device in ("foo", "cuda:x", "mps"):
        bad = subprocess.run([*command, "--device", device], capture_output=True, text=True, timeout=300)
        assert bad.returncode == 1 and bad.stderr.strip() == f"error: --device {device}: give cpu or cuda[:N]"
    if torch.cuda.device_count() == 0:
        bad = subprocess.run([*command, "--device", "cuda"], capture_output=True, text=True, timeout=300)
        assert bad.returncode == 1 and bad.stderr.strip().startswith("error: --device cuda: this machine shows no GPU")


def test_the_gpu_training_check_writes_a_json_per_phase_and_setting(tmp_path: Path) -> None:
    """utils/gpu_training_check.sh (the GPU figures' script), tried on the CPU with a tiny recipe."""
    config = save_recipe(tiny_recipe(tmp_path), tmp_path / "tiny.yaml")
    script = str(Path(REPO, "utils", "gpu_training_check.sh"))
    env = {"PATH": os.environ["PATH"], "PYTHON": sys.executable, "CONFIG": config, "OUT": str(tmp_path / "out"),
           "STAGE1_STEPS": "2", "ADVERSARIAL_STEPS": "1", "WARMUP": "0"}  # fmt: skip
    result = subprocess.run(["bash", script], env={**env, "DEVICE": "cpu", "SETTINGS": "fp32"}, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    for phase, steps in (("stage1", 2), ("adversarial", 1)):
        (row,) = json.loads((tmp_path / "out" / f"{phase}_fp32.json").read_text())["results"]
        assert (row["phase"], row["precision"], row["compile"], row["steps"]) == (phase, "fp32", False, steps)
    assert (tmp_path / "out" / "summary.txt").read_text().count("== ") == 2
    # A setting that fails or runs out of time is marked, and the others still run.
    for variables, reason in (({"CONFIG": str(tmp_path / "missing.yaml")}, "exit status 1"),
                              ({"RUN_TIMEOUT": "1"}, "more than 1 s")):  # fmt: skip
        out = tmp_path / reason.replace(" ", "_")
        failing_env = {**env, "DEVICE": "cpu", "SETTINGS": "fp32 bf16", "OUT": str(out), **variables}
        failing = subprocess.run(["bash", script], env=failing_env, capture_output=True, text=True, timeout=300)
        summary = (out / "summary.txt").read_text()
        assert failing.returncode == 1 and summary.count(f"FAILED ({reason})") == 4, summary
        assert sorted(path.name for path in out.glob("*.log")) == [
            "adversarial_bf16.log", "adversarial_fp32.log", "stage1_bf16.log", "stage1_fp32.log"]
    # A failing run into the first run's folder leaves none of that run's figures beside its failure.
    rerun = subprocess.run(["bash", script], env={**env, "DEVICE": "cpu", "SETTINGS": "fp32", "RUN_TIMEOUT": "1"},
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert rerun.returncode == 1 and not list((tmp_path / "out").glob("*.json"))
    bad = subprocess.run(["bash", script], env={**env, "DEVICE": "cpu", "SETTINGS": "fp32 fp32+jit",
                                                 "OUT": str(tmp_path / "bad")}, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert bad.returncode == 2 and "setting 'fp32+jit' is not PRECISION or PRECISION+compile" in bad.stderr
    assert not (tmp_path / "bad").exists()  # nothing ran, nothing written
    if not torch.cuda.is_available():
        none = subprocess.run(["bash", script], env=env, capture_output=True, text=True, timeout=60)
        assert none.returncode == 2 and "sees no CUDA device" in none.stderr
    (tmp_path / "bin").mkdir()  # a python3 without torch: named as such, not as one without CUDA
    (tmp_path / "bin" / "python3").write_text("#!/bin/sh\necho 'No module named torch' >&2\nexit 1\n")
    (tmp_path / "bin" / "python3").chmod(0o755)
    bare = subprocess.run(["bash", script], env={**env, "PYTHON": str(tmp_path / "bin" / "python3")},
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bare.returncode == 2 and bare.stderr.strip().endswith("cannot import torch: give a Python that has it "
                                                                 "(PYTHON=...)")
    (tmp_path / "lacking" / "librosa").mkdir(parents=True)  # a librosa without the filters the mel loss needs
    (tmp_path / "lacking" / "librosa" / "__init__.py").write_text("")
    lacking = subprocess.run(["bash", script], env={**env, "DEVICE": "cpu", "PYTHONPATH": str(tmp_path / "lacking")},
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert lacking.returncode == 2 and lacking.stderr.strip().endswith(
        "cannot run the trainer: No module named 'librosa.filters' (carry the packages as above)")
    helped = subprocess.run(["bash", script, "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "Variables (defaults in brackets)" in helped.stdout


@pytest.mark.parametrize("layout, message", [
    ("code", "has no config/autoencoder/symAD_vctk_48000_hop300.yaml: give --original a checkout"),
    ("recipe", "is not a checkout of facebookresearch/AudioDec"),
])
def test_the_training_benchmark_beside_the_original_names_a_bad_checkout(tmp_path: Path, layout, message) -> None:
    """`--original` with a folder that is not the original's checkout: one `error:` line, no traceback."""
    original = tmp_path / "AudioDec"
    if layout == "code":  # its code, but not the recipe
        (original / "models" / "autoencoder").mkdir(parents=True)
        (original / "models" / "autoencoder" / "AudioDec.py").write_text("")
    else:  # its recipe, but none of its code
        recipe = Path(REPO, "config", "autoencoder", "symAD_vctk_48000_hop300.yaml")
        (original / "config" / "autoencoder").mkdir(parents=True)
        (original / "config" / "autoencoder" / recipe.name).write_text(recipe.read_text())
    result = subprocess.run(
        [sys.executable, str(Path(REPO, "bin", "train_benchmark.py")), "--phases", "stage1", "--precisions", "fp32",
         "--steps", "1", "--warmup", "0", "--batch_size", "1", "--batch_length", "600", "--threads", "1",
         "--original", str(original)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert re.search(message, result.stderr.strip().splitlines()[-1])


def test_the_training_benchmark_checks_its_json_path_before_timing(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    result = subprocess.run(
        [sys.executable, str(Path(REPO, "bin", "train_benchmark.py")), "--phases", "stage1", "--precisions", "fp32",
         "--steps", "1", "--warmup", "0", "--batch_size", "1", "--batch_length", "600", "--threads", "1",
         "--json", str(tmp_path / "file" / "out.json")],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: cannot write {tmp_path / 'file' / 'out.json'}: {tmp_path / 'file'} is a file, not a folder: "
        "give another output path"]  # no step was timed (that logs)
