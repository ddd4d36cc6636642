"""Streaming state: what a causal layer remembers between chunks, and the one way code outside the
layers reaches it.

Every causal layer (`StreamingState`) owns its state: the last `pad_length` inputs it must see
again, `(B, C, pad)`, one row per independent stream. `reset_streaming(model, B)` starts B streams
from each layer's `pad_buffer` (zeros in every released model); each `step` of a layer reads the
state and replaces it. The layers know nothing of the runtimes that compile their steps.

Outside the layers (the runtimes of `utils/runtime`, the codec's stream set-up) states are read and
written through this module only:
- `get_state` / `set_state`: one layer's state (the runtimes, on every chunk);
- `export_states` / `import_states`: a model's states keyed by module path (the names of
  `named_modules`), to save streams and continue them later or elsewhere;
- `expand_streams`: one stream's state copied into a batch of streams;
- `record_usage`: which streaming layers (and packed convolutions) a piece of code ran, in this
  thread only, so that a runtime learns what one step uses while another thread runs another step
  of the same model (a live codec encodes and decodes in two threads).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from layers.layout import cat_time


class _Usage(threading.local):
    log: list | None = None  # while recording: the layers and packed convolutions that ran, in order


_USAGE = _Usage()


@contextmanager
def record_usage() -> Iterator[list]:
    """Collect the streaming layers and packed convolutions (`layers.conv.PackedConv`) that run
    in this thread meanwhile, in the order they run; other threads' are not seen."""
    _USAGE.log = log = []
    try:
        yield log
    finally:
        _USAGE.log = None


def note_usage(part: object) -> None:
    """Add `part` to this thread's `record_usage` log, if one is open."""
    if _USAGE.log is not None:
        _USAGE.log.append(part)


class StreamingState:
    """Mixin holding one layer's streaming buffer: the last `pad_length` inputs, (B, C, pad)."""

    pad_buffer: torch.Tensor
    pad_length: int
    _state: torch.Tensor | None

    def reset_state(self, batch_size: int = 1) -> None:
        """Start `batch_size` independent streams from the stored initial buffer."""
        self._state = self.pad_buffer.expand(batch_size, -1, -1).clone()

    def _push(self, x: torch.Tensor) -> torch.Tensor:
        """Prepend the state to chunk `x` (B, C, T) and keep the new tail as the next state."""
        if self._state is None or self._state.shape[0] != x.shape[0]:
            if self._state is not None:
                raise RuntimeError(
                    f"streaming batch changed from {self._state.shape[0]} to {x.shape[0]} streams; "
                    "call reset_streaming(model, batch_size) first"
                )
            self.reset_state(x.shape[0])
        note_usage(self)
        pad = self.pad_length
        if pad == 0:
            return x
        state = self._state
        x = cat_time(state if state.dtype == x.dtype else state.to(x.dtype), x)
        self._state = x[..., -pad:]  # one slice in a trace (`x[:, :, -pad:]` records three)
        return x


def get_state(layer: StreamingState) -> torch.Tensor | None:
    """The layer's state (B, C, pad), or None before its streams start."""
    return layer._state


def set_state(layer: StreamingState, state: torch.Tensor | None) -> None:
    """Replace the layer's state. The state is a plain attribute (no parameter, buffer or module),
    so it is stored without the search nn.Module.__setattr__ would make to find that out, for every
    layer of every chunk."""
    layer.__dict__["_state"] = state


def tensor_version(tensor: torch.Tensor) -> int:
    """The tensor's version counter, which an in-place change bumps (caches of weights compare it);
    -1 for an inference-mode tensor, which keeps none (a codec made under `torch.inference_mode()`:
    its storage is all there is to compare)."""
    return -1 if tensor.is_inference() else tensor._version


def streaming_layers(model: nn.Module) -> dict[str, StreamingState]:
    """The streaming layers of `model` by module path, in module order."""
    return {path: module for path, module in model.named_modules() if isinstance(module, StreamingState)}


def export_states(model: nn.Module) -> dict[str, torch.Tensor | None]:
    """A copy of every streaming layer's state by module path (copies: the native engine writes a
    step's states into the vector it read two steps before, utils/runtime/native.py)."""
    states = {path: get_state(layer) for path, layer in streaming_layers(model).items()}
    return {path: None if state is None else state.clone() for path, state in states.items()}


def import_states(model: nn.Module, states: Mapping[str, torch.Tensor | None]) -> None:
    """Set the states of the layers `states` names by module path (as `export_states` gives them)."""
    layers = streaming_layers(model)
    unknown = sorted(set(states) - set(layers))
    if unknown:
        raise KeyError(f"no streaming layer at {unknown[0]!r} in this model ({len(unknown)} unknown paths)")
    for path, state in states.items():
        set_state(layers[path], state)


def reset_streaming(model: nn.Module, batch_size: int = 1) -> None:
    """Start `batch_size` fresh independent streams in every streaming layer of `model`."""
    for layer in streaming_layers(model).values():
        layer.reset_state(batch_size)


def expand_streams(models: nn.Module | tuple[nn.Module, ...], batch_size: int) -> None:
    """Copy the (single) stream state of every started layer of `models` into `batch_size` streams
    (each layer once, where the models share layers: one generator as encoder and decoder)."""
    models = models if isinstance(models, tuple) else (models,)
    layers = {id(layer): layer for model in models for layer in streaming_layers(model).values()}
    for layer in layers.values():
        state = get_state(layer)
        if state is not None:
            set_state(layer, state.repeat(batch_size, 1, 1))
