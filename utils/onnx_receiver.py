"""Optional receiver backend: the decoder's streaming step run by ONNX Runtime.

For each input shape (streams, latent channels, frames) the torch step is traced once into an
ONNX graph whose inputs are the latent chunk and the streaming state of every layer the step
uses, and whose outputs are the waveform chunk and the new states. ONNX Runtime then runs the
whole step as one call with its own fused kernels, where the eager path pays per operation.
The state stays in the torch layers (`_state`), so reset, batch expansion and the batch checks
of `layers.conv` work unchanged, and a stream can switch between backends or chunk sizes.

Measured (docs/performance.md): the symmetric AudioDec decoder runs about 2x faster per
300-sample chunk than the eager path, but no faster than the default TorchScript graphs
(utils/traced_step.py); the v1 HiFi-GAN vocoder runs slower (its grouped convolutions are faster
in oneDNN). So this is an option, not a default.
The transmitter is never run this way: a different float rounding could flip a VQ code.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from utils.errors import CodecError
from utils.traced_step import PerShapeStep, StepGraph


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as error:
        raise CodecError(
            "the onnxruntime backend needs the onnxruntime and onnx packages: pip install -r requirements.txt"
        ) from error
    return onnxruntime


class OnnxReceiver(PerShapeStep):
    """Callable latent chunk (B, C, frames) -> waveform chunk, continuing `module`'s streams.

    `module`: the receiver (HiFi-GAN vocoder, or an AudioDec generator used as decoder), whose
    `step(latent)` is the torch streaming step. A shape gets its ONNX Runtime session (a trace and
    a build, about a second, with the current torch thread count) when it comes a second time
    (see `PerShapeStep`). At most `MAX_BUILT` sessions are kept (each holds its own copy of the weights).
    """

    MAX_BUILT = 4

    def __init__(self, module: nn.Module, step: Callable) -> None:
        super().__init__(module, step)
        self.ort = _import_onnxruntime()

    def _build(self, latent: torch.Tensor, warm: bool) -> tuple:  # (the export reads no cache: `warm` is not needed)
        layers = self.layers
        names = ["latent"] + [f"state{i}" for i in range(len(layers))]
        with torch.inference_mode(False), torch.no_grad():
            example = torch.zeros(latent.shape)
            saved = [layer._state for layer in layers]
            states = [torch.zeros(state.shape) for state in saved]
            graph = io.BytesIO()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # tracer notes about shape-specialised Python branches
                    torch.onnx.export(
                        StepGraph(self.step, layers, []), (example, *states), graph, dynamo=False,
                        input_names=names, output_names=["waveform"] + [f"new_state{i}" for i in range(len(layers))],
                        opset_version=17,
                    )
            finally:
                for layer, state in zip(layers, saved):
                    layer._state = state
        options = self.ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle ORT threads would spin and take the cores from the torch transmitter between chunks
        # (encode went from 5 ms to 12 ms per 300-sample chunk, p95 47 ms).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = self.ort.InferenceSession(graph.getvalue(), options, providers=["CPUExecutionProvider"])
        return session, names

    def _run(self, built: tuple, latent: torch.Tensor) -> torch.Tensor:
        session, names = built
        layers = self.layers
        feed = {names[0]: np.ascontiguousarray(latent.detach().cpu().numpy(), dtype=np.float32)}
        for name, layer in zip(names[1:], layers):
            feed[name] = np.ascontiguousarray(layer._state.detach().cpu().numpy(), dtype=np.float32)
        waveform, *states = session.run(None, feed)
        for layer, state in zip(layers, states):
            layer._state = torch.from_numpy(state)
        return torch.from_numpy(waveform)
