"""trainer/fast_conv.py: the rerouted convolutions compute nn.Conv1d's values and gradients, only plain
Conv1d layers are rerouted, and a training run with ``fast_conv`` learns the default run's weights to
rounding."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from layers.conv import CausalConv1d, Conv1d1x1
from layers.weight_norm import apply_weight_norm
from tests.test_trainer import tiny_recipe, train
from trainer.fast_conv import use_fast_convolutions


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

    x = torch.randn(3, channels, frames, dtype=torch.float64, requires_grad=True)
    expected = reference(x)
    grad = torch.randn_like(expected)
    expected.backward(grad)
    expected_x_grad, x.grad = x.grad, None
    output = fast(x)
    output.backward(grad)
    torch.testing.assert_close(output, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(x.grad, expected_x_grad, rtol=0, atol=1e-12)
    for (name, parameter), expected_parameter in zip(fast.named_parameters(), reference.parameters()):
        torch.testing.assert_close(parameter.grad, expected_parameter.grad, rtol=1e-12, atol=1e-12, msg=name)


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
    assert use_fast_convolutions(model) == {"phase_gradient": 1, "pointwise": 1}
    rerouted = {name for name, module in model.named_modules() if "forward" in vars(module)}
    assert rerouted == {"dilated.conv", "pointwise"}
    assert all(type(module).forward is before[name] for name, module in model.items())


def test_training_with_fast_conv_learns_the_default_runs_weights_to_rounding(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    schedule = dict(train_max_steps=2, adv_train_max_steps=None, start_steps={"generator": 0, "discriminator": 100})
    default = train(tiny_recipe(tmp_path, **schedule), tmp_path, "default")
    with caplog.at_level(logging.INFO, logger="trainer.base"):
        fast = train(tiny_recipe(tmp_path, fast_conv=True, **schedule), tmp_path, "fast")
    (line,) = [record.getMessage() for record in caplog.records if record.getMessage().startswith("fast_conv:")]
    rerouted = [int(count) for count in re.findall(r"(\d+) (?:dilated|pointwise)", line)]
    assert len(rerouted) == 2 and min(rerouted) > 0, line
    assert yaml.safe_load((fast / "config.yml").read_text())["fast_conv"] is True
    assert yaml.safe_load((default / "config.yml").read_text())["fast_conv"] is False
    expected, state = (torch.load(folder / "checkpoint-2steps.pkl", map_location="cpu", weights_only=True)
                       for folder in (default, fast))  # fmt: skip
    assert set(state["model"]["generator"]) == set(expected["model"]["generator"])
    for key, tensor in expected["model"]["generator"].items():
        torch.testing.assert_close(state["model"]["generator"][key], tensor, rtol=1e-4, atol=1e-5, msg=key)
