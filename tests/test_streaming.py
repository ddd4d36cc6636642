"""Contract 2: streaming in chunks equals one whole-signal pass, per layer and end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from layers.conv import CausalConv1d, CausalConvTranspose1d
from layers.streaming import StreamingState, export_states, import_states, reset_streaming
from models.autoencoder.AudioDec import Generator
from models.autoencoder.modules.residual_unit import ResidualUnit
from models.vocoder.HiFiGAN import Generator as HiFiGAN
from tests.conftest import MANIFEST, official_path
from utils.audiodec import StreamingCodec
from utils.errors import CodecError

CHUNKS = [300, 1500, 4800]
BATCHES = [1, 3]


def stream(layer: torch.nn.Module, x: torch.Tensor, chunk: int, batch: int) -> torch.Tensor:
    reset_streaming(layer, batch)
    return torch.cat([layer.step(x[..., i:i + chunk]) for i in range(0, x.shape[-1], chunk)], dim=-1)


def whole(layer: torch.nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
    reset_streaming(layer, batch)
    return layer.step(x)


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize(
    "layer",
    [
        CausalConv1d(2, 3, kernel_size=7),
        CausalConv1d(2, 3, kernel_size=7, dilation=9),
        CausalConv1d(2, 3, kernel_size=6, stride=3),
        CausalConv1d(4, 4, kernel_size=11, dilation=5, groups=2),
        ResidualUnit(2, 2, dilation=3),
    ],
    ids=["conv", "dilated", "strided", "grouped", "residual_unit"],
)
def test_causal_conv_layers(layer: torch.nn.Module, chunk: int, batch: int) -> None:
    torch.manual_seed(0)
    channels = layer.conv1.conv.in_channels if isinstance(layer, ResidualUnit) else layer.conv.in_channels
    x = torch.randn(batch, channels, 9600)
    expected = whole(layer, x, batch)
    torch.testing.assert_close(stream(layer, x, chunk, batch), expected, rtol=0, atol=1e-5)
    # From zero history, the streaming pass is the offline (zero-padded) training pass.
    torch.testing.assert_close(expected, layer(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("chunk", [1, 4, 16])
@pytest.mark.parametrize("batch", BATCHES)
def test_causal_transposed_conv(chunk: int, batch: int) -> None:
    torch.manual_seed(0)
    layer = CausalConvTranspose1d(3, 2, kernel_size=10, stride=5)
    x = torch.randn(batch, 3, 32)
    expected = whole(layer, x, batch)
    assert expected.shape == (batch, 2, 32 * 5)
    torch.testing.assert_close(stream(layer, x, chunk, batch), expected, rtol=0, atol=1e-5)


def test_streams_in_a_batch_are_independent() -> None:
    torch.manual_seed(0)
    layer = CausalConv1d(1, 2, kernel_size=5, dilation=3)
    x = torch.randn(3, 1, 600)
    batched = stream(layer, x, 300, 3)
    for index in range(3):
        torch.testing.assert_close(stream(layer, x[index:index + 1], 300, 1), batched[index:index + 1])


def test_batch_change_without_reset_is_an_error() -> None:
    layer = CausalConv1d(1, 1, kernel_size=3)
    reset_streaming(layer, 2)
    with pytest.raises(RuntimeError, match="reset_streaming"):
        layer.step(torch.zeros(3, 1, 10))


def test_states_exported_by_module_path_continue_the_streams() -> None:
    """export_states / import_states: streams saved after a chunk and put back after other audio
    continue exactly as if nothing had run meanwhile."""
    torch.manual_seed(0)
    encoder = Generator(encode_channels=4, decode_channels=4, code_dim=8, codebook_size=16).eval().encoder
    x = torch.randn(2, 1, 300 * 4)
    with torch.no_grad():
        reset_streaming(encoder, 2)
        encoder.step(x[..., :600])
        saved = export_states(encoder)
        expected = encoder.step(x[..., 600:])
        encoder.step(torch.randn(2, 1, 900))
        import_states(encoder, saved)
        assert torch.equal(encoder.step(x[..., 600:]), expected)
    assert list(saved) == [path for path, m in encoder.named_modules() if isinstance(m, StreamingState)]
    with pytest.raises(KeyError, match="no streaming layer"):
        import_states(encoder, {"no.such.layer": None})


@pytest.mark.parametrize("chunk", [1, 5])
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("part", ["encoder", "decoder", "vocoder"])
def test_model_parts(part: str, chunk: int, batch: int) -> None:
    """Encoder and decoder of a small AudioDec, and a small HiFi-GAN, frame by frame."""
    torch.manual_seed(0)
    autoencoder = Generator(encode_channels=4, decode_channels=4, code_dim=8, codebook_size=16).eval()
    if part == "encoder":
        module, x, hop = autoencoder.encoder, torch.randn(batch, 1, 300 * 10), 300
    elif part == "decoder":
        module, x, hop = autoencoder.decoder, torch.randn(batch, 8, 10), 1
    else:
        module = HiFiGAN(
            in_channels=8, channels=16, upsample_scales=(5, 5, 4, 3), upsample_kernel_sizes=(10, 10, 8, 6),
            resblock_kernel_sizes=(11,), resblock_dilations=((1, 3, 5),), groups=3,
        ).eval()
        module.step = module.decode
        x, hop = torch.randn(batch, 8, 10), 1
    with torch.no_grad():
        expected = whole(module, x, batch)
        torch.testing.assert_close(stream(module, x, chunk * hop, batch), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["vctk_v1", "vctk_sym", "vctk_activate_sym"])
@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("batch", BATCHES)
def test_end_to_end(name: str, chunk: int, batch: int) -> None:
    """Codec chunks of 300/1500/4800 samples: identical codes, waveform within 1e-5."""
    entry = MANIFEST[name]
    codec = StreamingCodec.from_checkpoints(
        official_path(entry["encoder_checkpoint"]), official_path(entry["decoder_checkpoint"])
    )
    torch.manual_seed(1)
    x = 0.3 * torch.randn(batch, 1, 4800 * 4)
    codes, y = codec.code(x)
    codec.reset(batch)
    chunk_codes, chunk_audio = [], []
    for start in range(0, x.shape[-1], chunk):
        piece = codec.encode(x[..., start:start + chunk])
        chunk_codes.append(piece)
        chunk_audio.append(codec.decode(piece))
    torch.testing.assert_close(torch.cat(chunk_codes, dim=-1), codes, rtol=0, atol=0)
    torch.testing.assert_close(torch.cat(chunk_audio, dim=-1), y, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["vctk_v1", "vctk_sym"])
def test_long_inputs_run_in_blocks(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long encode/decode call is split into blocks of BLOCK_FRAMES frames; the result is the
    one-pass result (codes identical, waveform within 1e-5), the last block shorter than the rest.
    (Eager backend: the spy below sees Python calls, which a TorchScript graph makes none of.)"""
    import utils.audiodec as audiodec

    entry = MANIFEST[name]
    codec = StreamingCodec.from_checkpoints(
        official_path(entry["encoder_checkpoint"]), official_path(entry["decoder_checkpoint"]), backend="eager"
    )
    torch.manual_seed(2)
    x = 0.3 * torch.randn(2, 1, codec.hop_length * 23)
    monkeypatch.setattr(audiodec, "BLOCK_FRAMES", 10**9)
    codes, y = codec.code(x)
    lengths: list[int] = []
    encode = codec.encoder.encode
    monkeypatch.setattr(codec.encoder, "encode", lambda chunk: lengths.append(chunk.shape[-1]) or encode(chunk))
    monkeypatch.setattr(audiodec, "BLOCK_FRAMES", 5)
    blocked_codes, blocked_y = codec.code(x)
    assert lengths[-5:] == [5 * codec.hop_length] * 4 + [3 * codec.hop_length]
    torch.testing.assert_close(blocked_codes, codes, rtol=0, atol=0)
    torch.testing.assert_close(blocked_y, y, rtol=0, atol=1e-5)


@pytest.fixture(scope="module", params=["native", "torch", "eager"])
def any_backend(request: pytest.FixtureRequest) -> StreamingCodec:
    entry = MANIFEST["vctk_sym"]
    return StreamingCodec.from_checkpoints(
        official_path(entry["encoder_checkpoint"]), official_path(entry["decoder_checkpoint"]), backend=request.param
    )


def test_empty_chunks_give_empty_results_and_leave_the_streams_as_they_were(any_backend: StreamingCodec) -> None:
    codec = any_backend
    torch.manual_seed(5)
    x = 0.3 * torch.randn(2, 1, 1200)
    codec.reset(2)
    straight = codec.encode(x)
    codec.reset(2)
    first = codec.encode(x[..., :600])
    empty = codec.encode(x[..., :0])
    assert empty.shape == (2, codec.n_codebooks, 0) and empty.dtype == torch.int64
    assert torch.equal(torch.cat([first, codec.encode(x[..., 600:])], dim=-1), straight)
    audio = codec.decode(straight[..., :0])
    assert audio.shape == (2, 1, 0) and audio.dtype == torch.float32


@pytest.mark.parametrize("chunk, message", [
    (torch.zeros(1, 2, 600), r"a chunk is \(streams, 1, samples\) for model 'custom', got \(1, 2, 600\): code each "
                             r"channel as its own stream"),
    (torch.zeros(1, 600), r"a chunk is \(streams, 1, samples\) .*got \(1, 600\)"),
    (torch.zeros(600), r"got \(600,\)"),
    (torch.zeros(1, 1, 1, 600), r"got \(1, 1, 1, 600\)"),
    (torch.zeros(1, 1, 600, dtype=torch.int16), r"samples are floats in \[-1, 1\], got torch.int16: scale integer"),
    (torch.zeros(1, 1, 600, dtype=torch.complex64), r"the chunk is complex \(torch.complex64\): the codec codes real"),
    (torch.zeros(1, 1, 450), r"chunk of 450 samples is not a multiple of the hop \(300\)"),
    (torch.tensor([[[0.0] * 299 + [float("nan")]]]), r"the chunk holds NaN or infinite samples"),
    (torch.full((1, 1, 300), float("inf")), r"NaN or infinite"),
    ([0.0] * 300, r"a chunk is a torch.Tensor \(streams, 1, samples\), not a list"),
])  # fmt: skip
def test_a_chunk_the_codec_cannot_code_is_named(any_backend: StreamingCodec, chunk, message: str) -> None:
    any_backend.reset(1)
    with pytest.raises(CodecError, match=message):
        any_backend.encode(chunk)
    if isinstance(chunk, torch.Tensor) and chunk.dim() == 3 and chunk.shape[1] == 1 and chunk.is_floating_point():
        return  # a whole signal need not be a multiple of the hop; NaN stays an error below
    with pytest.raises(CodecError, match=message):
        any_backend.code(chunk)


@pytest.mark.parametrize("codes, message", [
    (torch.full((1, 8, 2), 64), r"codes must lie in \[0, 64\), got \[64, 64\]: these are not this model's"),
    (torch.full((1, 8, 2), -5), r"codes must lie in \[0, 64\), got \[-5, -5\]"),
    (torch.full((1, 8, 2), 1.7), r"codes are integers, got torch.float32"),
    (torch.zeros(1, 8, 2, dtype=torch.bool), r"codes are integers, got torch.bool"),
    (torch.zeros(1, 9, 2, dtype=torch.long), r"codes must be a tensor \(streams, 1..8, frames\), got \(1, 9, 2\)"),
    (torch.zeros(8, 2, dtype=torch.long), r"got \(8, 2\)"),
    ([[[0, 0]]], r"got a list"),
])  # fmt: skip
def test_codes_the_codec_cannot_decode_are_named_alike_on_every_backend(
    any_backend: StreamingCodec, codes, message: str
) -> None:
    any_backend.reset(1)
    with pytest.raises(CodecError, match=message):
        any_backend.decode(codes)
    with pytest.raises(CodecError, match=message):
        any_backend.decode_signal(codes, 600)
    fine = torch.zeros(1, 8, 2, dtype=torch.int32)
    assert any_backend.decode(fine).shape == (1, 1, 600)  # the stream goes on after a refused call


def test_counts_are_checked(any_backend: StreamingCodec) -> None:
    codec = any_backend
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(CodecError, match=rf"batch_size {bad!r}: give the number of streams, 1 or more"):
            codec.reset(bad)
    for bad in (0, -300, 450, 300.0):
        with pytest.raises(CodecError, match=rf"frame size {bad!r} is not a positive multiple of the hop \(300\)"):
            codec.reset(1, frame_size=bad)
    x = 0.1 * torch.randn(1, 1, 900)
    for bad in (0, -1, 9, 2.0):
        with pytest.raises(CodecError, match=rf"n_codebooks {bad!r}: this model has 1..8"):
            codec.code(x, n_codebooks=bad)
        with pytest.raises(CodecError, match=rf"n_codebooks {bad!r}: this model has 1..8"):
            codec.bitrate(bad)
    assert codec.bitrate() == 8 * codec.bitrate(1) and codec.bitrate(np.int64(3)) == 3 * codec.bitrate(1)
    codes, y = codec.code(x, n_codebooks=3)
    assert codes.shape == (1, 8, 3) and y.shape == x.shape


def test_what_the_codec_gives_back_is_an_ordinary_tensor(any_backend: StreamingCodec) -> None:
    """Made under inference mode, but handed back as tensors a caller may change in place or train on."""
    codec = any_backend
    x = 0.1 * torch.randn(1, 1, 900)
    codes, y = codec.code(x)
    codec.reset(1)
    for tensor in (codes, y, codec.encode(x), codec.decode(codes), codec.code_unquantized(x)):
        assert not tensor.is_inference()
    codes[:, 4:] = 0  # fewer codebooks, in place
    layer = torch.nn.Conv1d(1, 1, 3)
    layer(y).sum().backward()
    assert layer.weight.grad is not None


def test_inputs_the_codec_cannot_take_are_named(any_backend: StreamingCodec) -> None:
    codec = any_backend
    codec.reset(1)
    with pytest.raises(CodecError, match=r"a chunk of 0 streams: give at least one"):
        codec.encode(torch.zeros(0, 1, 600))
    with pytest.raises(CodecError, match=r"the chunk is on the meta device, which holds no samples"):
        codec.encode(torch.zeros(1, 1, 600, device="meta"))
    with pytest.raises(CodecError, match=r"the codes are on the meta device"):
        codec.decode(torch.zeros(1, 8, 2, dtype=torch.long, device="meta"))
    loud = torch.full((1, 1, 600), 3e38)  # finite, though their float32 sum is not
    assert codec.encode(loud).shape == (1, 8, 2)
    audio = 0.1 * np.random.default_rng(1).standard_normal((900, 2))
    with pytest.raises(CodecError, match=r"samples are floats in \[-1, 1\], got int16: scale integer ones"):
        codec.streams_from_audio((audio * 32768).astype(np.int16))
    with pytest.raises(CodecError, match=r"a NumPy array \(samples, channels\), got shape \(900,\): read with "):
        codec.streams_from_audio(audio[:, 0])
    assert codec.streams_from_audio(audio).shape == (2, 1, 900)
    with pytest.raises(CodecError, match=r"file samples are complex \(complex128\)"):
        codec.streams_from_audio(audio.astype(np.complex128))
    long = 0.1 * np.random.default_rng(2).standard_normal((1500, 2))
    for channels_first in (long.T, long[:, :1].T):  # (2, 1500), (1, 1500): more channels than any file holds
        shape = str(channels_first.shape).replace("(", r"\(").replace(")", r"\)")
        with pytest.raises(CodecError, match=rf"file samples of shape {shape} read as .* transpose a channels-first"):
            codec.streams_from_audio(channels_first)
    assert codec.streams_from_audio(audio[:2]).shape == (2, 1, 2)  # as many samples as channels
    assert codec.streams_from_audio(audio[:1]).shape == (2, 1, 1)  # a file of one stereo sample is one
    assert codec.streams_from_audio(np.zeros((0, 2))).shape == (2, 1, 0)  # no samples of 2 channels


def test_codes_stored_unsigned_decode_as_the_encoder_gave_them(any_backend: StreamingCodec) -> None:
    codec = any_backend
    codes, y = codec.code(0.1 * torch.randn(1, 1, 900))
    for dtype in (torch.uint8, torch.int16, torch.uint16, torch.uint32):
        stored = codes.clamp(max=torch.iinfo(dtype).max).to(dtype)
        torch.testing.assert_close(codec.decode_signal(stored, 900), codec.decode_signal(stored.long(), 900),
                                   rtol=0, atol=0)


def test_a_whole_signal_length_the_codes_cannot_give_is_refused(any_backend: StreamingCodec) -> None:
    codec = any_backend
    codes, y = codec.code(0.1 * torch.randn(1, 1, 900))  # 3 frames
    torch.testing.assert_close(codec.decode_signal(codes, 900), y, rtol=0, atol=0)
    assert codec.decode_signal(codes, 0).shape == (1, 1, 0)
    for bad in (901, -5, 900.0, True):
        with pytest.raises(CodecError, match=rf"length {bad!r}: 3 frames of codes give 0 to 900 samples"):
            codec.decode_signal(codes, bad)


def test_a_whole_signal_decoded_in_blocks_is_the_same_samples(any_backend: StreamingCodec) -> None:
    """decode_signal_blocks, what the file decoder writes from: pieces of at most BLOCK_FRAMES frames
    that join to decode_signal's output, the output delay and the tail cut as there; bad codes or a
    length the codes cannot give are refused at the call, before any piece."""
    from utils.audiodec import BLOCK_FRAMES

    codec = any_backend
    block = BLOCK_FRAMES * codec.hop_length
    for length in (0, 1, block - codec.output_delay, 2 * block + 7):
        codes = codec.encode_signal(0.1 * torch.randn(2, 1, length))
        pieces = list(codec.decode_signal_blocks(codes, length))
        assert all(0 < piece.shape[-1] <= block and piece.shape[:2] == (2, 1) for piece in pieces)
        whole = torch.cat(pieces, -1) if pieces else torch.empty(2, 1, 0)
        torch.testing.assert_close(whole, codec.decode_signal(codes, length), rtol=0, atol=0)
    assert len(pieces) == 3
    with pytest.raises(CodecError, match=r"length 901: 3 frames of codes give 0 to 900 samples"):
        codec.decode_signal_blocks(codes[..., :3], 901)
    with pytest.raises(CodecError, match=rf"codes must lie in \[0, {codec.codebook_size}\)"):
        codec.decode_signal_blocks(codes + codec.codebook_size, 600)


def test_a_signal_coded_piece_by_piece_has_the_whole_signals_codes(any_backend: StreamingCodec) -> None:
    """encode_signal_blocks, what a long file is coded with as it is read: pieces of any length (not whole
    hops, one empty) give encode_signal's codes of their join, the output delay's padding included."""
    from utils.audiodec import BLOCK_FRAMES

    codec = any_backend
    length = (2 * BLOCK_FRAMES + 4) * codec.hop_length + 7  # more than two encoder blocks
    x = 0.1 * torch.randn(2, 1, length, generator=torch.Generator().manual_seed(4))
    cuts = [0, 1, 301, 301, (BLOCK_FRAMES + 1) * codec.hop_length + 5, length]  # the 4th spans a block's end
    pieces = [x[..., start:end] for start, end in zip(cuts, cuts[1:])]
    torch.testing.assert_close(codec.encode_signal_blocks(pieces), codec.encode_signal(x), rtol=0, atol=0)
    codes, samples = codec.encode_audio(iter([x[0].T.numpy()[:1000], x[0].T.numpy()[1000:]]))
    assert samples == x.shape[-1]
    torch.testing.assert_close(codes, codec.encode_signal(x[:1]), rtol=0, atol=0)
    with pytest.raises(CodecError, match="no pieces of signal to code"):
        codec.encode_signal_blocks([])


@pytest.mark.parametrize("device, message", [
    ("meta", r"device 'meta' holds no weights to code with: use 'cpu' or 'cuda\[:N\]'"),
    ("bogus", r"device 'bogus' is not a device: use 'cpu' or 'cuda\[:N\]'"),
    pytest.param("cuda", r"device 'cuda' cannot be used here \(.+\): use 'cpu'",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
])  # fmt: skip
def test_a_device_this_machine_cannot_code_on_is_named(device: str, message: str) -> None:
    entry = MANIFEST["vctk_sym"]
    with pytest.raises(CodecError, match=message):
        StreamingCodec.from_checkpoints(official_path(entry["encoder_checkpoint"]),
                                        official_path(entry["decoder_checkpoint"]), device=device)
