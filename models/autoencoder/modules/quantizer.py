"""Quantizer wrapper: (B, code_dim, T) latents <-> residual-VQ codes."""

from __future__ import annotations

import torch
from torch import nn

from layers.vq import ResidualVQ


class Quantizer(nn.Module):
    """Holds the residual VQ as `codebook` (the original's module name); `kmeans_init`, `kmeans_iters`
    and `threshold_ema_dead_code` are the codebooks' options (see `layers.vq`)."""

    def __init__(
        self,
        code_dim: int,
        codebook_num: int,
        codebook_size: int,
        model: str = "residual_vq",
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        threshold_ema_dead_code: float = 0.0,
    ) -> None:
        super().__init__()
        if model != "residual_vq":
            raise ValueError(f"unknown quantizer '{model}': only 'residual_vq' exists")
        for name, value, least in (("codebook_num", codebook_num, 1), ("codebook_size", codebook_size, 2),
                                   ("code_dim", code_dim, 1)):
            if value < least:
                raise ValueError(f"{name} {value}: give {least} or more")
        self.codebook = ResidualVQ(
            num_quantizers=codebook_num, dim=code_dim, codebook_size=codebook_size, kmeans_init=kmeans_init,
            kmeans_iters=kmeans_iters, threshold_ema_dead_code=threshold_ema_dead_code,
        )

    def forward(
        self, z: torch.Tensor, n_quantizers: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training: z (B, D, T) -> (zq (B, D, T), losses (n,), perplexities (n,))."""
        zq, losses, perplexities = self.codebook(z.transpose(2, 1), n_quantizers)
        return zq.transpose(2, 1), losses, perplexities

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, D, T) -> codes (B, K, T)."""
        return self.codebook.encode(z.transpose(2, 1))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, K', T) -> zq (B, D, T) from the first K' codebooks."""
        return self.codebook.decode(codes).transpose(2, 1)
