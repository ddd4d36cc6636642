"""The native streaming engine: an AudioDec encoder + projector + residual VQ, or a receiver (code
lookup, then the symmetric AudioDec decoder or a HiFi-GAN vocoder: v0's multi-receptive-field
blocks or the grouped ones of v1, v2, v3), of the plain or the activate codec, run as one C call
per streaming step (csrc/engine.c, built by `native_build.py`).

Why: at 300-sample chunks a streaming step is about 50 small convolutions, and each PyTorch
convolution call has a fixed cost of preparation whatever its size, plus an ELU, views and
concatenations per layer: most of a step's time was not arithmetic (docs/performance.md). Here a
plan is made once per chunk shape (buffers, weights packed for the kernels, the operations in
order), and a step is one call in which one OpenMP team runs the operations with a barrier between
them. Each layer writes its output straight into the input buffer of the layer after it, behind that
layer's state rows, so nothing is concatenated; activations (ELU, LeakyReLU, tanh), residual skips
and channel repeats are applied as the results are stored.

Exactness: every output value is summed in one fixed order whatever the chunk length, the row's
place in the chunk, the blocking or the thread count, and the VQ searches each frame on its own, so
the codes do not depend on how a signal is cut (docs/contracts.md, Contract 2) by construction. The
engine's rounding is its own, not oneDNN's, so a codec runs its transmitter either natively for
every call or never (`NativeStep` builds a plan on a shape's first call, where the graphs wait for
the second).

States stay in the torch layers (time-major views of one of two state vectors per plan, which
successive steps read and write in turn), so reset, batches and backend switches behave as with the
other backends.

To change a model block, change its `forward`, its `step` and its plan here together
(docs/architecture.md); tests/test_blocks.py compares the three for every block type.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from layers.conv import CausalConv1d, CausalConvTranspose1d, Conv1d1x1
from layers.streaming import StreamingState, get_state, set_state
from utils.errors import CodecError
from utils.runtime.native_build import Build, Op, Slot, build
from utils.runtime.per_shape import PerShapeStep

OP_CONV, OP_VQ, OP_LOOKUP = 1, 2, 3
ACT_ELU, ACT_LEAKY = 0, 1  # activations written to an op's `out_act`
OUT_RAW, OUT_TANH = 0, 1  # what an op writes to `out`
# A receiver's weight storage (`NativeStep(weights=...)`): bfloat16 weights are half the bytes to
# read per step, int8 ones (with a float32 scale per output channel) a quarter; the kernels convert
# them to float32 as they load them, and sum and write float32 as for float32 weights.
WEIGHT_TYPES = {torch.float32: 0, torch.bfloat16: 1, torch.int8: 2}

ENGINE_NO_MEMORY = 2  # engine_run's status when its scratch cannot be had (csrc/engine.c)


def _vocoder_class() -> type:
    from models.vocoder.HiFiGAN import Generator

    return Generator


def _activation_problem(module: nn.Module) -> str:
    if type(module) is not nn.ELU and type(module) is not nn.LeakyReLU:
        return f"{type(module).__name__} activations do not run natively (ELU and LeakyReLU do)"
    if module.inplace:  # the model's residual sums then add the activated input, which the engine does not
        return "in-place activations do not run natively"
    return ""


def _conv_problem(network: nn.Module) -> str:
    """Why a convolution of `network` cannot run natively, or ""."""
    for module in network.modules():
        if isinstance(module, nn.ConvTranspose1d) and module.groups != 1:
            return "grouped transposed convolutions do not run natively"
        if isinstance(module, CausalConvTranspose1d) and module.deconv.kernel_size[0] != 2 * module.stride:
            return "transposed convolutions other than kernel 2 * stride do not run natively"
    return ""


def _audiodec_problem(generator: nn.Module, side: str) -> str:
    from models.autoencoder.AudioDec import Generator
    from models.autoencoder.modules.decoder import ActivateDecoder, Decoder
    from models.autoencoder.modules.encoder import ActivateEncoder, Encoder

    if side == "encoder" and not isinstance(generator, Generator):
        return "only AudioDec encoders run natively"
    network = getattr(generator, side, None)
    expected = (Encoder, ActivateEncoder) if side == "encoder" else (Decoder, ActivateDecoder)
    if type(network) not in expected:
        return f"the {type(network).__name__} {side} does not run natively (the audiodec codecs do)"
    if side == "encoder" and type(generator.projector.project) is not CausalConv1d:
        return "the conv1d_bn projector does not run natively"
    blocks, around = _audiodec_blocks(network)
    units = [unit for _, block in blocks for unit in block.res_units]
    for unit in units:
        if _activation_problem(unit.activation):
            return _activation_problem(unit.activation)
        if repr(unit.activation) != repr(units[0].activation):
            return "residual units with different activations do not run natively"
    for activation in [around, *(before for before, _ in blocks)]:
        if activation is not None and _activation_problem(activation):
            return _activation_problem(activation)
    if side == "decoder" and type(getattr(network, "activation_output", nn.Tanh())) is not nn.Tanh:
        return "only a tanh output runs natively"
    return _conv_problem(network)


def _audiodec_blocks(network: nn.Module) -> tuple[list[tuple[nn.Module | None, nn.Module]], nn.Module | None]:
    """An AudioDec encoder's or decoder's blocks as (the activation before the block or None, the
    block), and the activate codec's activation after its encoder or before its decoder's output
    convolution (None for the plain codec)."""
    from models.autoencoder.modules.decoder import ActivateDecoder
    from models.autoencoder.modules.encoder import ActivateEncoder

    if isinstance(network, ActivateDecoder):  # Sequential(activation, block) ..., then an activation
        return [(block[0], block[1]) for block in network.conv_blocks[:-1]], network.conv_blocks[-1]
    blocks = [(None, block) for block in network.conv_blocks]
    return blocks, network.activation if isinstance(network, ActivateEncoder) else None


def _vocoder_problem(vocoder: nn.Module) -> str:
    from models.vocoder.modules.residual_block import MultiGroupConv1d, MultiReceptiveField

    for block in vocoder.blocks:
        if type(block) is MultiReceptiveField:
            branches = list(block.blocks)
            if any(conv.conv.groups != 1 for branch in branches for conv in branch.convs1):
                return "multi-receptive-field blocks of grouped convolutions do not run natively"
            if any(repr(branch.activation) != repr(branches[0].activation) for branch in branches):
                return "multi-receptive-field branches with different activations do not run natively"
        elif type(block) is not MultiGroupConv1d:
            return "only the HiFi-GAN blocks of v0 (multi-receptive-field) and v1, v2, v3 (grouped) run natively"
        else:
            branches = [block]
        for branch in branches:
            if not branch.use_additional_convs:
                return "HiFi-GAN blocks without their additional convolutions do not run natively"
            if _activation_problem(branch.activation):
                return _activation_problem(branch.activation)
    for activation in (vocoder.activation_upsamples, vocoder.activation_output1):
        if _activation_problem(activation):
            return _activation_problem(activation)
    if type(vocoder.activation_output2) is not nn.Tanh:
        return "only a tanh output runs natively"
    return _conv_problem(vocoder)


def why_not_native(module: nn.Module, side: str) -> str:
    """Why the engine cannot run `side` of `module`, or "" when it can. Sides: "encoder", the
    transmitter of an AudioDec generator; "decoder", a HiFi-GAN vocoder with grouped blocks, or the
    symmetric decoder of a module whose `decoder` is an AudioDec decoder."""
    if side == "decoder" and isinstance(module, _vocoder_class()):
        return _vocoder_problem(module)
    return _audiodec_problem(module, side)


def _int8_columns(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed float weights (blocks, k, C_in, width) -> (int8 weights of the same layout, a float32
    scale per column, (blocks * width,)): each column's weights divided by its largest |weight| / 127
    and rounded to nearest (an all-zero column, padding included, gets scale 1 and zeros)."""
    blocks, _, _, width = w.shape
    peak = w.abs().amax(dim=(1, 2))  # (blocks, width)
    scale = torch.where(peak > 0, peak / 127, torch.ones_like(peak))
    q = torch.round(w / scale[:, None, None, :]).clamp_(-127, 127).to(torch.int8)
    return q.contiguous(), scale.reshape(blocks * width).contiguous()


class _Packed:
    """One convolution's weights for the kernels of `target` and a padded bias. The output channels,
    padded to whole vectors of `target.lanes` floats, are cut into blocks of `nv` vectors, and each
    block's weights are stored in one stretch, (blocks, k, C_in, lanes nv): a kernel then streams
    them in order (most layers of a 300-sample chunk read each weight once, from memory). Weights are
    float32; bfloat16 bits (rounded to nearest even) when `dtype` is torch.bfloat16; or, when `dtype`
    is torch.int8, int8 with a float32 scale per output channel (`wscale`, its largest |weight| / 127;
    the engine multiplies each column's sum by it). The bias stays float32."""

    def __init__(
        self, target: Build, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int = 1, stride: int = 1,
        groups: int = 1, dtype: torch.dtype = torch.float32,
    ) -> None:
        c_out, c_in, kernel = weight.shape  # c_in: per group
        self.cin, self.cout, self.k, self.dilation, self.stride = c_in, c_out, kernel, dilation, stride
        self.groups, self.group_cout = groups, c_out // groups
        # Each group's output columns are padded to whole vectors (the padding's sums are dropped),
        # so that a column block lies within one group; ungrouped, the one group is all columns.
        lanes = target.lanes
        self.group_pad = -(-self.group_cout // lanes) * lanes
        self.cpad = groups * self.group_pad
        self.nv = max(nv for nv in target.widths if self.group_pad % (nv * lanes) == 0)
        width, pad = self.nv * lanes, self.group_pad - self.group_cout
        with torch.inference_mode(False), torch.no_grad():
            w = weight.detach().float().reshape(groups, self.group_cout, c_in, kernel)
            w = F.pad(w.permute(3, 2, 0, 1), (0, pad)).reshape(kernel, c_in, self.cpad)  # (k, C_in, cpad)
            self.w = w.reshape(kernel, c_in, self.cpad // width, width).permute(2, 0, 1, 3).contiguous()
            self.wtype = WEIGHT_TYPES[dtype]
            self.wscale = None
            if dtype == torch.bfloat16:
                self.w = self.w.to(torch.bfloat16).view(torch.int16)
            elif dtype == torch.int8:
                self.w, self.wscale = _int8_columns(self.w)
            if bias is not None:
                bias = F.pad(bias.detach().float().reshape(groups, self.group_cout), (0, pad)).reshape(-1)
            self.bias = None if bias is None else bias.contiguous()

    @classmethod
    def conv(cls, target: Build, layer: nn.Module, dtype: torch.dtype = torch.float32) -> _Packed:
        conv = layer if isinstance(layer, nn.Conv1d) else layer.conv
        return cls(target, conv.weight, conv.bias, conv.dilation[0], conv.stride[0], conv.groups, dtype)

    @classmethod
    def transposed(cls, target: Build, layer: CausalConvTranspose1d, dtype: torch.dtype = torch.float32) -> _Packed:
        """The two-tap conv onto `stride` phases, its outputs ordered phase-major (r * C_out + c), so
        that frame m's outputs are rows m * stride + r of the upsampled (time-major) signal."""
        deconv = layer.deconv
        phase_weight, phase_bias = layer._phase_weights(deconv.weight, deconv.bias)  # channel c * s + r
        s, c_out = layer.stride, deconv.out_channels
        weight = phase_weight.reshape(c_out, s, *phase_weight.shape[1:]).transpose(0, 1).reshape(phase_weight.shape)
        bias = None if phase_bias is None else phase_bias.reshape(c_out, s).t().reshape(-1)
        return cls(target, weight, bias, dtype=dtype)


class _Plan:
    """Buffers and operations of one step for one chunk shape."""

    def __init__(self) -> None:
        self.ops: list[dict] = []
        self.slots: list[tuple] = []
        self.keep: list[torch.Tensor] = []
        # (layer, offset, shape, strides): a layer's state, (channels, pad), as a view of a stream's
        # state vector (time-major: strides (1, row width))
        self.layers: list[tuple[StreamingState, int, tuple[int, int], tuple[int, int]]] = []
        self.state_size = 0
        self.state_pairs: dict[int, list] = {}  # batch -> NativeStep._state_pair

    def buffer(self, rows: int, channels: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        tensor = torch.empty(rows, channels, dtype=dtype)
        self.keep.append(tensor)
        return tensor

    def ext(self, layer: nn.Module, rows: int, channels: int) -> tuple[torch.Tensor, int]:
        """A layer's input buffer: its `pad` state rows, then `rows` new ones. Returns the buffer and
        the address where the new rows go."""
        pad = getattr(layer, "pad_length", 0)  # (pointwise convs keep no state)
        buffer = self.buffer(pad + rows, channels)
        if pad:
            self.slots.append((buffer.data_ptr(), pad * channels, self.state_size, rows * channels))
            self.layers.append((layer, self.state_size, (channels, pad), (1, channels)))
            self.state_size += pad * channels
        return buffer, buffer.data_ptr() + 4 * pad * channels

    def shared_ext(self, layers: list[nn.Module], rows: int, channels: int) -> tuple[list[int], int]:
        """One input buffer for several layers that read the same rows, side by side in `channels`
        columns each (the branches of a multi-receptive-field block): the most state rows any of
        them keeps, then `rows` new ones. Returns each layer's first row (its own state rows, in its
        column band; rows len(layers) * channels floats apart) and the address of the new rows."""
        pads = [getattr(layer, "pad_length", 0) for layer in layers]
        most, width = max(pads), len(layers) * channels
        buffer = self.buffer(most + rows, width)
        at = buffer.data_ptr()
        if most:
            self.slots.append((at, most * width, self.state_size, rows * width))
            for index, (layer, pad) in enumerate(zip(layers, pads)):
                if pad:
                    offset = self.state_size + (most - pad) * width + index * channels
                    self.layers.append((layer, offset, (channels, pad), (1, width)))
            self.state_size += most * width
        starts = [at + 4 * ((most - pad) * width + index * channels) for index, pad in enumerate(pads)]
        return starts, at + 4 * most * width

    def conv(self, packed: _Packed, source: int, rows_out: int, residual: int | None = None) -> dict:
        """A convolution reading `source` (its ext buffer); its destinations (`out`, `out_act` with
        `act` and `alpha`, `rep` and `seg`) are set by the caller."""
        op = {
            "kind": OP_CONV, "cin": packed.cin, "cout": packed.cout, "cpad": packed.cpad, "k": packed.k,
            "dilation": packed.dilation, "stride": packed.stride, "t_out": rows_out, "nv": packed.nv,
            "x_channels": packed.cin * packed.groups, "group_cout": packed.group_cout, "group_pad": packed.group_pad,
            "x": source, "w": packed.w.data_ptr(), "bias": None if packed.bias is None else packed.bias.data_ptr(),
            "res": residual, "out": None, "out_act": None, "act": ACT_ELU, "alpha": 1.0, "out_kind": OUT_RAW,
            "rep": 1, "seg": packed.cout, "wtype": packed.wtype,
            "wscale": None if packed.wscale is None else packed.wscale.data_ptr(),
        }
        self.ops.append(op)
        return op

    def finish(self, output: torch.Tensor) -> None:
        """Freeze the plan; `output` is the buffer a stream's result is copied out of."""
        self.output_at, self.output_bytes = output.data_ptr(), output.numel() * output.element_size()
        self.output_shape = tuple(output.shape)
        self.nbytes = sum(tensor.numel() * tensor.element_size() for tensor in self.keep)
        self.op_array = (Op * len(self.ops))(*[Op(**op) for op in self.ops])
        self.slot_array = (Slot * len(self.slots))(*[Slot(*slot) for slot in self.slots])
        self.views = [(shape, strides, offset) for _, offset, shape, strides in self.layers]


def _activation(module: nn.Module) -> tuple[int, float]:
    """(kind, parameter) of an ELU or LeakyReLU module, as an op's `act` and `alpha`."""
    if type(module) is nn.ELU:
        return ACT_ELU, float(module.alpha)
    return ACT_LEAKY, float(module.negative_slope)


def _store(op: dict, rows: int, activation: nn.Module | None) -> None:
    """Send `op`'s result to the address `rows` as it is, or through `activation` when one is given."""
    if activation is None:
        op["out"] = rows
    else:
        act, alpha = _activation(activation)
        op.update(out_act=rows, act=act, alpha=alpha)


def _residual_units(
    plan: _Plan, packs: dict, pairs: list, activation: nn.Module, pending: dict, rows: int, channels: int,
    band: tuple[int, int, int] | None = None,
) -> dict:
    """Emit residual units x + conv2(act(conv1(act(x)))), one per (conv1, conv2) of `pairs`, after
    `pending` (the conv whose output enters the first unit); returns the last unit's conv2, whose
    destination the caller sets. The skip path is a buffer of its own, or, with `band` = (skip,
    first input, row width), one branch of a multi-receptive-field block: a column band of a wider
    skip buffer and a first input in a shared buffer, both already written by `pending`."""
    act, alpha = _activation(activation)
    if band is None:
        skip, stride = plan.buffer(rows, channels).data_ptr(), 0  # updated in place by each unit's add
    else:
        skip, source, stride = band
    for index, (conv1, conv2) in enumerate(pairs):
        if index or band is None:
            ext, new_rows = plan.ext(conv1, rows, channels)
            # The conv before the units, or the previous unit's second conv (whose x + conv2(...) is
            # written over its own skip input: each value is read and then written by one thread).
            pending.update(out=skip, out_stride=stride, out_act=new_rows, act=act, alpha=alpha)
            first = plan.conv(packs[id(conv1)], ext.data_ptr(), rows)
        else:
            first = plan.conv(packs[id(conv1)], source, rows)
            first["x_channels"] = stride  # (the shared input's rows)
        ext, new_rows = plan.ext(conv2, rows, channels)
        first.update(out_act=new_rows, act=act, alpha=alpha)
        pending = plan.conv(packs[id(conv2)], ext.data_ptr(), rows, residual=skip)
        pending["res_stride"] = stride
    return pending


def _encoder_plan(generator: nn.Module, packs: dict, batch_shape: tuple[int, int]) -> _Plan:
    channels, length = batch_shape
    encoder, plan = generator.encoder, _Plan()
    ext, plan.input_at = plan.ext(encoder.conv, length, channels)
    plan.input_bytes = 4 * length * channels
    rows = length
    pending = plan.conv(packs[id(encoder.conv)], ext.data_ptr(), rows)
    blocks, after = _audiodec_blocks(encoder)
    for _, block in blocks:
        width = block.conv.in_channels
        pairs = [(unit.conv1, unit.conv2) for unit in block.res_units]
        pending = _residual_units(plan, packs, pairs, block.res_units[0].activation, pending, rows, width)
        ext, pending["out"] = plan.ext(block.conv, rows, width)
        rows //= block.conv.stride
        pending = plan.conv(packs[id(block.conv)], ext.data_ptr(), rows)
    project = generator.projector.project
    ext, new_rows = plan.ext(project, rows, project.in_channels)
    _store(pending, new_rows, after)
    latent = plan.buffer(rows, project.out_channels)
    plan.conv(packs[id(project)], ext.data_ptr(), rows)["out"] = latent.data_ptr()
    vq = generator.quantizer.codebook
    books, size = vq.num_quantizers, vq.codebook_size
    codes = plan.buffer(books, rows, torch.int64)
    tables = packs["vq"]
    plan.ops.append({
        "kind": OP_VQ, "cin": project.out_channels, "cout": size, "cpad": tables[1].shape[1], "k": books, "t_out": rows,
        "x": latent.data_ptr(), "w": tables[0].data_ptr(), "bias": tables[1].data_ptr(),
        "res": tables[2].data_ptr(), "out": codes.data_ptr(),
    })
    plan.finish(codes)
    return plan


def _decoder_plan(generator: nn.Module, packs: dict, batch_shape: tuple[int, int]) -> _Plan:
    books, rows = batch_shape  # codes of the first `books` codebooks
    decoder, plan = generator.decoder, _Plan()
    ext, latent = plan.ext(decoder.conv1, rows, decoder.conv1.in_channels)
    _lookup(plan, packs, books, rows, latent)
    pending = plan.conv(packs[id(decoder.conv1)], ext.data_ptr(), rows)
    blocks, before_output = _audiodec_blocks(decoder)
    for before, block in blocks:
        upsample = block.conv
        ext, new_rows = plan.ext(upsample, rows, upsample.deconv.in_channels)
        _store(pending, new_rows, before)
        pending = plan.conv(packs[id(upsample)], ext.data_ptr(), rows)  # `rows` frames of stride phases
        rows *= upsample.stride
        pairs = [(unit.conv1, unit.conv2) for unit in block.res_units]
        activation = block.res_units[0].activation
        pending = _residual_units(plan, packs, pairs, activation, pending, rows, upsample.deconv.out_channels)
    ext, new_rows = plan.ext(decoder.conv2, rows, decoder.conv2.in_channels)
    _store(pending, new_rows, before_output)
    output = plan.buffer(rows, decoder.conv2.out_channels)
    last = plan.conv(packs[id(decoder.conv2)], ext.data_ptr(), rows)
    tanh = hasattr(decoder, "activation_output")  # the activate codec's (a tanh: _audiodec_problem)
    last.update(out=output.data_ptr(), out_kind=OUT_TANH if tanh else OUT_RAW)
    plan.finish(output)
    return plan


def _lookup(plan: _Plan, packs: dict, books: int, rows: int, latent: int, norm: tuple | None = None) -> None:
    """The code lookup of the receiver's input: codes (copied in by the step) -> latent rows."""
    codes = plan.buffer(books, rows, torch.int64)
    plan.input_at, plan.input_bytes = codes.data_ptr(), 8 * books * rows
    vectors = packs["vq"][2]
    plan.ops.append({
        "kind": OP_LOOKUP, "cin": vectors.shape[2], "cout": packs["codebook_size"], "cpad": vectors.shape[1],
        "k": books, "t_out": rows, "x": codes.data_ptr(), "res": vectors.data_ptr(), "out": latent,
        "w": None if norm is None else norm[1].data_ptr(), "bias": None if norm is None else norm[0].data_ptr(),
    })


def _multi_receptive_field(plan: _Plan, packs: dict, block: nn.Module, pending: dict, rows: int, width: int) -> dict:
    """v0's block after `pending` (the upsampling): its output repeated once per branch, raw into
    one skip buffer and activated into the branches' shared first input; each branch's residual
    units on its own column band of the skip buffer; then the branches' mean, a 1 x 1 convolution
    whose destination the caller sets."""
    branches = block.blocks
    full = len(branches) * width
    skip = plan.buffer(rows, full)
    starts, new_rows = plan.shared_ext([branch.convs1[0] for branch in branches], rows, width)
    act, alpha = _activation(branches[0].activation)
    pending.update(out=skip.data_ptr(), out_act=new_rows, act=act, alpha=alpha, rep=len(branches), seg=width)
    for index, (branch, source) in enumerate(zip(branches, starts)):
        band = skip.data_ptr() + 4 * index * width
        pairs = list(zip(branch.convs1, branch.convs2))
        last = _residual_units(plan, packs, pairs, branch.activation, pending, rows, width, (band, source, full))
        last.update(out=band, out_stride=full)  # x + conv2(...), in place
    return plan.conv(packs[id(block)], skip.data_ptr(), rows)


def _vocoder_plan(vocoder: nn.Module, packs: dict, batch_shape: tuple[int, int]) -> _Plan:
    """HiFi-GAN: input conv; per stage activation, upsampling, then either the input repeated
    `groups` times into a grouped residual block and a 1 x 1 mix (v1, v2, v3), or v0's
    multi-receptive-field block; activation, output conv, tanh."""
    from models.vocoder.modules.residual_block import MultiReceptiveField

    books, rows = batch_shape
    plan = _Plan()
    ext, latent = plan.ext(vocoder.input_conv, rows, vocoder.in_channels)
    _lookup(plan, packs, books, rows, latent, packs.get("norm"))
    pending = plan.conv(packs[id(vocoder.input_conv)], ext.data_ptr(), rows)
    upsample_act, upsample_alpha = _activation(vocoder.activation_upsamples)
    for upsample, block in zip(vocoder.upsamples, vocoder.blocks):
        ext, pending["out_act"] = plan.ext(upsample, rows, upsample.deconv.in_channels)
        pending.update(act=upsample_act, alpha=upsample_alpha)
        pending = plan.conv(packs[id(upsample)], ext.data_ptr(), rows)  # `rows` frames of stride phases
        rows *= upsample.stride
        width = upsample.deconv.out_channels
        if isinstance(block, MultiReceptiveField):
            pending = _multi_receptive_field(plan, packs, block, pending, rows, width)
            continue
        pending.update(rep=block.groups, seg=width)  # the channel repeat, written as it is stored
        pairs = list(zip(block.convs1, block.convs2))
        pending = _residual_units(plan, packs, pairs, block.activation, pending, rows, width * block.groups)
        ext, pending["out"] = plan.ext(block.conv_out, rows, width * block.groups)
        pending = plan.conv(packs[id(block.conv_out)], ext.data_ptr(), rows)
    output_conv = vocoder.output_conv
    ext, pending["out_act"] = plan.ext(output_conv, rows, output_conv.in_channels)
    act, alpha = _activation(vocoder.activation_output1)
    pending.update(act=act, alpha=alpha)
    output = plan.buffer(rows, output_conv.out_channels)
    plan.conv(packs[id(output_conv)], ext.data_ptr(), rows).update(out=output.data_ptr(), out_kind=OUT_TANH)
    plan.finish(output)
    return plan


def _pack(target: Build, generator: nn.Module, side: str, codebook: nn.Module, weights: torch.dtype) -> dict:
    """Every convolution of one side, packed (keyed by module id) with `weights` storage, and the
    tables of `codebook` (a ResidualVQ, float32): for the VQ search (2 * embed, |code|^2) and the
    code vectors."""
    if side == "encoder":
        modules = [*generator.encoder.modules(), *generator.projector.modules()]
    else:
        modules = list((generator if isinstance(generator, _vocoder_class()) else generator.decoder).modules())
    from models.vocoder.modules.residual_block import MultiReceptiveField

    packs: dict = {}
    for module in modules:
        if isinstance(module, CausalConvTranspose1d):
            packs[id(module)] = _Packed.transposed(target, module, weights)
        elif isinstance(module, (CausalConv1d, Conv1d1x1)):
            packs[id(module)] = _Packed.conv(target, module, weights)
        elif isinstance(module, MultiReceptiveField):  # the branches' mean as a 1 x 1 conv, in float32
            branches, width = len(module.blocks), module.blocks[0].convs1[0].in_channels
            mean = torch.cat([torch.eye(width) / branches] * branches, dim=1).unsqueeze(-1)
            packs[id(module)] = _Packed(target, mean, None)
    if getattr(generator, "norm", False):  # a vocoder's input normalization
        with torch.inference_mode(False), torch.no_grad():
            packs["norm"] = tuple(t.detach().float().contiguous() for t in (generator.mean, generator.scale))
    layers = codebook.layers
    lanes = target.lanes
    pad = -codebook.codebook_size % lanes  # tables padded to whole vectors; a padded code is never nearest
    with torch.inference_mode(False), torch.no_grad():
        packs["codebook_size"] = codebook.codebook_size
        size = codebook.codebook_size + pad
        # the doubled codebooks in blocks of `lanes` codes, (K, size / lanes, D, lanes); |code|^2; the codes
        packs["vq"] = (
            torch.stack([
                F.pad(2 * layer.embed, (0, pad)).reshape(-1, size // lanes, lanes).transpose(0, 1) for layer in layers
            ]).contiguous(),
            torch.stack([F.pad(layer.embed.pow(2).sum(0), (0, pad), value=math.inf) for layer in layers]).contiguous(),
            torch.stack([F.pad(layer.embed.t(), (0, 0, 0, pad)) for layer in layers]).contiguous(),
        )
    return packs


_is = operator.is_


class NativeStep(PerShapeStep):
    """One side of an AudioDec codec's streaming step through the native engine: waveform chunk ->
    codes (side "encoder": encoder, projector and VQ search) or codes -> waveform chunk (side
    "decoder": code lookup, then the symmetric decoder or a HiFi-GAN vocoder), with
    `codebook` (the transmitter's ResidualVQ), its convolution weights stored as `weights`
    (torch.float32, or torch.bfloat16 for a receiver: see WEIGHT_TYPES).
    A plan is built on a shape's first call (the engine's rounding is its own, and a transmitter
    must not mix it with another's); CPU inputs outside autograd only, anything else runs `step`
    (in float32)."""

    BUILD_AT_ONCE = True
    MAX_PLAN_BYTES = 256 << 20

    def __init__(
        self, generator: nn.Module, step: Callable, side: str, codebook: nn.Module,
        weights: torch.dtype = torch.float32,
    ) -> None:
        if weights not in WEIGHT_TYPES:
            raise ValueError(f"weights {weights}: the engine stores {', '.join(map(str, WEIGHT_TYPES))}")
        super().__init__(nn.ModuleList([generator, codebook]), step)  # (the weights key covers both)
        self.generator, self.codebook, self.side, self.weights = generator, codebook, side, weights
        self.target = build()
        self.library = self.target.library
        self.packs: dict | None = None
        self.packs_key: tuple | None = None
        self.layers = self._streaming_layers()

    def _streaming_layers(self) -> list[StreamingState]:
        """The streaming layers whose states a step reads and replaces, in the plans' order (any
        shape gives it: here one hop, or one frame of codes)."""
        shape = (self.generator.input_channels, self.generator.hop_length) if self.side == "encoder" else (1, 1)
        return [layer for layer, *_ in self._plan_for(shape).layers]

    def _plan_for(self, shape: tuple[int, int]) -> _Plan:
        """The plan for one stream's input `shape`, on weights packed once per weights key."""
        key = self._weights_key()
        if key != self.packs_key:
            packs = _pack(self.target, self.generator, self.side, self.codebook, self.weights)
            self.packs, self.packs_key = packs, key
        if self.side == "encoder":
            make_plan = _encoder_plan
        else:
            make_plan = _vocoder_plan if isinstance(self.generator, _vocoder_class()) else _decoder_plan
        return make_plan(self.generator, self.packs, shape)

    def _build(self, x: torch.Tensor, warm: bool) -> _Plan:
        plan = self._plan_for((x.shape[1], x.shape[2]))
        # A plan's buffers grow with its chunk: a streaming chunk's are small, an 80-frame block of a
        # whole file's large (a vocoder's most). Older plans go first beyond MAX_PLAN_BYTES.
        total = plan.nbytes
        for key in list(self.built):
            total += self.built[key].nbytes
        for key in list(self.built):
            if total <= self.MAX_PLAN_BYTES:
                break
            total -= self.built.pop(key).nbytes
        return plan

    @staticmethod
    def _state_pair(plan: _Plan, batch: int) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        """Two state vectors of `batch` streams for `plan`, each with its layers' views, made once:
        a step reads one and writes the other, so successive steps take them in turn and a step
        makes no views (a state is therefore valid until the second step after it: export_states
        copies)."""
        pair = plan.state_pairs.get(batch)
        if pair is None:
            size = plan.state_size
            pair = []
            for _ in range(2):
                vector = torch.empty(batch, size)
                views = [vector.as_strided((batch, *shape), (size, *strides), at) for shape, strides, at in plan.views]
                pair.append((vector, views))
            plan.state_pairs[batch] = pair
        return pair

    def _run(self, plan: _Plan, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        if self.side == "encoder":
            x = x.transpose(1, 2).contiguous()  # time-major (no copy for mono)
        else:
            x = x.to(torch.int64).contiguous()
        layers = self.layers
        states = [get_state(layer) for layer in layers]
        (first, first_views), (second, second_views) = self._state_pair(plan, batch)
        # The layers hold views of the vector the last step wrote: read it, write the other.
        if all(map(_is, states, first_views)):
            state_in, state_out, views = first, second, second_views
        elif all(map(_is, states, second_views)):
            state_in, state_out, views = second, first, first_views
        else:  # states set from elsewhere (a reset, another plan, the torch layers)
            state_in, state_out, views = first, second, second_views
            size = plan.state_size
            for (_, offset, shape, strides), state in zip(plan.layers, states):
                state_in.as_strided((batch, *shape), (size, *strides), offset).copy_(state)
        dtype = torch.int64 if self.side == "encoder" else torch.float32
        y = torch.empty(batch, *plan.output_shape, dtype=dtype)
        bad = self.library.engine_run(
            plan.op_array, len(plan.ops), plan.slot_array, len(plan.slots), plan.state_size,
            x.data_ptr(), plan.input_at, plan.input_bytes,
            plan.output_at, y.data_ptr(), plan.output_bytes,
            state_in.data_ptr(), state_out.data_ptr(), batch, torch.get_num_threads(),
        )
        if bad == ENGINE_NO_MEMORY:
            raise CodecError(f"no memory for the native engine's scratch on {torch.get_num_threads()} threads: "
                             "use fewer (--num_threads)")
        if bad:  # (the streams keep their states: nothing below ran)
            raise CodecError(f"codes must lie in [0, {self.codebook.codebook_size}): these are not this model's codes")
        for layer, view in zip(layers, views):
            set_state(layer, view)
        return y if self.side == "encoder" else y.transpose(1, 2)
