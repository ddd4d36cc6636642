"""Faster training convolutions on the CPU (the ``fast_conv`` option): the same sums as ``nn.Conv1d``,
handed to the kernels that compute them fastest.

- A dilated convolution's gradients are those of an undilated convolution over the input's
  ``dilation`` interleaved phases: on AVX2 CPUs oneDNN has a direct (JIT) kernel for the undilated
  backward pass, while the dilated one goes through im2col and a matrix product.
- A pointwise (1x1) convolution is a batched matrix product (``baddbmm``), which reads its
  ``(B, C, T)`` activations once instead of through the convolution's blocked-layout reorders.

The forward values are those of ``nn.Conv1d``; the gradients are the same sums in another order, so
they differ from the original trainer's in the last bits. The option is therefore off unless a run
asks for it, and the original recipes train as the original's trainer does.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn

# im2col pays for itself once a layer's inner dimension (in_channels x kernel_size) is this large.
PHASE_GRADIENT_MAX_INNER = 512


def _to_phases(x: torch.Tensor, dilation: int, length: int) -> torch.Tensor:
    """(B, C, T) -> (B * dilation, C, length // dilation): phase r holds x[..., r::dilation], zero-padded
    on the right to ``length`` (a multiple of ``dilation``, at least T)."""
    batch, channels, frames = x.shape
    x = F.pad(x, (0, length - frames))
    return x.view(batch, channels, length // dilation, dilation).permute(0, 3, 1, 2).reshape(
        batch * dilation, channels, length // dilation
    )


def _from_phases(x: torch.Tensor, dilation: int, frames: int) -> torch.Tensor:
    """The inverse of :func:`_to_phases`: (B * dilation, C, L) -> (B, C, frames)."""
    batch = x.shape[0] // dilation
    interleaved = x.view(batch, dilation, x.shape[1], x.shape[2]).permute(0, 2, 3, 1)
    return interleaved.reshape(batch, x.shape[1], x.shape[2] * dilation)[..., :frames]


class _PhaseGradientConv1d(torch.autograd.Function):
    """``F.conv1d(x, weight, bias, dilation=d)`` (no padding, stride 1, one group) whose backward
    pass runs as an undilated convolution over the phases of ``x``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int):
        ctx.save_for_backward(x, weight)
        ctx.dilation = dilation
        ctx.has_bias = bias is not None
        return F.conv1d(x, weight, bias, dilation=dilation)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        dilation = ctx.dilation
        length = -(-x.shape[-1] // dilation) * dilation
        phase_outputs = length // dilation - weight.shape[-1] + 1
        x_phases = _to_phases(x, dilation, length)
        grad_phases = _to_phases(grad, dilation, phase_outputs * dilation)
        wants_x, wants_weight, wants_bias = ctx.needs_input_grad[:3]
        grad_x, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad_phases, x_phases, weight, [weight.shape[0]] if ctx.has_bias else None,
            [1], [0], [1], False, [0], 1, [wants_x, wants_weight, wants_bias and ctx.has_bias],
        )  # fmt: skip
        if grad_x is not None:
            grad_x = _from_phases(grad_x, dilation, x.shape[-1])
        return grad_x, grad_weight, grad_bias, None


def _phase_gradient_forward(self: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    if self.padding[0]:
        x = F.pad(x, (self.padding[0], self.padding[0]))
    return _PhaseGradientConv1d.apply(x, self.weight, self.bias, self.dilation[0])


def _pointwise_forward(self: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    weight = self.weight[..., 0].expand(x.shape[0], -1, -1)
    if self.bias is None:
        return torch.bmm(weight, x)
    return torch.baddbmm(self.bias.view(1, -1, 1), weight, x)


def _plain(conv: nn.Conv1d) -> bool:
    return conv.stride == (1,) and conv.groups == 1 and conv.padding_mode == "zeros" and isinstance(
        conv.padding, tuple
    )


def use_fast_convolutions(model: nn.Module) -> dict[str, int]:
    """Route the eligible ``nn.Conv1d`` of ``model`` to the faster formulations (in place; parameters
    and state-dict names unchanged). Returns how many layers took each: ``{"phase_gradient": n,
    "pointwise": m}``."""
    counts = {"phase_gradient": 0, "pointwise": 0}
    for module in model.modules():
        if not isinstance(module, nn.Conv1d) or type(module).forward is not nn.Conv1d.forward or not _plain(module):
            continue
        if module.kernel_size == (1,) and module.dilation == (1,) and module.padding == (0,):
            module.forward = types.MethodType(_pointwise_forward, module)
            counts["pointwise"] += 1
        elif module.dilation[0] > 1 and module.in_channels * module.kernel_size[0] <= PHASE_GRADIENT_MAX_INNER:
            module.forward = types.MethodType(_phase_gradient_forward, module)
            counts["phase_gradient"] += 1
    return counts
