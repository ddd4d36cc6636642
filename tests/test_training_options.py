"""Training options: codebooks kept in use and waveform-aware losses switched on in a tiny recipe (their
values logged beside the batch perplexity), the light adversarial config training one adversarial
step, an output delay shifting what the losses compare, and compiled training steps equal to eager ones."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import skip_without_cpp_compiler
from tests.test_trainer import save_recipe, tiny_recipe, train
from trainer.base import GANTrainer, LossTracker, compiled_networks
from trainer.builder import build_trainer, run_training
from trainer.data import StepBatch, TrainingData
from trainer.distributed import DistributedContext
from trainer.options import TrainOptions, read_config
from utils.errors import CodecError

REPO = Path(__file__).resolve().parent.parent
GEOMETRY = {"fft_sizes": [64], "hop_sizes": [16], "win_lengths": [64]}


def built_trainer(config: dict) -> GANTrainer:
    """The trainer of ``config`` for one CPU process, built in a folder removed afterwards."""
    context = DistributedContext()
    with tempfile.TemporaryDirectory() as expdir:
        return build_trainer(config, context, expdir, 0, data=TrainingData(config, context, 0))


def test_codebook_options_and_waveform_losses_train_and_log(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = tiny_recipe(
        tmp_path, use_complex_stft_loss=True, lambda_complex_stft_loss=1.0, complex_stft_loss_params=GEOMETRY,
        use_phase_loss=True, lambda_phase_loss=0.1, phase_loss_params=GEOMETRY,
        use_time_l1_loss=True, lambda_time_l1_loss=10.0,
    )  # fmt: skip
    config["generator_params"].update(kmeans_init=True, kmeans_iters=5, threshold_ema_dead_code=0.5)
    expdir = train(config, tmp_path, "options")
    state = torch.load(expdir / "checkpoint-4steps.pkl", map_location="cpu", weights_only=True)
    for key, tensor in state["model"]["generator"].items():
        assert torch.isfinite(tensor).all(), key
    events = EventAccumulator(str(expdir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    scalars = events.Tags()["scalars"]
    for name in ("train/complex_stft_loss", "train/phase_loss", "train/time_l1_loss", "eval/time_l1_loss",
                 "train/batch_perplexity_0", "train/ppl_0", "train/codes_in_use_0", "train/code_entropy_bits_1"):
        assert name in scalars, name
        assert all(np.isfinite(event.value) for event in events.Scalars(name)), name
    # 2 crops of 160 samples = 40 vectors per step: at most 16 codes, at least one in use.
    assert all(1 <= event.value <= 16 for event in events.Scalars("train/codes_in_use_0"))
    assert all(0 <= event.value <= 4 for event in events.Scalars("train/code_entropy_bits_0"))


def test_the_light_adversarial_config_trains_a_step() -> None:
    config = read_config(REPO / "config" / "autoencoder" / "demo_48000_hop300_lightdisc.yaml")
    config.update(batch_length=1200, adv_batch_length=1200)
    torch.manual_seed(0)
    trainer = built_trainer(config)
    trainer.steps = config["start_steps"]["discriminator"]
    assert trainer.discriminator_active()
    before = {name: tensor.clone() for name, tensor in trainer.discriminator.state_dict().items()}
    audio = 0.1 * torch.randn(2, 1, 1200, generator=torch.Generator().manual_seed(0))
    trainer.train_step(StepBatch(audio, 2))
    losses = trainer.train_losses.means()
    for name in ("train/discriminator_loss", "train/adversarial_loss", "train/feature_matching_loss"):
        assert np.isfinite(losses[name]), name
    after = trainer.discriminator.state_dict()
    assert any(not torch.equal(after[name], tensor) for name, tensor in before.items())
    parameters = sum(parameter.numel() for parameter in trainer.discriminator.parameters())
    assert 4e6 < parameters < 8e6  # the recipes' discriminators hold 70.7 M


def _delayed_copy_losses(tmp_path: Path, delay: int, model_delay: int) -> dict[str, float]:
    """Each loss of one generator pass, with ``output_delay: delay``, of a generator whose output is
    its input delayed by ``model_delay`` samples."""
    config = tiny_recipe(tmp_path, use_time_l1_loss=True, lambda_time_l1_loss=1.0, use_complex_stft_loss=True,
                         lambda_complex_stft_loss=1.0, complex_stft_loss_params=GEOMETRY, output_delay=delay,
                         start_steps={"generator": 0, "discriminator": 0})  # fmt: skip
    torch.manual_seed(0)
    trainer = built_trainer(config)

    def delayed_copy(inputs, losses, prefix, training):
        shifted = torch.nn.functional.pad(inputs, (model_delay, 0))[..., : inputs.shape[-1]]
        return shifted + 0.0 * sum(p.sum() for p in trainer.generator.parameters()), 0.0

    trainer.generate = delayed_copy
    losses = LossTracker()
    audio = 0.1 * torch.randn(2, 1, 160, generator=torch.Generator().manual_seed(1))
    trainer.generator_loss(audio, audio, True, losses, "train")
    return losses.means()


def test_an_output_delay_makes_the_losses_compare_the_output_with_the_delayed_input(tmp_path: Path) -> None:
    aligned = _delayed_copy_losses(tmp_path, delay=24, model_delay=24)
    for name in ("mel_loss", "log_stft_magnitude_loss", "complex_stft_loss", "time_l1_loss", "feature_matching_loss"):
        assert aligned[f"train/{name}"] == pytest.approx(0.0, abs=1e-6), name
    unaligned = _delayed_copy_losses(tmp_path, delay=0, model_delay=24)
    assert unaligned["train/time_l1_loss"] > 0.01 and unaligned["train/complex_stft_loss"] > 0.01


@pytest.mark.parametrize("delay, message", [
    (160, "output_delay 160 leaves nothing of the batch_length 160 crops to compare: make it shorter than the crops"),
    (-3, "output_delay -3 is not a whole number of samples >= 0: fix the config"),
    (100, "batch_length 160 less the output_delay of 100 is too short for the mel loss's FFT of 128 samples"),
])  # fmt: skip
def test_a_bad_output_delay_is_one_error(tmp_path: Path, delay: int, message: str) -> None:
    with pytest.raises(CodecError) as caught:
        built_trainer(tiny_recipe(tmp_path, output_delay=delay))
    assert str(caught.value).startswith(message)


@pytest.mark.slow
@pytest.mark.parametrize("micro_batch", [None, 1])
def test_compiled_training_steps_match_eager_ones(tmp_path: Path, micro_batch: int | None) -> None:
    # Two metric-loss steps: the compiled generator must train as the eager one, EMA codebooks included
    # (Inductor once computed their in-place update wrongly: layers/vq.py keeps it eager); in
    # micro-batches too, where the codebooks' statistics are summed by hooks around each codebook.
    schedule = dict(train_max_steps=2, adv_train_max_steps=None, start_steps={"generator": 0, "discriminator": 100})

    def run(config: dict, tag: str) -> Path:
        recipe = save_recipe(config, tmp_path / f"{tag}.yaml")
        return run_training(TrainOptions(config=recipe, tag=tag, exp_root=str(tmp_path / "exp"), seed=7,
                                         micro_batch=micro_batch))  # fmt: skip

    if micro_batch:
        # Adam's first step moves a weight by +-lr however small its gradient: one that rounds to the
        # other sign in a micro-batch's sum lands 2 lr away. The weights stay put; the codebooks,
        # which the hooks update, are compared.
        schedule["generator_optimizer_params"] = {"lr": 0.0, "betas": [0.5, 0.9], "weight_decay": 0.0}
    skip_without_cpp_compiler()
    eager = run(tiny_recipe(tmp_path, **schedule), "eager")
    compiled = run(tiny_recipe(tmp_path, compile=True, **schedule), "compiled")
    expected, state = (torch.load(folder / "checkpoint-2steps.pkl", map_location="cpu", weights_only=True)
                       for folder in (eager, compiled))
    assert yaml.safe_load((compiled / "config.yml").read_text())["compile"] is True
    assert set(state["model"]["generator"]) == set(expected["model"]["generator"])
    for key, tensor in expected["model"]["generator"].items():
        torch.testing.assert_close(state["model"]["generator"][key], tensor, rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.parametrize("setting, device, networks", [
    (True, "cpu", ("generator",)),
    (True, "cuda", ("generator", "discriminator")),
    ("all", "cpu", ("generator", "discriminator")),
    ("generator", "cuda", ("generator",)),
    (False, "cuda", ()),
    (None, "cpu", ()),
])  # fmt: skip
def test_compile_leaves_the_discriminators_eager_on_the_cpu_unless_told(
    tmp_path: Path, setting: bool | str | None, device: str, networks: tuple[str, ...]
) -> None:
    if device == "cpu" and networks:
        skip_without_cpp_compiler()
    assert compiled_networks(setting, torch.device(device)) == networks
    if device == "cpu":  # the trainer compiles those networks and leaves the others as they are
        trainer = built_trainer(tiny_recipe(tmp_path, compile=setting))
        assert trainer.compiled == networks
        for name in ("generator", "discriminator"):
            assert (getattr(trainer, name)._compiled_call_impl is not None) == (name in networks), name


def test_a_bad_compile_setting_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(CodecError) as caught:
        built_trainer(tiny_recipe(tmp_path, compile="discriminator"))
    assert str(caught.value) == "compile: 'discriminator' is not one of true, false, generator, all"
    recipe = save_recipe(tiny_recipe(tmp_path), tmp_path / "tiny.yaml")
    command = [sys.executable, str(REPO / "codecTrain.py"), "-c", recipe, "--tag", "bad",
               "--exp_root", str(tmp_path / "exp"), "--compile", "everything"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2 and not (tmp_path / "exp").exists()
    assert result.stderr == ("error: argument --compile: 'everything' is not one of generator, all: see codecTrain.py "
                             "--help\n")


def test_compile_on_a_cpu_without_a_cpp_compiler_is_one_error_before_training(tmp_path: Path) -> None:
    """Inductor builds torch.compile's CPU kernels with g++ (or $CXX); a machine with only gcc would
    fail inside the first step: the run stops before it, with one line, and leaves no folder."""
    recipe = save_recipe(tiny_recipe(tmp_path), tmp_path / "tiny.yaml")
    command = [sys.executable, str(REPO / "codecTrain.py"), "-c", recipe, "--tag", "nocxx",
               "--exp_root", str(tmp_path / "exp"), "--compile", "generator"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, "CXX": str(tmp_path / "no-such-g++")})  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: compile on the CPU needs a C++ compiler for torch.compile's kernels (g++, or set "
                      "CXX): install g++ (bash utils/system_deps.sh), or train without compile"], result.stderr
    assert not (tmp_path / "exp" / "nocxx").exists()


def test_the_vocoders_analyzer_codes_in_fp32_under_bf16_training(tmp_path: Path) -> None:
    """--precision bf16 autocasts the vocoder's pass, not the frozen analyzer's: the vocoder learns from the
    codes inference sends (under autocast the analyzer picked other codes for many frames)."""
    from tests.test_trainer import cpu_autocast_works, tiny_vocoder_recipe, untrained_checkpoint
    from trainer.analysis import quantized_latent

    reason = cpu_autocast_works(torch.bfloat16)
    if reason:
        pytest.skip(reason)
    analyzer = untrained_checkpoint(tiny_recipe(tmp_path), tmp_path / "analyzer")
    np.save(tmp_path / "stats.npy", np.ones((2, 8), np.float32))
    config = {**tiny_vocoder_recipe(tmp_path, analyzer, str(tmp_path / "stats.npy")), "precision": "bf16"}
    trainer = built_trainer(config)
    fed = []
    trainer.generator.register_forward_pre_hook(lambda module, args: fed.append(args[0]))
    audio = torch.randn(2, 1, 800) * 0.3
    with trainer.autocast():
        trainer.generate(audio, LossTracker(), "train", training=False)
    expected = quantized_latent(trainer.analyzer, audio)
    assert fed[0].dtype == torch.float32 and torch.equal(fed[0], expected)


def test_the_generator_loss_is_each_term_times_its_lambda(tmp_path: Path) -> None:
    """On a fixed batch with each loss stubbed to a constant, the generator's loss is the sum of lambda x
    term: the metric losses, lambda_vq_loss x the sum over the codebooks, and lambda_adv x (adversarial
    + lambda_feat_match x feature matching)."""
    config = tiny_recipe(tmp_path, lambda_mel_loss=3.0, lambda_stft_loss=5.0, lambda_shape_loss=7.0,
                         lambda_adv=1.5, lambda_feat_match=2.0, lambda_vq_loss=0.5)  # fmt: skip
    torch.manual_seed(0)
    trainer = built_trainer(config)
    terms = {"mel": 0.5, "stft": (0.25, 0.125), "shape": 0.0625, "generator_adv": 0.75, "feat_match": 1.5}
    for name, value in terms.items():
        constant = tuple(map(torch.tensor, value)) if isinstance(value, tuple) else torch.tensor(value)
        trainer.criteria[name] = lambda *outputs, constant=constant: constant
    vq_losses = torch.tensor([0.25, 1.0])
    trainer.generator_ddp = lambda inputs: (inputs.clone(), None, None, vq_losses, torch.tensor([3.0, 4.0]))
    losses = LossTracker()
    audio = 0.1 * torch.randn(2, 1, 160, generator=torch.Generator().manual_seed(1))
    loss = trainer.generator_loss(audio, audio, True, losses, "train")
    expected = 3.0 * 0.5 + 5.0 * (0.25 + 0.125) + 7.0 * 0.0625 + 0.5 * (0.25 + 1.0) + 1.5 * (0.75 + 2.0 * 1.5)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    logged = losses.means()
    assert logged["train/vqloss"] == pytest.approx(0.625) and logged["train/feature_matching_loss"] == 1.5
    assert logged["train/adversarial_loss"] == pytest.approx(1.5 * (0.75 + 2.0 * 1.5))
