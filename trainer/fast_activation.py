"""The generator's ELUs and LeakyReLUs on the native engine (part of the ``fast_conv`` option).

ATen computes ELU through ``expm1``, which on x86 CPUs costs several times an ``exp`` over the same
tensor, so the residual units' 48 ELUs (forward and backward) take about a tenth of an AVX2 stage-1
step. The native engine (csrc/engine.c, built on first use) has a vectorized ``expm1`` accurate to
about 1 ulp; here it computes the ELU in one pass, in float32 or, under bf16 autocast, from and to
bfloat16. The backward pass works from the ELU's output, as ATen's does for an in-place ELU
(``grad * (out + alpha)`` where ``out <= 0``): the output is kept anyway by the convolution that
reads it, so each ELU keeps one activation fewer alive than ``F.elu`` (which keeps its input), and
the step runs faster for it. In a residual unit the ELU also writes the causal padding of the
dilated convolution that reads it, which saves that convolution's padding copy. The HiFi-GAN
vocoder's LeakyReLUs run the same way (its residual blocks' ones writing their convolutions'
padding); their values and gradients are ATen's bit for bit (``out > 0`` exactly where ``x > 0``).

Values equal ATen's to about 1 ulp (float32) or one bfloat16 ulp. Gradients too, except where
``out + alpha`` cancels: far below zero, where the derivative ``alpha * exp(x)`` is small, their
error is about one ulp of ``alpha`` times the incoming gradient (as for ATen's in-place ELU).
Tensors this cannot take (other dtypes; not on the CPU; values not in runs along time, channel-major
or time-major; inside ``torch.compile``, which fuses the activation itself) go through ATen as before.
"""

from __future__ import annotations

import types
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from layers.conv import CausalConv1d
from layers.layout import pad_time
from models.autoencoder.modules.residual_unit import ResidualUnit
from models.vocoder.modules.residual_block import HiFiGANResidualBlock, MultiGroupConv1d
from trainer.fast_conv import hookless
from utils.runtime import native_build
from utils.runtime.native import ACT_ELU, ACT_LEAKY

KINDS = {"elu": ACT_ELU, "leaky": ACT_LEAKY}  # csrc/engine.c's activation kinds


class _Rows(NamedTuple):
    """A (B, C, T) tensor read as ``rows`` runs of ``n`` contiguous values along time, ``stride``
    values apart: B * C rows of T channel-major, B rows of T * C time-major (``time_major``)."""

    time_major: bool
    rows: int
    n: int
    stride: int


def _rows(x: torch.Tensor) -> _Rows | None:
    """How x's values lie, or None when neither way fits. The rows may lie further apart than their
    length: a transposed convolution's cropped output is such a view."""
    batch, channels, frames = x.shape
    batch_stride, channel_stride, frame_stride = x.stride()
    if frames == 1 or frame_stride == 1:
        if channels == 1:
            return _Rows(False, batch, frames, batch_stride)
        if batch == 1 or batch_stride == channels * channel_stride:
            return _Rows(False, batch * channels, frames, channel_stride)
    if (channel_stride == 1 or channels == 1) and (frames == 1 or frame_stride == channels):
        return _Rows(True, batch, frames * channels, batch_stride)
    return None


def _like(x: torch.Tensor, frames: int, time_major: bool) -> torch.Tensor:
    """An empty dense (B, C, frames) tensor like x, time-major or channel-major."""
    batch, channels, _ = x.shape
    if time_major:
        return x.new_empty(batch, frames, channels).transpose(1, 2)
    return x.new_empty(batch, channels, frames)


def _dense(x: torch.Tensor, time_major: bool) -> torch.Tensor:
    """x stored densely, time-major or channel-major."""
    if time_major:
        return x.transpose(1, 2).contiguous().transpose(1, 2)
    return x.contiguous()


class _NativeActivation(torch.autograd.Function):
    """ELU (``kind`` "elu", ``param`` alpha) or LeakyReLU ("leaky", ``param`` the slope) of a float32 or
    bfloat16 (B, C, T) tensor with ``lead`` zero frames before it, in x's layout (stored densely)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kind: str, param: float, lead: int) -> torch.Tensor:
        layout = _rows(x)
        frames = x.shape[2]
        per_frame = layout.n // frames  # 1 channel-major, C time-major
        out = _like(x, lead + frames, layout.time_major)
        native_build.build().library.engine_activation(
            x.data_ptr(), layout.stride, out.data_ptr(), (lead + frames) * per_frame, lead * per_frame, layout.rows,
            layout.n, param, KINDS[kind], x.dtype == torch.bfloat16, torch.get_num_threads(),
        )  # fmt: skip
        ctx.save_for_backward(out)
        ctx.kind, ctx.param, ctx.lead, ctx.time_major = kind, param, lead, layout.time_major
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (out,) = ctx.saved_tensors
        grad = _dense(grad.to(out.dtype), ctx.time_major)
        channels, padded = out.shape[1], out.shape[2]
        per_frame, frames = channels if ctx.time_major else 1, padded - ctx.lead
        rows = out.shape[0] * (1 if ctx.time_major else channels)
        grad_in, n, stride = _like(out, frames, ctx.time_major), frames * per_frame, padded * per_frame
        skip = ctx.lead * per_frame * out.element_size()  # the padding's gradient is dropped
        native_build.build().library.engine_activation_backward(
            grad.data_ptr() + skip, stride, out.data_ptr() + skip, stride, grad_in.data_ptr(), n, rows, n, ctx.param,
            KINDS[ctx.kind], out.dtype == torch.bfloat16, torch.get_num_threads(),
        )  # fmt: skip
        return grad_in, None, None, None


def _takes(x: torch.Tensor) -> bool:
    """Whether the engine computes an activation of x (else ATen does)."""
    return (x.dtype in (torch.float32, torch.bfloat16) and x.device.type == "cpu" and x.dim() == 3
            and x.shape[2] > 0 and not torch.compiler.is_compiling() and _rows(x) is not None)  # fmt: skip


def native_elu(x: torch.Tensor, alpha: float = 1.0, lead: int = 0) -> torch.Tensor:
    """``F.pad(F.elu(x, alpha), (lead, 0))`` in x's layout, on the native engine where it can."""
    if _takes(x):
        return _NativeActivation.apply(x, "elu", alpha, lead)
    y = F.elu(x, alpha)
    return pad_time(y, lead) if lead else y


def native_leaky_relu(x: torch.Tensor, slope: float = 0.01, lead: int = 0) -> torch.Tensor:
    """``F.pad(F.leaky_relu(x, slope), (lead, 0))`` in x's layout, on the native engine where it can
    (slope > 0): the same values and gradients as ATen's, bit for bit."""
    if _takes(x):
        return _NativeActivation.apply(x, "leaky", slope, lead)
    y = F.leaky_relu(x, slope)
    return pad_time(y, lead) if lead else y


def _elu_forward(self: nn.ELU, x: torch.Tensor) -> torch.Tensor:
    return native_elu(x, self.alpha)


def _residual_unit_forward(self: ResidualUnit, x: torch.Tensor) -> torch.Tensor:
    alpha = self.activation.alpha
    y = self.conv1.conv(native_elu(x, alpha, self.conv1.pad_length))
    return x + self.conv2(native_elu(y, alpha))


def _leaky_forward(self: nn.LeakyReLU, x: torch.Tensor) -> torch.Tensor:
    return native_leaky_relu(x, self.negative_slope)


def _hifigan_block(self: HiFiGANResidualBlock, x: torch.Tensor) -> torch.Tensor:
    """HiFiGANResidualBlock.forward with each LeakyReLU writing its convolution's causal padding."""
    slope = self.activation.negative_slope
    for index, conv1 in enumerate(self.convs1):
        xt = conv1.conv(native_leaky_relu(x, slope, conv1.pad_length))
        if self.use_additional_convs:
            conv2 = self.convs2[index]
            xt = conv2.conv(native_leaky_relu(xt, slope, conv2.pad_length))
        x = xt + x
    return x


def _grouped_block(self: MultiGroupConv1d, x: torch.Tensor) -> torch.Tensor:
    return self.conv_out(_hifigan_block(self, x.repeat(1, self.groups, 1)))


def _stock_elu(module: nn.Module) -> bool:
    return type(module) is nn.ELU and module.alpha > 0 and not module.inplace and hookless(module)


def _stock_leaky(module: nn.Module) -> bool:
    return type(module) is nn.LeakyReLU and module.negative_slope > 0 and not module.inplace and hookless(module)


def _stock_causal(conv: nn.Module) -> bool:
    return type(conv) is CausalConv1d and hookless(conv)


def _stock_unit(module: nn.Module) -> bool:
    return (type(module) is ResidualUnit and hookless(module) and _stock_elu(module.activation)
            and _stock_causal(module.conv1))  # fmt: skip


def _stock_block(module: nn.Module) -> bool:
    """A HiFi-GAN residual block (or grouped one) of causal convolutions and a LeakyReLU, as built."""
    if type(module) not in (HiFiGANResidualBlock, MultiGroupConv1d) or not hookless(module):
        return False
    convs = [*module.convs1, *(module.convs2 if module.use_additional_convs else [])]
    return _stock_leaky(module.activation) and all(_stock_causal(conv) for conv in convs)


def use_native_activations(model: nn.Module) -> dict[str, int]:
    """Route ``model``'s ELUs (alpha > 0) and LeakyReLUs (slope > 0), not in place and without hooks, to
    the native engine, in place. Returns how many AudioDec residual units and HiFi-GAN residual blocks
    now pad through their activation, and how many other ELU and LeakyReLU modules compute natively;
    none where the engine is unavailable (:func:`utils.runtime.native_build.unavailable_reason`)."""
    counts = {"residual_units": 0, "residual_blocks": 0, "elu": 0, "leaky_relu": 0}
    if not native_build.available():
        return counts
    fused = set()
    for module in model.modules():
        if _stock_unit(module):
            module.forward = types.MethodType(_residual_unit_forward, module)
            counts["residual_units"] += 1
        elif _stock_block(module):
            forward = _grouped_block if type(module) is MultiGroupConv1d else _hifigan_block
            module.forward = types.MethodType(forward, module)
            counts["residual_blocks"] += 1
        else:
            continue
        fused.add(id(module.activation))
    for module in model.modules():
        if id(module) in fused:
            continue
        if _stock_elu(module):
            module.forward = types.MethodType(_elu_forward, module)
            counts["elu"] += 1
        elif _stock_leaky(module):
            module.forward = types.MethodType(_leaky_forward, module)
            counts["leaky_relu"] += 1
    return counts
