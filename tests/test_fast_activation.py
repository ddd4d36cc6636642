"""trainer/fast_activation.py: the native engine's ELU and LeakyReLU (and the padding they write)
against ATen's, in both activation layouts, and the generators they are routed into against the stock
ones."""

from __future__ import annotations

import copy
import logging
import re
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

import trainer.base
from models.autoencoder.AudioDec import Generator as AudioDec
from models.autoencoder.modules.residual_unit import ResidualUnit
from models.vocoder.HiFiGAN import Generator as HiFiGAN
from models.vocoder.modules.residual_block import HiFiGANResidualBlock, MultiGroupConv1d
from tests.test_trainer import TINY_AUTOENCODER, tiny_recipe, train
from trainer import fast_activation
from trainer.fast_activation import native_elu, native_leaky_relu, use_native_activations
from trainer.fast_conv import use_fast_convolutions
from utils.runtime import native_build

pytestmark = pytest.mark.skipif(
    not native_build.available(), reason="no native engine: " + native_build.unavailable_reason()
)


def time_major(x: torch.Tensor) -> torch.Tensor:
    """x stored (B, T, C) in memory, as a time-major convolution returns it."""
    return x.transpose(1, 2).contiguous().transpose(1, 2)


def reference_elu(x: torch.Tensor, alpha: float, lead: int) -> torch.Tensor:
    return F.pad(F.elu(x, alpha), (lead, 0))


@pytest.mark.parametrize("cropped", [False, True], ids=["dense", "cropped"])
@pytest.mark.parametrize("layout", ["channel_major", "time_major"])
@pytest.mark.parametrize("shape, alpha, lead", [
    ((2, 3, 37), 1.0, 0),     # rows shorter than a vector, a tail in each
    ((2, 3, 37), 1.0, 6),
    ((3, 5, 5000), 0.5, 18),  # rows of more than one piece of work, and more than one thread's share
    ((1, 1, 1), 1.0, 2),
    ((2, 4, 1), 1.0, 3),      # one frame: both layouts at once
])  # fmt: skip
def test_native_elu_computes_atens_values_and_gradients(
    layout: str, cropped: bool, shape: tuple[int, ...], alpha: float, lead: int
) -> None:
    torch.manual_seed(0)
    batch, channels, frames = shape
    x = 4 * torch.randn(batch, channels, frames + 3 * cropped)
    x[0, 0, 0] = 0.0  # the kink: ELU's derivative there is alpha, as ATen takes it
    if layout == "time_major":
        x = time_major(x)
    x = x[..., :frames].requires_grad_()  # cropped: a transposed convolution's output is such a view
    y = native_elu(x, alpha, lead)
    assert type(y.grad_fn).__name__ == "_NativeActivationBackward"
    assert y.shape == (batch, channels, lead + frames)
    if channels > 1 and frames > 1:
        assert y.transpose(1, 2).is_contiguous() if layout == "time_major" else y.is_contiguous()
    else:  # the two layouts of x coincide
        assert y.transpose(1, 2).is_contiguous() or y.is_contiguous()
    exact = x.detach().double().requires_grad_()
    expected = reference_elu(exact, alpha, lead)
    torch.testing.assert_close(y.double(), expected, rtol=2.5e-7, atol=1e-30)  # about 1 ulp, zeros exact
    assert torch.all(y[..., :lead] == 0)

    grad = torch.randn(y.shape, dtype=torch.float64)
    y.backward(grad.float())
    expected.backward(grad)
    if not cropped:  # a cropped leaf's gradient is stored contiguous whatever the layout it came in
        assert x.grad.stride() == x.stride()
    # From the output: out + alpha loses what out rounded away, about an ulp of alpha times the gradient.
    torch.testing.assert_close(x.grad.double(), exact.grad, rtol=3e-7, atol=1.2e-7 * alpha * grad.abs().max().item())
    assert x.grad[0, 0, 0] == pytest.approx(alpha * grad[0, 0, lead].item(), rel=1e-6)


@pytest.mark.parametrize("layout", ["channel_major", "time_major"])
def test_bfloat16_activations_round_as_atens(layout: str) -> None:
    torch.manual_seed(0)
    x = (4 * torch.randn(4, 8, 3001)).bfloat16()
    if layout == "time_major":
        x = time_major(x)
    x.requires_grad_()
    y = native_elu(x, 1.0, 6)
    exact = x.detach().float().requires_grad_()
    expected = reference_elu(exact, 1.0, 6)
    assert y.dtype == torch.bfloat16
    assert y.transpose(1, 2).is_contiguous() if layout == "time_major" else y.is_contiguous()
    # The float32 result rounded to nearest even, or its neighbour where the two straddle a boundary.
    ulps = (y.view(torch.int16).int() - expected.bfloat16().view(torch.int16).int()).abs()
    assert ulps.max() <= 1 and (ulps == 0).float().mean() > 0.99
    grad = torch.randn(y.shape).bfloat16()
    y.backward(grad)
    expected.backward(grad.float())
    # From the bfloat16 output: about one bfloat16 ulp of alpha times the gradient, at most.
    torch.testing.assert_close(x.grad.float(), exact.grad, rtol=2**-8, atol=2**-8 * grad.abs().max().item())


def test_a_gradient_in_the_other_layout_is_taken_as_it_comes() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 4, 50, requires_grad=True)
    y = native_elu(x, 1.0, 3)
    grad = time_major(torch.randn(y.shape))
    y.backward(grad)
    exact = x.detach().requires_grad_()
    reference_elu(exact, 1.0, 3).backward(grad)
    torch.testing.assert_close(x.grad, exact.grad, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", ["float16", "strided", "float64"])
def test_tensors_the_engine_cannot_take_go_through_aten(case: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 40)
    x = {"float16": x.half(), "strided": x[..., ::2], "float64": x.double()}[case]
    y = native_elu(x, 1.0, 4)
    assert y.dtype == x.dtype
    torch.testing.assert_close(y, reference_elu(x, 1.0, 4), rtol=0, atol=0)


def test_the_engine_unavailable_leaves_the_model_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    model = AudioDec(**TINY_AUTOENCODER["generator_params"])
    monkeypatch.setattr(fast_activation.native_build, "available", lambda: False)
    assert not any(use_native_activations(model).values())
    assert all("forward" not in vars(module) for module in model.modules())


def test_only_stock_elus_are_routed() -> None:
    hooked = ResidualUnit(4, 4, dilation=3)
    hooked.conv1.register_forward_hook(lambda *args: None)
    model = nn.Sequential(ResidualUnit(4, 4, dilation=3), hooked, nn.ELU(), nn.ELU(inplace=True), nn.ELU(alpha=-1.0),
                          ResidualUnit(4, 4, mode="noncausal"))  # fmt: skip
    # hooked's and the non-causal unit's ELU are routed alone
    assert use_native_activations(model) == {"residual_units": 1, "residual_blocks": 0, "elu": 3, "leaky_relu": 0}
    routed = [name for name, module in model.named_modules() if "forward" in vars(module)]
    assert routed == ["0", "1.activation", "2", "5.activation"]


@pytest.mark.parametrize("convolutions", ["stock", "blocked", "time_major"])
def test_a_generator_with_native_elus_computes_the_stock_ones_output_and_gradients(
    monkeypatch: pytest.MonkeyPatch, convolutions: str
) -> None:
    torch.manual_seed(0)
    reference = AudioDec(**TINY_AUTOENCODER["generator_params"]).eval()  # eval: the codebooks stay as they are
    fast = copy.deepcopy(reference)
    if convolutions != "stock":
        use_fast_convolutions(fast, time_major=convolutions == "time_major")
    units = sum(isinstance(module, ResidualUnit) for module in fast.modules())
    assert use_native_activations(fast) == {"residual_units": units, "residual_blocks": 0, "elu": 0, "leaky_relu": 0}
    assert units > 0
    x = torch.randn(2, 1, 300)
    expected = reference(x.clone().requires_grad_())[0]

    def refused(*args, **kwargs):
        raise AssertionError("an ELU of the generator went through ATen")

    # Every ELU runs natively, the decoder's on its transposed convolutions' cropped outputs too.
    monkeypatch.setattr(fast_activation, "F", types.SimpleNamespace(elu=refused))
    monkeypatch.setattr(fast_activation, "pad_time", refused)
    output = fast(x.clone().requires_grad_())[0]
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-6)
    grad = torch.randn_like(expected)
    expected.backward(grad)
    output.backward(grad)
    for (name, parameter), expected_parameter in zip(fast.named_parameters(), reference.parameters()):
        torch.testing.assert_close(parameter.grad, expected_parameter.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_training_with_fast_conv_logs_the_native_elus(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    schedule = dict(train_max_steps=1, adv_train_max_steps=None, start_steps={"generator": 0, "discriminator": 100})
    with caplog.at_level(logging.INFO, logger="trainer.base"):
        folder = train(tiny_recipe(tmp_path, fast_conv=True, **schedule), tmp_path, "fast")
    lines = "\n".join(record.getMessage() for record in caplog.records)
    generator = AudioDec(**TINY_AUTOENCODER["generator_params"])
    units = sum(isinstance(module, ResidualUnit) for module in generator.modules())
    assert re.search(rf"the activations of {units} residual units and 0 residual blocks .* on the native engine",
                     lines), lines  # fmt: skip
    assert yaml.safe_load((folder / "config.yml").read_text())["fast_conv"] is True


def test_without_the_engine_fast_conv_says_why_the_elus_stay(tmp_path, caplog, monkeypatch) -> None:
    monkeypatch.setattr(trainer.base.native_build, "available", lambda: False)
    monkeypatch.setattr(trainer.base.native_build, "unavailable_reason", lambda: "no C compiler found")
    schedule = dict(train_max_steps=1, adv_train_max_steps=None, start_steps={"generator": 0, "discriminator": 100})
    with caplog.at_level(logging.INFO, logger="trainer.base"):
        train(tiny_recipe(tmp_path, fast_conv=True, **schedule), tmp_path, "fast")
    assert "fast_conv: activations through ATen (no C compiler found)" in caplog.text


def test_activations_on_posix_threads_equal_the_openmp_builds(openmp_less_compiler) -> None:
    """Built without OpenMP (Apple's clang) the engine's own POSIX threads compute each activation and
    its gradient: bit for bit what the OpenMP build computes, on tensors large enough for a team."""
    if native_build.build().threads != "openmp":
        pytest.skip("no OpenMP build here to compare with")
    torch.manual_seed(0)
    inputs = [time_major(4 * torch.randn(3, 32, 1001)).to(dtype) for dtype in (torch.float32, torch.bfloat16)]

    def run() -> list[torch.Tensor]:
        results = []
        for x in inputs:
            for function in (native_elu, native_leaky_relu):
                x = x.detach().requires_grad_()
                y = function(x, 0.3, 5)
                y.backward(torch.ones_like(y))
                results += [y.detach(), x.grad]
        return results

    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        expected = run()
        openmp_less_compiler()
        assert native_build.build().threads == "pthreads"
        got = run()
    finally:
        torch.set_num_threads(before)
    for tensor, reference in zip(got, expected, strict=True):
        assert torch.equal(tensor, reference)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["channel_major", "time_major", "cropped"])
@pytest.mark.parametrize("shape, lead", [((2, 3, 37), 0), ((3, 5, 5000), 10), ((2, 4, 1), 3)])
def test_native_leaky_relu_is_atens_bit_for_bit(
    layout: str, dtype: torch.dtype, shape: tuple[int, ...], lead: int
) -> None:
    """Values and gradients equal F.leaky_relu's (then padded) exactly, in float32 and bfloat16: the
    backward pass from the output picks the same branch (out > 0 exactly where x > 0)."""
    torch.manual_seed(0)
    batch, channels, frames = shape
    x = (4 * torch.randn(batch, channels, frames + 3)).to(dtype)
    x[0, 0, 0], x[-1, -1, 1 % frames] = 0.0, -0.0
    if layout == "time_major":
        x = time_major(x)
    x = x[..., :frames] if layout == "cropped" else x[..., 3:]
    x = x.detach().requires_grad_()
    y = native_leaky_relu(x, 0.1, lead)
    assert type(y.grad_fn).__name__ == "_NativeActivationBackward" and y.dtype == dtype
    reference = x.detach().clone().requires_grad_()
    expected = F.pad(F.leaky_relu(reference, 0.1), (lead, 0))
    assert torch.equal(y, expected) and torch.equal(torch.signbit(y), torch.signbit(expected))
    grad = torch.randn(expected.shape).to(dtype)
    y.backward(grad)
    expected.backward(grad)
    assert torch.equal(x.grad, reference.grad)


def test_only_stock_hifigan_blocks_pad_through_their_leaky_relu() -> None:
    hooked = HiFiGANResidualBlock(kernel_size=3, channels=4, dilations=(1, 3))
    hooked.convs2[1].register_forward_hook(lambda *args: None)
    model = nn.Sequential(
        HiFiGANResidualBlock(kernel_size=3, channels=4, dilations=(1, 3)),
        MultiGroupConv1d(channels=4, resblock_kernel_sizes=(3,), resblock_dilations=((1, 3),), groups=2),
        hooked,
        HiFiGANResidualBlock(kernel_size=3, channels=4, dilations=(1,), use_additional_convs=False,
                             nonlinear_activation="ELU", nonlinear_activation_params={}),
        nn.LeakyReLU(0.2), nn.LeakyReLU(inplace=True), nn.LeakyReLU(0.0),
    )  # fmt: skip
    counts = use_native_activations(model)
    assert counts == {"residual_units": 0, "residual_blocks": 2, "elu": 1, "leaky_relu": 2}, counts
    routed = [name for name, module in model.named_modules() if "forward" in vars(module)]
    assert routed == ["0", "1", "2.activation", "3.activation", "4"]


@pytest.mark.parametrize("groups", [1, 2], ids=["multi_receptive_field", "grouped"])
@pytest.mark.parametrize("convolutions", ["stock", "time_major"])
def test_a_vocoder_with_native_leaky_relus_computes_the_stock_ones_output_and_gradients(
    monkeypatch: pytest.MonkeyPatch, groups: int, convolutions: str
) -> None:
    torch.manual_seed(0)
    reference = HiFiGAN(
        in_channels=8, channels=8, kernel_size=7, upsample_scales=[4, 2], upsample_kernel_sizes=[8, 4],
        resblock_kernel_sizes=[3, 5] if groups == 1 else [3], resblock_dilations=[[1, 3]] * (2 if groups == 1 else 1),
        groups=groups, use_additional_convs=True,
    )  # fmt: skip
    fast = copy.deepcopy(reference)
    if convolutions == "time_major":
        use_fast_convolutions(fast, time_major=True)
    blocks = sum(type(module) in (HiFiGANResidualBlock, MultiGroupConv1d) for module in fast.modules())
    assert use_native_activations(fast) == {"residual_units": 0, "residual_blocks": blocks, "elu": 0,
                                            "leaky_relu": 2}  # fmt: skip  (before the upsamplings, the output)
    x = torch.randn(2, 8, 20)
    expected = reference(x)

    def refused(*args, **kwargs):
        raise AssertionError("a LeakyReLU of the vocoder went through ATen")

    monkeypatch.setattr(fast_activation, "F", types.SimpleNamespace(leaky_relu=refused))
    monkeypatch.setattr(fast_activation, "pad_time", refused)
    output = fast(x)
    grad = torch.randn_like(expected)
    expected.backward(grad)
    output.backward(grad)
    if convolutions == "stock":  # the same convolutions on the same inputs: bit for bit
        assert torch.equal(output, expected)
        for (name, parameter), expected_parameter in zip(fast.named_parameters(), reference.parameters()):
            assert torch.equal(parameter.grad, expected_parameter.grad), name
    else:
        torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-6)
        for (name, parameter), expected_parameter in zip(fast.named_parameters(), reference.parameters()):
            torch.testing.assert_close(parameter.grad, expected_parameter.grad, rtol=1e-4, atol=1e-5, msg=name)
