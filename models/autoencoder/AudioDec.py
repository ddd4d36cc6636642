"""AudioDec generator: encoder -> projector -> residual VQ -> decoder.

`forward` is the training pass; `encode / quantize / lookup / decode` are the streaming inference
steps (each call continues the streams where the previous one stopped; see `layers.conv`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch
from torch import nn

from layers.weight_norm import apply_weight_norm
from models.autoencoder.modules.decoder import ActivateDecoder, Decoder
from models.autoencoder.modules.encoder import ActivateEncoder, Encoder
from models.autoencoder.modules.projector import Projector
from models.autoencoder.modules.quantizer import Quantizer

CODECS: dict[str, tuple[type[Encoder], type[Decoder]]] = {
    "audiodec": (Encoder, Decoder),
    "activate_audiodec": (ActivateEncoder, ActivateDecoder),
}


class Generator(nn.Module):
    """The AudioDec autoencoder; kwargs are the config's `generator_params`.

    `kmeans_init`, `kmeans_iters` and `threshold_ema_dead_code` are options of the codebooks that keep
    their codes in use (off by default, as the original trains; see `layers.vq`).
    """

    def __init__(
        self,
        input_channels: int = 1,
        output_channels: int = 1,
        encode_channels: int = 32,
        decode_channels: int = 32,
        code_dim: int = 64,
        codebook_num: int = 8,
        codebook_size: int = 1024,
        bias: bool = True,
        enc_ratios: Sequence[int] = (2, 4, 8, 16),
        dec_ratios: Sequence[int] = (16, 8, 4, 2),
        enc_strides: Sequence[int] = (3, 4, 5, 5),
        dec_strides: Sequence[int] = (5, 5, 4, 3),
        mode: str = "causal",
        codec: str = "audiodec",
        projector: str = "conv1d",
        quantier: str = "residual_vq",
        nonlinear_activation: str = "ELU",
        nonlinear_activation_params: dict | None = None,
        use_weight_norm: bool = False,
        quantizer_dropout: bool = False,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        threshold_ema_dead_code: float = 0.0,
    ) -> None:
        super().__init__()
        if codec not in CODECS:
            raise ValueError(f"unknown codec '{codec}': use one of {sorted(CODECS)}")
        encoder_class, decoder_class = CODECS[codec]
        activation = {
            "nonlinear_activation": nonlinear_activation,
            "nonlinear_activation_params": nonlinear_activation_params,
        }
        self.mode = mode
        self.input_channels = input_channels
        self.output_channels = output_channels
        self.hop_length = math.prod(enc_strides)
        if math.prod(dec_strides) != self.hop_length:
            raise ValueError(f"enc_strides {enc_strides} and dec_strides {dec_strides} give different hops")
        self.quantizer_dropout = quantizer_dropout
        self.encoder = encoder_class(
            input_channels=input_channels, encode_channels=encode_channels, channel_ratios=enc_ratios,
            strides=enc_strides, kernel_size=7, bias=bias, mode=mode, **activation,
        )
        self.decoder = decoder_class(
            code_dim=code_dim, output_channels=output_channels, decode_channels=decode_channels,
            channel_ratios=dec_ratios, strides=dec_strides, kernel_size=7, bias=bias, mode=mode, **activation,
        )
        self.projector = Projector(
            input_channels=self.encoder.out_channels, code_dim=code_dim, kernel_size=3, stride=1,
            bias=False, mode=mode, model=projector,
        )
        self.quantizer = Quantizer(
            code_dim=code_dim, codebook_num=codebook_num, codebook_size=codebook_size, model=quantier,
            kmeans_init=kmeans_init, kmeans_iters=kmeans_iters, threshold_ema_dead_code=threshold_ema_dead_code,
        )
        if use_weight_norm:
            # The original also re-draws the weights from N(0, 0.01) here, but through the old
            # weight-norm hook that draw is overwritten at the next forward: g = |v| of the
            # default init is what it really trains from, and what we start from.
            apply_weight_norm(self)

    @property
    def n_codebooks(self) -> int:
        return self.quantizer.codebook.num_quantizers

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook.codebook_size

    def _to_mono_batch(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, length = x.shape
        if channels != self.input_channels:
            x = x.reshape(-1, self.input_channels, length)
        return x

    def forward(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass on x (B, C, T): returns (y, zq, z, vq_loss (n,), perplexity (n,)).

        With `quantizer_dropout`, each training batch uses a random number of codebooks (1..K),
        so one model serves every bitrate.
        """
        z = self.projector(self.encoder(self._to_mono_batch(x)))
        n_quantizers = None
        if self.training and self.quantizer_dropout:
            n_quantizers = random.randint(1, self.n_codebooks)
        zq, vq_loss, perplexity = self.quantizer(z, n_quantizers)
        return self.decoder(zq), zq, z, vq_loss, perplexity

    # Streaming inference (state lives in the causal layers; see layers.streaming).
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Waveform chunk (B, C, T) -> latent chunk (B, code_dim, T / hop)."""
        return self.projector.step(self.encoder.step(self._to_mono_batch(x)))

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Latent (B, code_dim, T') -> codes (B, K, T')."""
        return self.quantizer.encode(z)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, K', T') -> latent (B, code_dim, T') from the first K' codebooks."""
        return self.quantizer.decode(codes)

    def decode(self, zq: torch.Tensor) -> torch.Tensor:
        """Latent chunk (B, code_dim, T') -> waveform chunk (B, C_out, T' * hop)."""
        return self.decoder.step(zq)
