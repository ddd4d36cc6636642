"""Convolution layers: causal ones with a streaming step, and their non-causal twins.

Module and buffer names follow the original AudioDec checkpoints (`conv`, `deconv`, `pad_buffer`)
so that its state dicts load unchanged.

Streaming: every causal layer owns its state (`layers.streaming.StreamingState`: the last inputs
it needs to see again). `step(x)` consumes one chunk and returns the matching output chunk.
Feeding a signal through `step` in pieces gives exactly what one `step` over the whole signal
gives, provided each piece is a multiple of the layer's stride.

Speed: outside autograd on CPU, `step` runs each convolution through oneDNN on weights prepacked
for its input shape (`PackedConv`; `F.conv1d` where PyTorch has no oneDNN): one formulation, so
results never depend on a timing. Transposed convolutions (kernel 2*stride) are rewritten as a
two-tap convolution onto `stride` phases, then interleaved. (A bf16 receiver runs in the native
engine: utils/runtime/native.py.)
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from layers.layout import is_channels_last
from layers.streaming import StreamingState, note_usage, tensor_version

_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


class PackedConv:
    """The inference convolution of one layer: oneDNN with the weights reordered once into the
    blocked layout its kernel reads for the input's shape, or `F.conv1d` on cached weights where
    PyTorch has no oneDNN. The cache is opaque (oneDNN tensors have no storage), so copies and
    pickles start without it.

    The two paths (`FORMULATIONS`: `_onednn`, `_conv1d`) compute conv1d(x, weight) for x (B, C_in, L),
    weight (C_out, C_in / groups, k); which one runs depends only on whether PyTorch has oneDNN.
    """

    FORMULATIONS = ("onednn", "conv1d")
    MAX_PACKINGS = 32  # input shapes whose weight layout is remembered (a few per chunk size in use)
    PACK_MAX_LENGTH = 8192  # longer inputs (whole files) share the layout packed for this length

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.weight: torch.Tensor | None = None  # source weight after `transform`
        self.bias: torch.Tensor | None = None
        self.packed: torch.Tensor | None = None  # the oneDNN weights of the latest call (a graph input while tracing)
        self.packings: dict[tuple, torch.Tensor] = {}  # (batch, length, threads) -> weights in the layout run there
        self.layouts: dict[bytes, torch.Tensor] = {}  # one copy of the weights per distinct layout

    def __deepcopy__(self, memo: dict) -> PackedConv:
        return PackedConv()

    def __reduce__(self) -> tuple:
        return PackedConv, ()

    @staticmethod
    def usable(x: torch.Tensor, weight: torch.Tensor) -> bool:
        """Whether the cached path applies: CPU float32 input, no autograd (a TorchScript trace
        records the cached path)."""
        return (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and not (torch.is_grad_enabled() and weight.requires_grad)
        )

    def _refresh(self, weight: torch.Tensor, bias: torch.Tensor | None, transform) -> None:
        bias_key = None if bias is None else (bias.data_ptr(), tensor_version(bias))
        key = (weight.data_ptr(), tensor_version(weight), bias_key)
        if key == self.key:
            return
        with torch.inference_mode(False), torch.no_grad():
            w, b = transform(weight, bias) if transform is not None else (weight, bias)
            self.weight = w.detach().contiguous()
            self.bias = None if b is None else b.detach().contiguous()
        self.packed = None
        self.packings, self.layouts = {}, {}
        self.key = key

    def _onednn(
        self, x: torch.Tensor, stride: int, dilation: int, groups: int, residual: torch.Tensor | None = None
    ) -> torch.Tensor:
        """oneDNN on weights packed for x's shape; with `residual`, `residual + conv(x)` in the same
        call (oneDNN adds it to the finished output, so the sum is bitwise the separate add's)."""
        if torch.jit.is_tracing():
            # `self.packed` is a graph input here (utils/runtime/torchscript.py), and the tracer cannot
            # record the op's empty Scalar?[] argument, so it records the scripted functions.
            if residual is None:
                return _scripted(_onednn_conv)(x, self.packed, self.bias, stride, dilation, groups)
            return _scripted(_onednn_conv_add)(x, residual, self.packed, self.bias, stride, dilation, groups)
        batch, _, length = (int(size) for size in x.shape)
        key = (batch, min(length, self.PACK_MAX_LENGTH), torch.get_num_threads())  # oneDNN blocks for all three
        packed = self.packings.get(key)
        if packed is None:
            packed = self._pack(key, stride, dilation, groups)
        self.packed = packed
        if residual is None:
            return _onednn_conv(x, packed, self.bias, stride, dilation, groups)
        return _onednn_conv_add(x, residual, packed, self.bias, stride, dilation, groups)

    def _pack(self, key: tuple, stride: int, dilation: int, groups: int) -> torch.Tensor:
        """The weights in the blocked layout oneDNN's kernel for inputs of (batch, length) reads,
        on this many threads.
        The layout depends on the input length (a pointwise conv's channels are blocked one way
        over a few frames, another over many), and a convolution given another layout reorders its
        weights on every call (a second oneDNN primitive). Lengths that share a layout share one
        copy of the weights."""
        if len(self.packings) >= self.MAX_PACKINGS:
            self.packings, self.layouts = {}, {}
        with torch.inference_mode(False), torch.no_grad():
            w = self.weight.unsqueeze(2)
            batch, length, _ = key  # packed under the current thread count, the key's third part
            packed = torch.ops.mkldnn._reorder_convolution_weight(
                w, [0, 0], [1, stride], [1, dilation], groups, [batch, w.shape[1] * groups, 1, length]
            )
        layout = bytes(torch.ops.mkldnn._get_mkldnn_serialized_md(packed).tolist())
        packed = self.layouts.setdefault(layout, packed)
        self.packings[key] = packed
        return packed

    def _conv1d(self, x: torch.Tensor, stride: int, dilation: int, groups: int) -> torch.Tensor:
        return F.conv1d(x, self.weight, self.bias, stride, 0, dilation, groups)

    @staticmethod
    def applies(name: str) -> bool:
        """Whether path `name` can run here (oneDNN: where PyTorch is built with it)."""
        return name != "onednn" or _ONEDNN

    def run(
        self,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        stride: int,
        dilation: int,
        groups: int,
        transform=None,
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """conv1d of x (B, C_in, L) with `weight` (C_out, C_in / groups, k); plus `residual` (the
        output's shape) when given, fused into the oneDNN call where it runs (the residual units'
        skip connections: one operation and one output tensor fewer each).

        `transform(weight, bias) -> (weight, bias)` rewrites the source parameters before caching
        (used by the transposed convolution).
        """
        note_usage(self)
        self._refresh(weight, bias, transform)
        if _ONEDNN:
            return self._onednn(x, stride, dilation, groups, residual)
        y = self._conv1d(x, stride, dilation, groups)
        return y if residual is None else residual + y


def _onednn_conv(
    x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None, stride: int, dilation: int, groups: int
) -> torch.Tensor:
    """PackedConv's oneDNN call, in TorchScript-compilable form (utils/runtime/torchscript.py records it)."""
    scalars: list[int | float | complex | None] = []  # the schema's Scalar?[]
    y = torch.ops.mkldnn._convolution_pointwise(
        x.unsqueeze(2), packed, bias, [0, 0], [1, stride], [1, dilation], groups, "none", scalars, ""
    )
    return y.squeeze(2)


def _onednn_conv_add(
    x: torch.Tensor,
    residual: torch.Tensor,
    packed: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int,
    dilation: int,
    groups: int,
) -> torch.Tensor:
    """residual + `_onednn_conv(x, ...)` as one oneDNN call (a binary post-op), TorchScript-compilable."""
    scalars: list[int | float | complex | None] = []
    y = torch.ops.mkldnn._convolution_pointwise(  # the `.binary` overload, picked by its arguments
        x.unsqueeze(2), residual.unsqueeze(2), packed, bias, [0, 0], [1, stride], [1, dilation], groups,
        "add", None, None, scalars, None,
    )
    return y.squeeze(2)


@functools.cache
def _scripted(function):
    """`function` compiled by TorchScript, on first use (a trace records a call to it)."""
    return torch.jit.script(function)


class Conv1d1x1(nn.Conv1d):
    """Pointwise 1-D convolution, (B, C_in, T) -> (B, C_out, T)."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size=1, bias=bias)
        self._packed = PackedConv()

    def step(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """Streaming step: a pointwise conv has no memory. With `residual`: residual + conv(x)."""
        if PackedConv.usable(x, self.weight):
            return self._packed.run(
                x, self.weight, self.bias, 1, 1, self.groups, residual=residual
            )
        return self(x) if residual is None else residual + self(x)


class NonCausalConv1d(nn.Module):
    """1-D convolution padded on both sides ('same' length for stride 1)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = -1,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if padding < 0:
            padding = (kernel_size - 1) // 2 * dilation
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.dilation = dilation
        self.conv = nn.Conv1d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding,
            dilation=dilation, groups=groups, bias=bias,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, T) -> (B, C_out, T // stride)."""
        return self.conv(x)


class CausalConv1d(StreamingState, NonCausalConv1d):
    """1-D convolution padded on the left only: output t sees inputs <= t."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=0,
            dilation=dilation, groups=groups, bias=bias,
        )
        self.pad_length = (kernel_size - 1) * dilation
        self.register_buffer("pad_buffer", torch.zeros(1, in_channels, self.pad_length))
        self._state = None
        self._packed = PackedConv()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Offline pass with zero history: (B, C_in, T) -> (B, C_out, T // stride)."""
        return self.conv(F.pad(x, (self.pad_length, 0)))

    def step(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """Streaming step on chunk (B, C_in, T), T a multiple of the stride. With `residual` (the
        output's shape): residual + conv(x)."""
        x = self._push(x)
        conv = self.conv
        if PackedConv.usable(x, conv.weight):
            return self._packed.run(
                x, conv.weight, conv.bias, self.stride, self.dilation, conv.groups, residual=residual,
            )
        return conv(x) if residual is None else residual + conv(x)


class NonCausalConvTranspose1d(nn.Module):
    """Transposed 1-D convolution with symmetric cropping (upsampling by `stride`)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        padding: int = -1,
        output_padding: int = -1,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if padding < 0:
            padding = (stride + 1) // 2
        if output_padding < 0:
            output_padding = 1 if stride % 2 else 0
        self.stride = stride
        self.deconv = nn.ConvTranspose1d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding,
            output_padding=output_padding, groups=groups, bias=bias,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, T) -> (B, C_out, T * stride)."""
        return self.deconv(x)


class CausalConvTranspose1d(StreamingState, NonCausalConvTranspose1d):
    """Causal transposed convolution (kernel 2*stride): keeps one input frame of history.

    The offline pass replicates the first frame as history (as the original trains); the
    streaming pass starts from `pad_buffer` (zeros), which is why inference warms up first.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, bias: bool = True
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding=0, output_padding=0, bias=bias
        )
        self.pad_length = math.ceil(kernel_size / stride) - 1
        self.register_buffer("pad_buffer", torch.zeros(1, in_channels, self.pad_length))
        self._state = None
        self._packed = PackedConv()

    def _crop(self, y: torch.Tensor) -> torch.Tensor:
        return y[:, :, self.stride:-self.stride]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Offline pass: (B, C_in, T) -> (B, C_out, T * stride)."""
        return self._crop(self.deconv(F.pad(x, (self.pad_length, 0), mode="replicate")))

    def _phase_weights(
        self, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Transposed weight (C_in, C_out, 2s) -> two-tap conv weight (C_out * s, C_in, 2).

        Output phase r of frame m is W[:, :, r] x[m] + W[:, :, r + s] x[m - 1]: tap 0 sees the
        previous frame, tap 1 the current one; output channel c * s + r.
        """
        c_in, c_out, _ = weight.shape
        s = self.stride
        taps = weight.permute(1, 2, 0).reshape(c_out, 2, s, c_in).flip(1)
        phase_weight = taps.permute(0, 2, 3, 1).reshape(c_out * s, c_in, 2)
        return phase_weight, None if bias is None else bias.repeat_interleave(s)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """Streaming step: (B, C_in, T) -> (B, C_out, T * stride)."""
        x = self._push(x)
        deconv = self.deconv
        if (
            PackedConv.usable(x, deconv.weight)
            and deconv.kernel_size[0] == 2 * self.stride
            and deconv.groups == 1
        ):
            batch, frames = x.shape[0], x.shape[-1] - 1
            phases = self._packed.run(
                x, deconv.weight, deconv.bias, 1, 1, 1, transform=self._phase_weights
            )
            if is_channels_last(phases):  # interleave in the time-major layout the next conv reads
                phases = phases.transpose(1, 2).reshape(batch, frames, -1, self.stride).transpose(2, 3)
                return phases.reshape(batch, frames * self.stride, -1).transpose(1, 2)
            return phases.view(batch, -1, self.stride, frames).transpose(2, 3).reshape(batch, -1, frames * self.stride)
        return self._crop(self.deconv(x))


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


class NonCausalConv2d(nn.Module):
    """2-D convolution padded on all sides ('same' size for stride 1)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = -1,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        kernel, dil = _pair(kernel_size), _pair(dilation)
        if isinstance(padding, int) and padding < 0:
            padding = ((kernel[0] - 1) // 2 * dil[0], (kernel[1] - 1) // 2 * dil[1])
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel, stride=stride, padding=padding,
            dilation=dil, groups=groups, bias=bias,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H', W')."""
        return self.conv(x)
