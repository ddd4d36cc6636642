"""Every model block type three ways: its offline `forward`, its streaming `step`, and its plan in
the native engine. A change to a block must be made in all three (docs/architecture.md); these
tests fail when they disagree.

The cases cover the transmitter (the encoder's input conv, EncoderBlock: ResidualUnit x 3 and a
strided conv, the Projector, the residual VQ), the symmetric receiver (the decoder's input conv,
DecoderBlock: CausalConvTranspose1d and ResidualUnit x 3, the output conv) and the vocoder receiver
(HiFi-GAN's input normalization and conv, upsampling transposed convs, grouped blocks or v0's
multi-receptive-field blocks, tanh output), each with ELU and with LeakyReLU activations; the
AudioDec ones also as the activate codec (an activation after the encoder, before each decoder
block and its output conv, and a tanh output).
"""

from __future__ import annotations

import pytest
import torch

from layers.streaming import reset_streaming
from models.autoencoder.AudioDec import Generator
from models.vocoder.HiFiGAN import Generator as HiFiGAN
from utils.runtime import native_build
from utils.runtime.native import NativeStep, why_not_native

ACTIVATIONS = {"ELU": {"alpha": 1.0}, "LeakyReLU": {"negative_slope": 0.2}}
CODECS = ["audiodec", "activate_audiodec"]
FRAMES = 80
# The offline transposed convolutions take the first frame as history where a stream starts from
# zeros; the difference has died out this many frames in (the receptive field of what follows).
SETTLE_FRAMES = 50
BATCH = 2

needs_engine = pytest.mark.skipif(
    not native_build.available(), reason=f"native engine unavailable: {native_build.unavailable_reason()}"
)


def autoencoder(activation: str, codec: str = "audiodec") -> Generator:
    """A small AudioDec (hop 6; channel counts off the engine's vector width)."""
    torch.manual_seed(5)
    return Generator(
        encode_channels=6, decode_channels=6, code_dim=10, codebook_num=3, codebook_size=20,
        enc_ratios=(2, 3), dec_ratios=(3, 2), enc_strides=(2, 3), dec_strides=(3, 2), codec=codec,
        nonlinear_activation=activation, nonlinear_activation_params=ACTIVATIONS[activation],
    ).eval()


def vocoder(activation: str, blocks: str = "grouped") -> HiFiGAN:
    """A small HiFi-GAN with input normalization, hop 6: grouped (v1's structure), or with
    multi-receptive-field blocks (v0's; here branches of other kernels, dilations and unit counts)."""
    torch.manual_seed(6)
    if blocks == "grouped":
        structure = {"resblock_kernel_sizes": (5,), "resblock_dilations": ((1, 3, 5),), "groups": 3}
    else:
        structure = {"resblock_kernel_sizes": (3, 5, 7), "resblock_dilations": ((1, 3), (1, 2, 4), (2,))}
    model = HiFiGAN(
        in_channels=10, channels=64, upsample_scales=(2, 3), upsample_kernel_sizes=(4, 6), **structure,
        use_weight_norm=False, nonlinear_activation=activation, nonlinear_activation_params=ACTIVATIONS[activation],
        stats="unused", load_stats=False,
    ).eval()
    with torch.no_grad():
        model.mean.copy_(0.1 * torch.randn(10))
        model.scale.copy_(0.5 + torch.rand(10))
    return model


def streamed(module: torch.nn.Module, step, x: torch.Tensor) -> torch.Tensor:
    """`step(x)` from fresh streams (every state at its `pad_buffer`)."""
    reset_streaming(module, x.shape[0])
    return step(x)


def random_codes(size: int = 20, books: int = 3) -> torch.Tensor:
    return torch.randint(0, size, (BATCH, books, FRAMES), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@torch.no_grad()
def test_transmitter_blocks(activation: str, codec: str) -> None:
    """Encoder, projector and VQ: the same latent offline and streamed, the same codes all three ways."""
    generator = autoencoder(activation, codec)
    x = 0.3 * torch.randn(BATCH, 1, FRAMES * generator.hop_length, generator=torch.Generator().manual_seed(2))
    latent_forward = generator.projector(generator.encoder(x))
    latent_step = streamed(generator, generator.encode, x)
    torch.testing.assert_close(latent_step, latent_forward, rtol=0, atol=1e-5)
    codes_step = generator.quantize(latent_step)
    assert torch.equal(generator.quantize(latent_forward), codes_step)
    if native_build.available():
        assert why_not_native(generator, "encoder") == ""
        transmit = NativeStep(
            generator, lambda chunk: generator.quantize(generator.encode(chunk)), "encoder",
            generator.quantizer.codebook,
        )
        assert torch.equal(streamed(generator, transmit, x), codes_step)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("receiver", ["decoder", "activate_decoder", "vocoder", "mrf_vocoder"])
@torch.no_grad()
def test_receiver_blocks(receiver: str, activation: str) -> None:
    """Code lookup, then the symmetric decoder (of either codec) or a vocoder: streamed equals
    offline once the first frame's history has died out, and the native plan equals the streamed
    step throughout."""
    generator = autoencoder(activation, "activate_audiodec" if receiver == "activate_decoder" else "audiodec")
    if receiver.endswith("vocoder"):
        model = offline = vocoder(activation, "grouped" if receiver == "vocoder" else "mrf")
    else:
        model, offline = generator, generator.decoder
    codes = random_codes()
    latent = generator.lookup(codes)
    wave_step = streamed(model, model.decode, latent)
    settled = SETTLE_FRAMES * generator.hop_length
    torch.testing.assert_close(wave_step[..., settled:], offline(latent)[..., settled:], rtol=0, atol=1e-5)
    if native_build.available():
        assert why_not_native(model, "decoder") == ""
        receive = NativeStep(
            model, lambda chunk: model.decode(generator.lookup(chunk)), "decoder", generator.quantizer.codebook
        )
        torch.testing.assert_close(streamed(model, receive, codes), wave_step, rtol=0, atol=1e-5)


@needs_engine
def test_every_block_case_runs_natively() -> None:
    """The cases above reach the native plans (the engine is built here), none falls back."""
    for activation in ACTIVATIONS:
        for codec in CODECS:
            generator = autoencoder(activation, codec)
            assert why_not_native(generator, "encoder") == why_not_native(generator, "decoder") == ""
        for blocks in ("grouped", "mrf"):
            assert why_not_native(vocoder(activation, blocks), "decoder") == ""
