"""The ways a codec's streaming steps run on CPU, and what each side falls back to: one table.

A `StreamingCodec` has three steps: the transmitter's (waveform chunk -> codes), the receiver's
(codes -> waveform chunk), and inside the latter the decoder's (latent -> waveform chunk).

| backend | transmitter | receiver |
| --- | --- | --- |
| `native` (default) | native engine (`native.py`), else as `torch` | native engine, lookup included, else as `torch` |
| `torch` | a TorchScript graph per chunk shape (`torchscript.py`) | code lookup, then the decoder's graph |
| `eager` | op by op from Python | op by op from Python |

`native` falls back per side, for a reason `native.why_not_native` gives (the engine does not build
here, a block type or activation it lacks), with one notice when the engine does not build. A bf16
receiver (`--precision bf16`) runs natively with bf16 weights and float32 sums on any CPU; through
TorchScript it needs oneDNN's bf16 convolutions, which only some CPUs have (`bf16_receiver_problem`).
All three give the same codes as each other but for the engine's own rounding, which a transmitter
therefore uses for every call or never; none is chosen by a timing, so the codes never
depend on the load of the moment. Which is fastest where: docs/performance.md.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from layers.conv import PackedConv
from utils.runtime import native, native_build
from utils.runtime.torchscript import TracedStep

BACKENDS = ("native", "torch", "eager")
DEFAULT_BACKEND = "native"
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass
class Steps:
    """The steps of one codec: `encode` (waveform chunk -> codes), `decode` (codes -> waveform
    chunk) and `decode_latent` (latent -> waveform chunk, what the receiver's eager step runs after
    the code lookup); `native_sides`: the sides the native engine runs ("encoder", "decoder")."""

    encode: Callable[[torch.Tensor], torch.Tensor]
    decode: Callable[[torch.Tensor], torch.Tensor]
    decode_latent: Callable[[torch.Tensor], torch.Tensor]
    native_sides: list[str] = field(default_factory=list)


def streaming_steps(
    backend: str, encoder: nn.Module, decoder: nn.Module, transmit: Callable, receive: Callable
) -> Steps:
    """The steps of `backend` (see the module table) for an AudioDec `encoder` and a `decoder`
    (whose `decode(latent)` is its eager step); `transmit` and `receive` are the codec's eager
    transmitter and receiver steps, what every compiled step falls back to."""
    if backend == "eager":
        return Steps(transmit, receive, decoder.decode)
    steps = Steps(TracedStep(encoder, transmit), receive, TracedStep(decoder, decoder.decode))
    if backend == "native":
        if not native_build.available():
            _notice_once(f"native engine unavailable ({native_build.unavailable_reason()}): running TorchScript")
            return steps
        codebook = encoder.quantizer.codebook
        if not native.why_not_native(encoder, "encoder"):
            steps.encode = native.NativeStep(encoder, transmit, "encoder", codebook)
            steps.native_sides.append("encoder")
        if not native.why_not_native(decoder, "decoder"):
            steps.decode = native.NativeStep(decoder, receive, "decoder", codebook)
            steps.native_sides.append("decoder")
    return steps


@functools.cache
def cpu_bf16_problem() -> str:
    """"" when oneDNN runs bf16 convolutions on this CPU (what a bf16 receiver needs outside the
    native engine), else why not. Decided by running one small bf16 convolution the way the
    receiver does: oneDNN's bf16 path exists only on some CPUs (AVX-512 BW/VL/DQ, AVX-NE-CONVERT),
    and elsewhere it raises."""
    try:
        with torch.inference_mode():
            PackedConv().run(torch.zeros(1, 16, 8), torch.zeros(16, 16, 3), None, 1, 1, 1, torch.bfloat16)
    except RuntimeError:
        return (
            f"this CPU ({torch.backends.cpu.get_cpu_capability()}) has no bf16 convolutions in oneDNN "
            f"(they need AVX-512 BW/VL/DQ or AVX-NE-CONVERT)"
        )
    return ""


def bf16_receiver_problem(backend: str, decoder: nn.Module, native_sides: list[str]) -> str:
    """"" when a bf16 receiver runs here, else a one-line error naming the fix. The native engine
    runs one on any CPU (bf16 weights, float32 sums); otherwise it needs oneDNN's bf16 path."""
    if "decoder" in native_sides or not cpu_bf16_problem():
        return ""
    if backend != "native":
        fix = "use --backend native or --precision fp32"
        return f"--precision bf16 with --backend {backend}: {cpu_bf16_problem()}: {fix}"
    why = native_build.unavailable_reason() or native.why_not_native(decoder, "decoder")
    return (
        f"--precision bf16: the native engine does not run this receiver ({why}) and {cpu_bf16_problem()}: "
        "use --precision fp32"
    )


@functools.cache
def _notice_once(message: str) -> None:
    logging.getLogger(__name__).warning(message)
