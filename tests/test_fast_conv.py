"""trainer/fast_conv.py: the rerouted convolutions compute nn.Conv1d's values and gradients in both
forms (blocked and time-major), only plain layers are rerouted, time-major layers hand each other
time-major activations, and a training run with ``fast_conv`` learns the default run's weights to
rounding in either form."""

from __future__ import annotations

import copy
import logging
import re
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import trainer.base
from layers.conv import CausalConv1d, CausalConvTranspose1d, Conv1d1x1, NonCausalConv1d
from layers.layout import is_channels_last
from layers.weight_norm import apply_weight_norm
from models.autoencoder.AudioDec import Generator as AudioDec
from models.vocoder.HiFiGAN import Generator as HiFiGAN
from models.vocoder.modules.discriminator import HiFiGANDiscriminator
from tests.conftest import skip_without_cpp_compiler
from tests.test_trainer import TINY_AUTOENCODER, tiny_recipe, train
from trainer.fast_conv import use_fast_convolutions


def assert_computes_as(fast: nn.Module, reference: nn.Module, x: torch.Tensor) -> None:
    """``fast(x)`` equals ``reference(x)`` in value, input gradient and parameter gradients (float64). Of a
    tuple of outputs (a generator's), the first."""
    x.requires_grad_()

    def first(output: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
        return output[0] if isinstance(output, tuple) else output

    expected = first(reference(x))
    grad = torch.randn_like(expected)
    expected.backward(grad)
    expected_x_grad, x.grad = x.grad, None
    output = first(fast(x))
    output.backward(grad)
    torch.testing.assert_close(output, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(x.grad, expected_x_grad, rtol=0, atol=1e-12)
    for (name, parameter), expected_parameter in zip(fast.named_parameters(), reference.parameters()):
        torch.testing.assert_close(parameter.grad, expected_parameter.grad, rtol=1e-12, atol=1e-12, msg=name)


@pytest.mark.parametrize("channels, frames, kernel, dilation, padding, bias, taken", [
    (8, 101, 7, 3, 0, True, "phase_gradient"),    # a length that is not a multiple of the dilation
    (8, 100, 7, 9, 0, False, "phase_gradient"),
    (16, 57, 3, 2, 2, True, "phase_gradient"),    # padded inside the layer
    (6, 50, 1, 1, 0, True, "pointwise"),
    (6, 50, 1, 1, 0, False, "pointwise"),
])  # fmt: skip
def test_a_rerouted_convolution_computes_conv1d_values_and_gradients(
    channels: int, frames: int, kernel: int, dilation: int, padding: int, bias: bool, taken: str
) -> None:
    torch.manual_seed(0)
    reference = nn.Conv1d(channels, channels + 2, kernel, dilation=dilation, padding=padding, bias=bias).double()
    apply_weight_norm(reference)
    fast = nn.Conv1d(channels, channels + 2, kernel, dilation=dilation, padding=padding, bias=bias).double()
    apply_weight_norm(fast)
    fast.load_state_dict(reference.state_dict())
    assert use_fast_convolutions(fast) == {"phase_gradient": 0, "pointwise": 0, taken: 1}
    assert fast.state_dict().keys() == reference.state_dict().keys()

    assert_computes_as(fast, reference, torch.randn(3, channels, frames, dtype=torch.float64))


def test_only_plain_conv1d_layers_are_rerouted() -> None:
    class Shifted(nn.Conv1d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) + 1.0

    model = nn.ModuleDict({
        "dilated": CausalConv1d(16, 16, 7, dilation=3),              # rerouted: 16 x 7 inputs per output
        "pointwise": Conv1d1x1(16, 32),                                  # rerouted
        "wide_dilated": nn.Conv1d(128, 128, 7, dilation=9),            # im2col is as fast there
        "undilated": nn.Conv1d(16, 16, 7),
        "strided": nn.Conv1d(16, 16, 4, stride=2),
        "grouped": nn.Conv1d(16, 16, 3, dilation=2, groups=4),
        "own_forward": Shifted(16, 16, 1),
        "transposed": nn.ConvTranspose1d(16, 16, 4, stride=2),
    })  # fmt: skip
    before = {name: type(module).forward for name, module in model.items()}
    time_major = copy.deepcopy(model)
    assert use_fast_convolutions(model) == {"phase_gradient": 1, "pointwise": 1}
    rerouted = {name for name, module in model.named_modules() if "forward" in vars(module)}
    assert rerouted == {"dilated.conv", "pointwise"}
    assert all(type(module).forward is before[name] for name, module in model.items())

    time_major["hooked"] = nn.Conv1d(16, 16, 3)
    time_major["hooked"].register_forward_hook(lambda module, inputs, output: output + 1.0)
    assert use_fast_convolutions(time_major, time_major=True) == {"time_major": 7}
    rerouted = {name for name, module in time_major.named_modules() if "forward" in vars(module)}
    assert rerouted == {"dilated", "dilated.conv", "pointwise", "wide_dilated", "undilated", "strided", "grouped",
                        "transposed"}  # fmt: skip


@pytest.mark.parametrize("make", [
    lambda: CausalConv1d(8, 10, 7, dilation=3),
    lambda: CausalConv1d(8, 10, 6, stride=3),                      # a downsampling layer
    lambda: NonCausalConv1d(8, 10, 5, dilation=2, groups=2),       # padded inside the nn.Conv1d
    lambda: Conv1d1x1(8, 10),
    lambda: CausalConvTranspose1d(8, 10, 8, 4),                    # replicate padding, cropped output
    lambda: nn.ConvTranspose1d(8, 10, 4, stride=2, padding=1, output_padding=1),
], ids=["dilated", "strided", "noncausal_grouped", "pointwise", "causal_transposed", "transposed"])  # fmt: skip
def test_a_time_major_layer_computes_the_stock_layers_values_and_gradients(make) -> None:
    torch.manual_seed(0)
    reference = make().double()
    apply_weight_norm(reference)
    fast = make().double()
    apply_weight_norm(fast)
    fast.load_state_dict(reference.state_dict())
    assert use_fast_convolutions(fast, time_major=True) == {"time_major": 1}
    assert fast.state_dict().keys() == reference.state_dict().keys()

    assert_computes_as(fast, reference, torch.randn(3, 8, 60, dtype=torch.float64))


def test_time_major_layers_hand_each_other_time_major_activations() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        CausalConv1d(1, 16, 7), nn.ELU(), CausalConv1d(16, 16, 7, dilation=3), nn.ELU(), Conv1d1x1(16, 32),
        CausalConv1d(32, 8, 4, stride=2), CausalConvTranspose1d(8, 4, 4, 2),
    )  # fmt: skip
    use_fast_convolutions(model, time_major=True)
    x = torch.randn(2, 1, 64)
    for layer in model:
        x = layer(x)
        assert is_channels_last(x) and x.stride(2) == x.shape[1], f"{type(layer).__name__}: {x.stride()}"


@pytest.mark.parametrize("model, frames", [
    ("autoencoder", (2, 1, 160)),
    ("vocoder", (2, 8, 20)),
])  # fmt: skip
def test_time_major_generators_compute_the_stock_generators_output_and_gradients(
    model: str, frames: tuple[int, ...]
) -> None:
    torch.manual_seed(0)
    if model == "autoencoder":
        reference = AudioDec(**TINY_AUTOENCODER["generator_params"])
    else:
        reference = HiFiGAN(
            in_channels=8, channels=8, kernel_size=7, upsample_scales=[4, 2], upsample_kernel_sizes=[8, 4],
            resblock_kernel_sizes=[3], resblock_dilations=[[1, 3]], groups=2, use_additional_convs=True,
        )  # fmt: skip
    reference = reference.double().eval()  # eval: the codebooks stay as they are
    fast = copy.deepcopy(reference)
    assert use_fast_convolutions(fast, time_major=True)["time_major"] > 0
    assert_computes_as(fast, reference, torch.randn(frames, dtype=torch.float64))


def test_time_major_discriminators_compute_the_stock_discriminators_values_and_gradients() -> None:
    """Under bf16 the discriminators run time-major too: the scale discriminators' grouped 1-D layers and
    the period discriminators' (k, 1) 2-D layers (weight-normalized), channels last."""
    torch.manual_seed(0)
    reference = HiFiGANDiscriminator(**TINY_AUTOENCODER["discriminator_params"]).double()
    fast = copy.deepcopy(reference)
    convolutions = sum(isinstance(module, (nn.Conv1d, nn.Conv2d)) for module in reference.modules())
    assert use_fast_convolutions(fast, time_major=True) == {"time_major": convolutions}
    assert fast.state_dict().keys() == reference.state_dict().keys()
    x = torch.randn(2, 1, 300, dtype=torch.float64, requires_grad=True)

    def flat(outputs: list) -> list[torch.Tensor]:
        return [tensor for layers in outputs for tensor in layers]

    expected = flat(reference(x))
    weights = [torch.randn_like(tensor) for tensor in expected]
    sum((tensor * weight).sum() for tensor, weight in zip(expected, weights)).backward()
    expected_x_grad, x.grad = x.grad, None
    outputs = flat(fast(x))
    assert any(tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last)
               and not tensor.is_contiguous() for tensor in outputs)  # fmt: skip
    sum((tensor * weight).sum() for tensor, weight in zip(outputs, weights)).backward()
    for output, tensor in zip(outputs, expected):
        torch.testing.assert_close(output, tensor, rtol=0, atol=1e-12)
    torch.testing.assert_close(x.grad, expected_x_grad, rtol=0, atol=1e-12)
    for (name, parameter), expected_parameter in zip(fast.named_parameters(), reference.parameters()):
        torch.testing.assert_close(parameter.grad, expected_parameter.grad, rtol=1e-12, atol=1e-12, msg=name)


def test_bf16_training_with_time_major_fast_conv_routes_the_discriminators_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    schedule = dict(train_max_steps=1, adv_train_max_steps=None, start_steps={"generator": 0, "discriminator": 0})
    monkeypatch.setattr(trainer.base, "time_major_suits", lambda: True)
    with caplog.at_level(logging.INFO, logger="trainer.base"):
        fast = train(tiny_recipe(tmp_path, fast_conv=True, precision="bf16", **schedule), tmp_path, "fast_bf16")
    lines = "\n".join(record.getMessage() for record in caplog.records if record.getMessage().startswith("fast_conv:"))
    discriminator = HiFiGANDiscriminator(**TINY_AUTOENCODER["discriminator_params"])
    convolutions = sum(isinstance(module, (nn.Conv1d, nn.Conv2d)) for module in discriminator.modules())
    assert re.search(rf"\d+ generator and {convolutions} discriminator convolutions time-major", lines), lines
    state = torch.load(fast / "checkpoint-1steps.pkl", map_location="cpu", weights_only=True)
    assert all(torch.isfinite(tensor).all() for tensor in state["model"]["discriminator"].values())


@pytest.mark.parametrize("time_major, compile", [(False, False), (True, False), (True, True)],
                         ids=["blocked", "time_major", "time_major_compiled"])  # fmt: skip
def test_training_with_fast_conv_learns_the_default_runs_weights_to_rounding(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, time_major: bool, compile: bool
) -> None:
    if compile:
        skip_without_cpp_compiler()
    schedule = dict(train_max_steps=2, adv_train_max_steps=None, start_steps={"generator": 0, "discriminator": 100})
    default = train(tiny_recipe(tmp_path, **schedule), tmp_path, "default")
    monkeypatch.setattr(trainer.base, "time_major_suits", lambda: time_major)
    with caplog.at_level(logging.INFO, logger="trainer.base"):
        fast = train(tiny_recipe(tmp_path, fast_conv=True, compile=compile, **schedule), tmp_path, "fast")
    lines = "\n".join(record.getMessage() for record in caplog.records if record.getMessage().startswith("fast_conv:"))
    if time_major:
        (generator,) = re.findall(r"(\d+) generator convolutions time-major", lines)
        assert int(generator) > 0, lines
    else:
        rerouted = [int(count) for count in re.findall(r"(\d+) (?:dilated|pointwise)", lines)]
        assert len(rerouted) == 2 and min(rerouted) > 0 and "time-major" not in lines, lines
    assert yaml.safe_load((fast / "config.yml").read_text())["fast_conv"] is True
    assert yaml.safe_load((default / "config.yml").read_text())["fast_conv"] is False
    expected, state = (torch.load(folder / "checkpoint-2steps.pkl", map_location="cpu", weights_only=True)
                       for folder in (default, fast))  # fmt: skip
    assert set(state["model"]["generator"]) == set(expected["model"]["generator"])
    for key, tensor in expected["model"]["generator"].items():
        torch.testing.assert_close(state["model"]["generator"][key], tensor, rtol=1e-4, atol=1e-5, msg=key)
