"""The ways a codec's streaming steps run on CPU, and what each side falls back to: one table.

A `StreamingCodec` has three steps: the transmitter's (waveform chunk -> codes), the receiver's
(codes -> waveform chunk), and inside the latter the decoder's (latent -> waveform chunk).

| backend | transmitter | receiver |
| --- | --- | --- |
| `native` (default) | native engine (`native.py`), else as `torch` | native engine, lookup included, else as `torch` |
| `torch` | a TorchScript graph per chunk shape (`torchscript.py`), else eager | code lookup, decoder's graph |
| `eager` | op by op from Python | op by op from Python |

`native` falls back per side, for a reason `native.why_not_native` gives (the engine does not build
here, a block type or activation it lacks), with one notice when the engine does not build. A bf16
or int8 receiver (`--precision bf16|int8`: bf16 weights, or int8 ones with a scale per output
channel; float32 sums, on any CPU) runs only in the engine (`precision_problem` says why not
elsewhere). All three give the same codes as each other but for
the engine's own rounding, which a transmitter therefore uses for every call or never; none is
chosen by a timing, so the codes never depend on the load of the moment. Which is fastest where: docs/performance.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from utils.runtime import native, native_build
from utils.runtime.names import PRECISION_NAMES
from utils.runtime.per_shape import notice_once
from utils.runtime.torchscript import TracedStep

PRECISIONS = dict(zip(PRECISION_NAMES, (torch.float32, torch.bfloat16, torch.int8), strict=True))


@dataclass
class Steps:
    """The steps of one codec: `encode` (waveform chunk -> codes), `decode` (codes -> waveform
    chunk) and `decode_latent` (latent -> waveform chunk, what the receiver's eager step runs after
    the code lookup); `native_sides`: the sides the native engine runs ("encoder", "decoder")."""

    encode: Callable[[torch.Tensor], torch.Tensor]
    decode: Callable[[torch.Tensor], torch.Tensor]
    decode_latent: Callable[[torch.Tensor], torch.Tensor]
    native_sides: list[str] = field(default_factory=list)


def backend_on(backend: str, device: torch.device) -> str:
    """The backend that runs on `device`: the native engine and the TorchScript graphs are CPU code, so
    on a GPU every step is eager (and `native_sides` names none, and no engine is compiled)."""
    return backend if device.type == "cpu" else "eager"


def streaming_steps(
    backend: str, encoder: nn.Module, decoder: nn.Module, transmit: Callable, receive: Callable,
    precision: str = "fp32",
) -> Steps:
    """The steps of `backend` (see the module table) for an AudioDec `encoder` and a `decoder`
    (whose `decode(latent)` is its eager step); `transmit` and `receive` are the codec's eager
    transmitter and receiver steps, what every compiled step falls back to; `precision`: the
    native receiver's weight storage (PRECISIONS)."""
    if backend == "eager":
        return Steps(transmit, receive, decoder.decode)
    steps = Steps(TracedStep(encoder, transmit), receive, TracedStep(decoder, decoder.decode))
    if backend == "native":
        if not native_build.available():
            if precision == "fp32":  # else the receiver cannot run at all: precision_problem says so alone
                why = native_build.unavailable_reason()
                notice_once(__name__, f"native engine unavailable ({why}): running TorchScript")
            return steps
        codebook = encoder.quantizer.codebook
        if not native.why_not_native(encoder, "encoder"):
            steps.encode = native.NativeStep(encoder, transmit, "encoder", codebook)
            steps.native_sides.append("encoder")
        if not native.why_not_native(decoder, "decoder"):
            steps.decode = native.NativeStep(decoder, receive, "decoder", codebook, PRECISIONS[precision])
            steps.native_sides.append("decoder")
    return steps


def precision_problem(precision: str, device: torch.device, decoder: nn.Module, native_sides: list[str]) -> str:
    """"" when the receiver runs in `precision` here, else a one-line error naming the fix: a bf16 or
    int8 receiver runs only in the native engine (CPU)."""
    if precision == "fp32":
        return ""
    if device.type != "cpu":
        return f"precision {precision} is for a CPU receiver (in the native engine): use precision fp32 on {device}"
    if "decoder" not in native_sides:
        why = native_build.unavailable_reason() or native.why_not_native(decoder, "decoder")
        why = why or "the native backend is not selected"
        return (
            f"precision {precision} runs in the native engine, which does not run this receiver ({why}): "
            "use precision fp32"
        )
    return ""
