"""Faster training convolutions on the CPU (the ``fast_conv`` option): the same sums as ``nn.Conv1d``,
handed to the kernels that compute them fastest. Two forms, chosen by the CPU (:func:`time_major_suits`):

Blocked (AVX2 and other CPUs), where oneDNN works on channel blocks of ``(B, C, T)`` tensors:

- A dilated convolution's gradients are those of an undilated convolution over the input's
  ``dilation`` interleaved phases: on AVX2 CPUs oneDNN has a direct (JIT) kernel for the undilated
  backward pass, while the dilated one goes through im2col and a matrix product.
- A pointwise (1x1) convolution is a batched matrix product (``baddbmm``), which reads its
  ``(B, C, T)`` activations once instead of through the convolution's blocked-layout reorders.

Time-major (AVX-512 CPUs), for the generator: every convolution runs as a 2-D one over a
``(B, C, 1, T)`` view with its weight stored channels last, so oneDNN reads and returns time-major
activations (``(B, T, C)`` in memory) with no reorder around each layer; padding keeps that layout
and 1x1 convolutions are matrix products over ``(B * T, C)``. With AVX2 only, oneDNN's time-major
weight gradients are the slow path, hence the blocked form there. In bf16 the discriminators run
time-major too (their 2-D convolutions channels last), which pays there only (trainer.base).

The forward values are those of ``nn.Conv1d``; the gradients are the same sums in another order, so
they differ from the original trainer's in the last bits. The option is therefore off unless a run
asks for it, and the original recipes train as the original's trainer does.
"""

from __future__ import annotations

import os
import types

import torch
import torch.nn.functional as F
from torch import nn

from layers.conv import CausalConv1d, CausalConvTranspose1d
from layers.layout import cat_time, pad_time

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


def time_major_suits() -> bool:
    """Whether this CPU trains faster time-major: ATen and oneDNN both run AVX-512 kernels here."""
    onednn_isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    if not onednn_isa.startswith(("ALL", "DEFAULT", "AVX512", "AVX10")):
        return False
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def _channels_last_weight(weight: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in, H, W) stored channels last: oneDNN then computes channels last and returns a
    channels-last output, whatever the input's layout."""
    rows, height, width = weight.shape[1:]
    # Strides set by hand: with one input channel both layouts fit, and .contiguous() would keep the
    # channel-major strides, which PyTorch then reads as channel-major.
    stored = torch.empty_strided(weight.shape, (rows * height * width, 1, width * rows, rows), dtype=weight.dtype,
                                 device=weight.device)  # fmt: skip
    return stored.copy_(weight)


def _time_major_weight(weight: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in, K) -> (C_out, C_in, 1, K) stored channels last: a time-major 1-D convolution's."""
    return _channels_last_weight(weight.unsqueeze(2))


def _time_major_conv2d_forward(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    # A period discriminator's (B, C, T / period, period) maps, computed and returned channels last.
    return F.conv2d(x, _channels_last_weight(self.weight), self.bias, self.stride, self.padding, self.dilation,
                    self.groups)  # fmt: skip


def _time_major_pointwise_forward(self: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x.transpose(1, 2), self.weight[..., 0], self.bias).transpose(1, 2)


def _time_major_conv_forward(self: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    y = F.conv2d(
        x.unsqueeze(2), _time_major_weight(self.weight), self.bias,
        (1, self.stride[0]), (0, self.padding[0]), (1, self.dilation[0]), self.groups,
    )  # fmt: skip
    return y.squeeze(2)


def _time_major_deconv_forward(
    self: nn.ConvTranspose1d, x: torch.Tensor, output_size: list[int] | None = None
) -> torch.Tensor:
    if output_size is not None:
        return nn.ConvTranspose1d.forward(self, x, output_size)
    y = F.conv_transpose2d(
        x.unsqueeze(2), _time_major_weight(self.weight), self.bias, (1, self.stride[0]),
        (0, self.padding[0]), (0, self.output_padding[0]), self.groups, (1, self.dilation[0]),
    )  # fmt: skip
    return y.squeeze(2)


def _time_major_causal_forward(self: CausalConv1d, x: torch.Tensor) -> torch.Tensor:
    return self.conv(pad_time(x, self.pad_length))


def _time_major_causal_deconv_forward(self: CausalConvTranspose1d, x: torch.Tensor) -> torch.Tensor:
    # The replicated first frame joined in x's layout (torch.compile mis-strides a 4-D replicate pad).
    return self._crop(self.deconv(cat_time(x[..., :1].expand(-1, -1, self.pad_length), x)))


def hookless(module: nn.Module) -> bool:
    """``module`` has no forward hooks: rerouting its forward would skip them."""
    return not module._forward_hooks and not module._forward_pre_hooks


def _stock(module: nn.Module, cls: type) -> bool:
    """``module`` is a ``cls`` that computes with ``cls.forward`` and has no forward hooks."""
    return isinstance(module, cls) and type(module).forward is cls.forward and hookless(module)


def _use_time_major(model: nn.Module) -> dict[str, int]:
    counts = {"time_major": 0}
    for module in model.modules():
        if _stock(module, CausalConv1d):
            module.forward = types.MethodType(_time_major_causal_forward, module)
        elif _stock(module, CausalConvTranspose1d):
            module.forward = types.MethodType(_time_major_causal_deconv_forward, module)
        elif _stock(module, nn.Conv1d) and module.padding_mode == "zeros" and isinstance(module.padding, tuple):
            forward = _time_major_pointwise_forward if _pointwise(module) else _time_major_conv_forward
            module.forward = types.MethodType(forward, module)
            counts["time_major"] += 1
        elif _stock(module, nn.ConvTranspose1d) and module.padding_mode == "zeros":
            module.forward = types.MethodType(_time_major_deconv_forward, module)
            counts["time_major"] += 1
        elif _stock(module, nn.Conv2d) and module.padding_mode == "zeros" and isinstance(module.padding, tuple):
            module.forward = types.MethodType(_time_major_conv2d_forward, module)
            counts["time_major"] += 1
    return counts


def _plain(conv: nn.Conv1d) -> bool:
    return conv.stride == (1,) and conv.groups == 1 and conv.padding_mode == "zeros" and isinstance(
        conv.padding, tuple
    )


def _pointwise(conv: nn.Conv1d) -> bool:
    """A plain 1x1 convolution without padding: one matrix product per frame."""
    return _plain(conv) and conv.kernel_size == (1,) and conv.dilation == (1,) and conv.padding == (0,)


def use_fast_convolutions(model: nn.Module, time_major: bool = False) -> dict[str, int]:
    """Route the eligible convolutions of ``model`` to the faster formulations (in place; parameters
    and state-dict names unchanged). Returns how many layers took each: ``{"time_major": n}`` with
    ``time_major``, else ``{"phase_gradient": n, "pointwise": m}``."""
    if time_major:
        return _use_time_major(model)
    counts = {"phase_gradient": 0, "pointwise": 0}
    for module in model.modules():
        if not isinstance(module, nn.Conv1d) or type(module).forward is not nn.Conv1d.forward or not _plain(module):
            continue
        if _pointwise(module):
            module.forward = types.MethodType(_pointwise_forward, module)
            counts["pointwise"] += 1
        elif module.dilation[0] > 1 and module.in_channels * module.kernel_size[0] <= PHASE_GRADIENT_MAX_INNER:
            module.forward = types.MethodType(_phase_gradient_forward, module)
            counts["phase_gradient"] += 1
    return counts
