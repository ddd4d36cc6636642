"""The TorchScript graphs of the streaming steps compute exactly what the eager steps compute."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from layers.conv import PackedConv
from layers.streaming import StreamingState
from tests.conftest import MANIFEST, official_path
from utils.audiodec import StreamingCodec
from utils.errors import CodecError
from utils.runtime import per_shape, torchscript
from utils.runtime.per_shape import used_parts
from utils.runtime.torchscript import TracedStep


def load(name: str, backend: str = "torch") -> StreamingCodec:
    entry = MANIFEST[name]
    return StreamingCodec.from_checkpoints(
        official_path(entry["encoder_checkpoint"]), official_path(entry["decoder_checkpoint"]), backend=backend
    )


def run_both(traced: TracedStep, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """traced(x) and the eager step(x), each from the same stream state; the traced state is kept."""
    layers = [m for m in traced.module.modules() if isinstance(m, StreamingState) and m._state is not None]
    saved = [layer._state.clone() for layer in layers]
    graphs = len(traced.built)
    y = traced(x)
    new = [layer._state for layer in layers]
    for layer, state in zip(layers, saved):
        layer._state = state
    expected = traced.step(x)
    for layer, state, reference in zip(layers, new, [layer._state for layer in layers]):
        assert torch.equal(state, reference), "a graph left a different stream state than the eager step"
        layer._state = state
    assert len(traced.built) >= graphs
    return y, expected


@pytest.mark.parametrize("name", ["vctk_sym", "vctk_v1"])
def test_graphs_compute_the_eager_step_bit_for_bit(name: str) -> None:
    """Two streams, chunk sizes changing mid-stream: the first chunk of a shape runs eagerly, later
    ones run its graph; codes, waveform and every layer's new state equal the eager step's exactly."""
    torch.manual_seed(8)
    codec = load(name)
    codec.reset(2)
    x = 0.3 * torch.randn(2, 1, 300 * 30)
    cuts = [0, 300, 600, 900, 2400, 3900, 5400, 5700, 6000, 9000]
    for start, end in zip(cuts, cuts[1:]):
        with torch.inference_mode():
            codes, expected_codes = run_both(codec._encode_chunk, x[..., start:end])
            assert torch.equal(codes, expected_codes)
            latent = codec.encoder.lookup(codes)
            y, expected = run_both(codec._decode_latent, latent)
            assert torch.equal(y, expected)
    # 300- and 1500-sample chunks came three times: both have graphs, for each side
    for traced, frames in ((codec._encode_chunk, (300, 1500)), (codec._decode_latent, (1, 5))):
        assert sorted(key[0][-1] for key in traced.built) == list(frames)


def test_whole_file_equals_the_eager_backend() -> None:
    """Blocks of 80 frames repeat a shape, so the whole-file path runs graphs; the codes equal the
    eager backend's (whose receiver may round differently only through its own tuning)."""
    torch.manual_seed(9)
    x = 0.3 * torch.randn(1, 1, 300 * 170 + 5)
    codes, y = load("vctk_sym").code(x)
    eager_codes, eager_y = load("vctk_sym", "eager").code(x)
    assert torch.equal(codes, eager_codes)
    torch.testing.assert_close(y, eager_y, rtol=0, atol=1e-5)


def test_changed_weights_get_a_new_graph() -> None:
    """A graph holds the weights it was traced with: changing one in place, or replacing it, must not
    leave a stale graph in use."""
    torch.manual_seed(10)
    codec = load("vctk_v1")
    codec.reset(1)
    receiver = codec._decode_latent
    latent = codec.encoder.lookup(torch.randint(0, codec.codebook_size, (1, codec.n_codebooks, 2)))
    with torch.inference_mode():
        for _ in range(3):
            run_both(receiver, latent)
        assert len(receiver.built) == 1
        conv = codec.decoder.output_conv.conv
        with torch.no_grad():
            conv.weight.mul_(2.0)
        y, expected = run_both(receiver, latent)  # a new key: eager
        y, expected = run_both(receiver, latent)  # traced again with the new weight
        assert torch.equal(y, expected) and len(receiver.built) == 2
    conv.weight = nn.Parameter(conv.weight.detach() * 0.5)
    with torch.inference_mode():
        for _ in range(2):
            y, expected = run_both(receiver, latent)
        assert torch.equal(y, expected) and len(receiver.built) == 3


def test_graph_count_is_bounded_and_batches_are_checked() -> None:
    """TorchScript never frees a traced graph: past MAX_BUILT shapes, a stream runs the eager step
    (the same result) instead of tracing more, and memory stays bounded however it is cut."""
    codec = load("vctk_sym")
    codec.reset(1)
    receiver = codec._decode_latent
    functions = torch.jit._state._python_cu.get_functions
    with torch.inference_mode():
        for frames in range(1, receiver.MAX_BUILT + 4):
            latent = codec.encoder.lookup(torch.zeros(1, codec.n_codebooks, frames, dtype=torch.long))
            run_both(receiver, latent)
            y, expected = run_both(receiver, latent)
            assert torch.equal(y, expected)
            built = sorted(key[0][-1] for key in receiver.built)
            assert built == list(range(1, min(frames, receiver.MAX_BUILT) + 1))
            if frames == receiver.MAX_BUILT:
                traced = len(functions())
        assert len(functions()) == traced  # nothing traced past the bound
        with pytest.raises((CodecError, RuntimeError), match="streaming batch changed from 1 to 2"):
            receiver(torch.cat([latent, latent]))


def test_the_eager_backend_builds_no_graphs() -> None:
    codec = load("vctk_sym", "eager")
    codec.reset(1, frame_size=600)
    assert not isinstance(codec._encode_chunk, TracedStep) and not isinstance(codec._decode_latent, TracedStep)


def test_finding_a_steps_parts_leaves_other_threads_layers_alone() -> None:
    """A live codec encodes and decodes one generator's two halves in two threads: finding the
    decoder step's layers must put back only their states, not the encoder's, which the other thread
    may have moved on meanwhile."""
    codec = load("vctk_sym")
    codec.reset(1)
    encoder_layer = next(
        m for m in codec.encoder.encoder.modules() if isinstance(m, StreamingState) and m.pad_length > 0
    )
    moved_on = encoder_layer._state + 1.0
    latent = codec.encoder.lookup(torch.zeros(1, codec.n_codebooks, 2, dtype=torch.long))
    decoder_layers = [m for m in codec.decoder.decoder.modules() if isinstance(m, StreamingState) and m.pad_length]
    before = [layer._state for layer in decoder_layers]

    def step(chunk: torch.Tensor) -> torch.Tensor:
        encoder_layer._state = moved_on  # the encoder thread, meanwhile
        return codec.decoder.decode(chunk)

    with torch.inference_mode():
        layers, packs = used_parts(codec.decoder, step, latent)
    assert encoder_layer._state is moved_on
    assert {id(m) for m in layers} == {id(m) for m in decoder_layers}
    assert all(layer._state is state for layer, state in zip(decoder_layers, before))
    assert packs and all(isinstance(pack, PackedConv) for pack in packs)


def test_a_shapes_first_graph_costs_one_eager_step_and_one_trace() -> None:
    """The build that follows the eager run which found the step's parts does not run it again;
    a later shape's build runs one eager step (to fill the caches for its length) and one trace."""
    codec = load("vctk_sym")
    codec.reset(1)
    receiver = codec._decode_latent
    calls = {"eager": 0, "traced": 0}
    step = receiver.step

    def counting(latent: torch.Tensor) -> torch.Tensor:
        calls["traced" if torch.jit.is_tracing() else "eager"] += 1
        return step(latent)

    receiver.step = counting
    with torch.inference_mode():
        for frames, eager_on_build in ((2, 1), (3, 1)):
            latent = codec.encoder.lookup(torch.zeros(1, codec.n_codebooks, frames, dtype=torch.long))
            receiver(latent)  # first sight of the shape: the eager step
            calls.update(eager=0, traced=0)
            receiver(latent)  # second: the graph is built, then run
            assert calls == {"eager": eager_on_build, "traced": 1}
            receiver(latent)
            assert calls == {"eager": eager_on_build, "traced": 1}  # the graph ran, no step


@pytest.mark.parametrize("failure", ["trace raises", "no torch.jit.trace"])
def test_a_torch_that_cannot_trace_runs_the_eager_step(
    failure: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """TorchScript is deprecated: where tracing fails or is gone, the torch backend's steps run
    eagerly after one warning naming why, and code exactly as the eager backend does."""
    if failure == "trace raises":
        def trace(*args, **kwargs):
            raise RuntimeError("tracing is not supported in this build\nsecond line")

        monkeypatch.setattr(torch.jit, "trace", trace)
        reason = "RuntimeError: tracing is not supported in this build)"
    else:
        monkeypatch.delattr(torch.jit, "trace")
        reason = "AttributeError"
    per_shape.notice_once.cache_clear()
    torch.manual_seed(11)
    x = 0.3 * torch.randn(1, 1, 300 * 12)
    codecs = {backend: load("vctk_sym", backend) for backend in ("torch", "eager")}
    results = {}
    with caplog.at_level("WARNING", logger=torchscript.__name__):
        for backend, codec in codecs.items():
            codec.reset(1)
            codes = [codec.encode(x[..., start:start + 300]) for start in range(0, x.shape[-1], 300)]
            results[backend] = torch.cat(codes, dim=-1), torch.cat([codec.decode(frame) for frame in codes], dim=-1)
    assert torch.equal(results["torch"][0], results["eager"][0])
    assert torch.equal(results["torch"][1], results["eager"][1])
    for traced in (codecs["torch"]._encode_chunk, codecs["torch"]._decode_latent):
        assert traced.untraceable and not traced.built
    warnings = [record.getMessage() for record in caplog.records if record.name == torchscript.__name__]
    assert len(warnings) == 1 and reason in warnings[0] and "runs it eagerly" in warnings[0], warnings


def test_tracing_in_several_threads_leaves_the_warning_filters_as_they_were() -> None:
    """Changing the filters around each trace was not thread-safe: overlapping traces in two threads left
    "ignore every warning" behind for the whole process."""
    import threading
    import warnings

    codecs = [load("vctk_sym") for _ in range(3)]
    x = 0.1 * torch.randn(1, 1, 300 * 12)
    before = list(warnings.filters)
    errors = []

    def stream(codec: StreamingCodec) -> None:
        try:
            codec.reset(1)
            for start in range(0, x.shape[-1], 300):
                codec.decode(codec.encode(x[..., start : start + 300]))
        except Exception as error:  # noqa: BLE001 (reported below)
            errors.append(error)

    threads = [threading.Thread(target=stream, args=(codec,)) for codec in codecs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and all(len(codec._encode_chunk.built) == 1 for codec in codecs)
    assert warnings.filters == before
