"""The frame every compiled streaming step shares: one compiled form per chunk shape.

A `PerShapeStep` continues a module's streams through a compiled form of its eager step, built per
input shape and kept while the weights stay the same: `torchscript.TracedStep` (a TorchScript
graph) and `native.NativeStep` (a native-engine plan) fill in how to build and run one.
"""

from __future__ import annotations

import functools
import logging
import operator
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import nn

from layers.conv import PackedConv
from layers.streaming import StreamingState, get_state, record_usage, set_state, streaming_layers
from utils.errors import CodecError

_data_ptr = torch.Tensor.data_ptr
_version = operator.attrgetter("_version")

# Bumped whenever any module gets a parameter or buffer (set or replaced), so that a PerShapeStep
# re-lists its module's tensors only then and otherwise checks just their versions.
_REGISTRATIONS = [0]


def _count_registration(*_) -> None:
    _REGISTRATIONS[0] += 1


nn.modules.module.register_module_parameter_registration_hook(_count_registration)
nn.modules.module.register_module_buffer_registration_hook(_count_registration)


@functools.cache
def notice_once(logger: str, message: str) -> None:
    """`message` as a warning of `logger`, once per process: a fall-back every codec load would repeat."""
    logging.getLogger(logger).warning(message)


def used_parts(
    module: nn.Module, step: Callable, example: torch.Tensor
) -> tuple[list[StreamingState], list[PackedConv]]:
    """The streaming layers whose state one `step(example)` reads and replaces, and the packed
    convolutions it runs (an AudioDec generator holds both its encoder's and its decoder's layers;
    a step uses one side). The step's states are put back afterwards; other threads' are not touched."""
    saved = {id(layer): get_state(layer) for layer in streaming_layers(module).values()}
    with record_usage() as log:
        try:
            step(example)
        finally:
            layers = list({id(m): m for m in log if isinstance(m, StreamingState) and m.pad_length > 0}.values())
            for layer in layers:
                set_state(layer, saved[id(layer)])
    packs = list({id(m): m for m in log if isinstance(m, PackedConv)}.values())
    return layers, packs


def check_states(layers: list[StreamingState], batch: int) -> None:
    """Start the streams of layers that have none (as their eager step would), and refuse a batch
    that differs from the streams' (as their eager step would)."""
    for layer in layers:
        state = get_state(layer)
        if state is None:
            layer.reset_state(batch)
        elif state.shape[0] != batch:
            raise CodecError(f"streaming batch changed from {state.shape[0]} to {batch} streams: reset first")


class PerShapeStep(ABC):
    """Callable chunk -> `step(chunk)`, continuing `module`'s streams, through a compiled form of
    the step built per input shape (`_build`, run by `_run`); the base of
    `utils.runtime.torchscript.TracedStep` and `utils.runtime.native.NativeStep`.

    A shape gets its compiled form when it comes a second time: a stream's chunks repeat their
    shape, whereas the one-off lengths of whole files (every file ends in a different remainder)
    would each cost a build for one call, so those run the eager step. At most `MAX_BUILT` forms
    are kept, least recently used out first, where a form's memory is given back when it is dropped
    (`FREES_BUILT`); where it is not, at most `MAX_BUILT` are ever built, and shapes beyond run the
    eager step. Changed or replaced weights make a new form. CPU inputs outside autograd only:
    anything else runs the eager step.
    """

    MAX_BUILT = 8
    MAX_SEEN = 256
    BUILD_AT_ONCE = False  # True: build on a shape's first call (the build must be cheap)
    FREES_BUILT = True  # False: a dropped form keeps its memory, so forms are never replaced

    def __init__(self, module: nn.Module, step: Callable) -> None:
        self.module = module
        self.step = step
        self.built: dict[tuple, object] = {}  # key -> compiled form; insertion order = LRU first
        self.seen: set[tuple] = set()
        self.layers: list[StreamingState] | None = None  # found on the first build; their states are inputs
        self.packs: list[PackedConv] = []
        self.tensors: list[torch.Tensor] = []
        self.versioned: list[torch.Tensor] = []
        self.registrations = -1
        self.builds = 0

    def _weights_key(self) -> tuple:
        """Storage and version of every parameter and buffer: a compiled form holds the weights it
        was built with, so any change needs a new one. The tensors are listed anew only when some
        module registered one (listing costs far more than comparing). Inference-mode tensors keep
        no version; their storage is all there is to compare."""
        if self.registrations != _REGISTRATIONS[0]:
            self.registrations = _REGISTRATIONS[0]
            self.tensors = [*self.module.parameters(), *self.module.buffers()]
            self.versioned = [t for t in self.tensors if not t.is_inference()]
        return tuple(map(_data_ptr, self.tensors)), tuple(map(_version, self.versioned))

    @abstractmethod
    def _build(self, x: torch.Tensor, warm: bool) -> object:
        """The compiled form of the step for x's shape (the step's layers are known by then);
        `warm`: an eager step of this shape has just run, so the caches it reads are filled."""

    @abstractmethod
    def _run(self, built: object, x: torch.Tensor) -> torch.Tensor:
        """step(x) through `built`, leaving the new states in the layers."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or torch.is_grad_enabled():
            return self.step(x)
        key = (tuple(x.shape), x.dtype, torch.get_num_threads(), self._weights_key())
        built = self.built.pop(key, None)
        warm = False
        if built is None:
            if not self.BUILD_AT_ONCE and key not in self.seen:
                if len(self.seen) >= self.MAX_SEEN:
                    self.seen.clear()
                self.seen.add(key)
                return self.step(x)
            if not self.FREES_BUILT and self.builds >= self.MAX_BUILT:
                return self.step(x)  # the same result; another form would be memory never given back
            if len(self.built) >= self.MAX_BUILT:
                del self.built[next(iter(self.built))]
            if self.layers is None:
                self.layers, self.packs = used_parts(self.module, self.step, x)
                warm = True
        check_states(self.layers, x.shape[0])  # streams start in the torch layers, as the eager step starts them
        if built is None:
            built = self._build(x, warm)
            self.builds += 1
        self.built[key] = built
        return self._run(built, x)
