"""Contract 2: streaming in chunks equals one whole-signal pass, per layer and end to end."""

from __future__ import annotations

import pytest
import torch

from layers.conv import CausalConv1d, CausalConvTranspose1d
from layers.streaming import StreamingState, export_states, import_states, reset_streaming
from models.autoencoder.AudioDec import Generator
from models.autoencoder.modules.residual_unit import ResidualUnit
from models.vocoder.HiFiGAN import Generator as HiFiGAN
from tests.conftest import MANIFEST, official_path
from utils.audiodec import StreamingCodec

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
