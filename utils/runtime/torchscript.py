"""Streaming steps run as TorchScript graphs, one per chunk shape.

The eager step pays Python for every layer: attribute lookups, state bookkeeping; for a 300-sample
chunk that is most of the encoder's time. `TracedStep` records the step once per input shape with
`torch.jit.trace` into a graph whose inputs are the chunk, the streaming state of every layer the
step uses, and the oneDNN-packed weights (opaque tensors cannot be graph constants), and whose
outputs are the result and the new states. The graph runs the very operations the eager step ran,
in order and with the same kernels, so its output is bitwise the eager output: this is what lets
the transmitter use it too (its codes must not depend on how it is run).

The state stays in the torch layers, so reset, batch expansion, backend switches and chunk-size
changes behave as in eager mode. A shape is traced on its second call (`per_shape.PerShapeStep`),
and any in-place or replaced weight makes a new trace.

TorchScript is deprecated from torch 2.13 on: where a trace cannot be made (a torch without
`torch.jit.trace`, or one whose tracer fails on the step), the step runs eagerly from then on,
after one warning that says why; the eager step has run that shape by then, so the failure is the
tracer's, not the input's.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

from layers.conv import PackedConv
from layers.streaming import StreamingState, get_state, set_state
from utils.runtime.per_shape import PerShapeStep, notice_once, used_parts


class StepGraph(nn.Module):
    """step(x, *states, *packed) -> (y, *new states): the form a trace records."""

    def __init__(self, step: Callable, layers: list[StreamingState], packs: list[PackedConv]) -> None:
        super().__init__()
        self.step = step
        self.layers = layers
        self.packs = packs

    def forward(self, x: torch.Tensor, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        count = len(self.layers)
        for layer, state in zip(self.layers, inputs[:count]):
            set_state(layer, state)
        for pack, packed in zip(self.packs, inputs[count:]):
            pack.packed = packed
        return (self.step(x), *[get_state(layer) for layer in self.layers])


# The tracer's notes on the layers' shape-specialised Python branches, which the per-shape graphs are
# made for: filtered once here, as changing the filters around each trace is not thread-safe (two
# codecs tracing in two threads could leave "ignore everything" behind for the whole process).
warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"(layers|models)\.")


class _NoTrace(Exception):
    """The tracer could not record the step (its message says why)."""


class TracedStep(PerShapeStep):
    """`PerShapeStep` whose compiled form is a TorchScript graph (sharing the module's weights), or
    the eager step once a trace has failed (`untraceable` says why). TorchScript keeps every traced
    graph in its global compilation unit, also one nothing refers to any more: a stream that comes in
    more than `MAX_BUILT` shapes runs those beyond eagerly (the same result) instead of growing."""

    FREES_BUILT = False

    OPTIMIZE = False  # the graph executor's optimising passes (see _run)

    def __init__(self, module: nn.Module, step: Callable) -> None:
        super().__init__(module, step)
        self.untraceable = ""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.untraceable:
            return self.step(x)
        try:
            return super().__call__(x)
        except _NoTrace as error:
            self.untraceable = str(error)
            self.built.clear()
            why = f"TorchScript cannot trace the streaming step here ({error})"
            notice_once(__name__, f"{why}: the torch backend runs it eagerly")
            return self.step(x)

    def _build(self, x: torch.Tensor, warm: bool) -> tuple:
        # An eager run of this shape (states put back) leaves in every cache the step reads what
        # this shape needs: the chosen formulations, and the packed weights in the layout oneDNN
        # runs at this length, which become graph inputs. The first build follows the run that
        # found the step's parts, which did just that.
        if not warm:
            used_parts(self.module, self.step, x)
        layers = self.layers
        packs = [pack for pack in self.packs if pack.packed is not None]
        packed = [pack.packed for pack in packs]
        saved = [get_state(layer) for layer in layers]
        try:
            graph = torch.jit.trace(StepGraph(self.step, layers, packs), (x, *saved, *packed), check_trace=False)
            # Inline the scripted oneDNN calls, then fold the argument lists that are constants and
            # drop what nothing uses: a third fewer nodes for the interpreter, the same operations.
            torch._C._jit_pass_inline(graph.graph)
            torch._C._jit_pass_constant_propagation(graph.graph)
            torch._C._jit_pass_dce(graph.graph)
        except Exception as error:  # the eager step ran this shape: the tracer failed, not the input
            raise _NoTrace(f"{type(error).__name__}: {error}".splitlines()[0]) from error
        finally:
            for layer, state in zip(layers, saved):
                set_state(layer, state)
            for pack, tensor in zip(packs, packed):
                pack.packed = tensor
        return graph, packed

    def _run(self, built: tuple, x: torch.Tensor) -> torch.Tensor:
        graph, packed = built
        layers = self.layers
        # The graph computes exactly the eager operations; without the executor's optimising
        # passes nothing is fused or reordered, and no shape guards can fall back to slow paths.
        with torch.jit.optimized_execution(self.OPTIMIZE):
            y, *states = graph(x, *[get_state(layer) for layer in layers], *packed)
        for layer, state in zip(layers, states):
            set_state(layer, state)
        return y
