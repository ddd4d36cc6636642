"""Residual vector quantizer with exponential-moving-average codebooks.

Buffer names (`embed` (dim, size), `cluster_size` (size,), `embed_avg` (dim, size)) follow the
original checkpoints. The arithmetic of the nearest-code search and of the straight-through
value is kept exactly as the original computes it: the codes an official model transmits
depend on it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class VectorQuantize(nn.Module):
    """One EMA codebook of `codebook_size` vectors of size `dim`."""

    def __init__(
        self, dim: int, codebook_size: int, decay: float = 0.8, commitment: float = 1.0, eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.dim = dim
        self.codebook_size = codebook_size
        self.decay = decay
        self.commitment = commitment
        self.eps = eps
        embed = torch.randn(dim, codebook_size)
        self.register_buffer("embed", embed)
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.register_buffer("embed_avg", embed.clone())

    @property
    def codebook(self) -> torch.Tensor:
        """The code vectors, (codebook_size, dim)."""
        return self.embed.t()

    def _search_terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(2 * embed, |code|^2 per code (1, size)); cached outside training while `embed` is
        unchanged (a streaming chunk of a few frames would otherwise spend more on these than on
        the search)."""
        if self.training or torch.is_grad_enabled():
            return 2 * self.embed, self.embed.pow(2).sum(0, keepdim=True)
        cached = getattr(self, "_search_cache", None)
        if cached is None or cached[0] is not self.embed or cached[1] != self.embed._version:
            with torch.inference_mode(False), torch.no_grad():
                terms = (2 * self.embed, self.embed.pow(2).sum(0, keepdim=True))
            cached = self._search_cache = (self.embed, self.embed._version, terms)
        return cached[2]

    def distances(self, flatten: torch.Tensor) -> torch.Tensor:
        """|x - code|^2, expanded as the original computes it, for each row x of `flatten` (N, dim)
        and each code -> (N, size).

        On the CPU outside autograd every row's products with the codebook come from a one-row
        matrix product, whatever N is: MKL rounds a row's sums differently in products of 1-3 rows
        than in larger ones (up to 6e-6 here), and a streaming chunk searches its frames (one per
        300 samples) where a whole file searches 80 at a time, so a code at a near-tie could
        otherwise depend on how the signal was cut (Contract 2). Training, and GPUs (where a
        product per row would cost a kernel launch each), keep one product for the batch."""
        embed2, norm = self._search_terms()
        if self.training or torch.is_grad_enabled() or flatten.shape[0] == 1 or flatten.device.type != "cpu":
            products = flatten @ embed2
        else:
            products = torch.cat([row @ embed2 for row in flatten.split(1)])
        return flatten.pow(2).sum(1, keepdim=True) - products + norm

    def nearest(self, flatten: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each row of `flatten` (N, dim) -> (N,).

        The original computes (-(|x|^2 - 2 x @ embed + |code|^2)).max(1). This is the same
        arithmetic with two operations fewer per stage: doubling is exact in floating point, so
        x @ (2 embed) has the bits of 2 x @ embed, and negation is exact, so the first minimum of
        the distances is the first maximum of their negatives."""
        return self.distances(flatten).min(1).indices

    def _ema_update(self, flatten: torch.Tensor, onehot: torch.Tensor) -> None:
        self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(flatten.t() @ onehot, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.codebook_size * self.eps) * total
        self.embed.copy_(self.embed_avg / smoothed.unsqueeze(0))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantize x (..., dim); returns (straight-through value, commitment loss, perplexity).

        In training mode the codebook follows the assigned vectors by EMA (Laplace-smoothed sizes).
        """
        flatten = x.reshape(-1, self.dim)
        indices = self.nearest(flatten)
        onehot = F.one_hot(indices, self.codebook_size).type(x.dtype)
        quantized = F.embedding(indices.view(*x.shape[:-1]), self.codebook)
        if self.training:
            with torch.no_grad():
                self._ema_update(flatten.detach(), onehot)
        loss = F.mse_loss(quantized.detach(), x) * self.commitment
        quantized = x + (quantized - x).detach()
        probs = onehot.mean(0)
        perplexity = torch.exp(-torch.sum(probs * torch.log(probs + 1e-10)))
        return quantized, loss, perplexity

    def quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference: x (..., dim) -> (value x + (q - x), indices (...))."""
        indices = self.nearest(x.reshape(-1, self.dim)).view(*x.shape[:-1])
        quantized = F.embedding(indices, self.codebook)
        return x + (quantized - x), indices


class ResidualVQ(nn.Module):
    """`num_quantizers` codebooks, each quantizing what the previous ones left over."""

    def __init__(self, *, num_quantizers: int, dim: int, codebook_size: int, **kwargs) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.layers = nn.ModuleList(
            VectorQuantize(dim=dim, codebook_size=codebook_size, **kwargs) for _ in range(num_quantizers)
        )

    @property
    def num_quantizers(self) -> int:
        return len(self.layers)

    def forward(
        self, x: torch.Tensor, n_quantizers: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass on x (B, T, dim) with the first `n_quantizers` codebooks (default all).

        Returns (quantized (B, T, dim), losses (n,), perplexities (n,)). The residual subtracts
        the straight-through value, so only the first codebook's path carries encoder gradient.
        Under autocast (mixed-precision training) it runs in float32: nearest-code distances and EMA
        statistics in bfloat16 would pick other codes and lose the small EMA increments.
        """
        if torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                return self.forward(x.float(), n_quantizers)
        quantized_out = torch.zeros_like(x)
        residual = x
        losses, perplexities = [], []
        for layer in self.layers[: n_quantizers or self.num_quantizers]:
            quantized, loss, perplexity = layer(residual)
            residual = residual - quantized
            quantized_out = quantized_out + quantized
            losses.append(loss)
            perplexities.append(perplexity)
        return quantized_out, torch.stack(losses), torch.stack(perplexities)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes of x (B, T, dim) -> (B, num_quantizers, T), each in [0, codebook_size)."""
        residual = x
        codes = []
        for layer in self.layers:
            quantized, indices = layer.quantize(residual)
            residual = residual - quantized
            codes.append(indices)
        return torch.stack(codes, dim=1)

    def _table(self) -> torch.Tensor:
        """All codebooks stacked, (num_quantizers * size, dim); cached while no `embed` changes."""
        key = [(layer.embed, layer.embed._version) for layer in self.layers]
        cached = getattr(self, "_table_cache", None)
        if cached is None or any(a is not b or u != v for (a, u), (b, v) in zip(cached[0], key)):
            with torch.inference_mode(False), torch.no_grad():
                table = torch.cat([layer.codebook for layer in self.layers])
            cached = self._table_cache = (key, table)
        return cached[1]

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Latent from codes (B, K, T), K <= num_quantizers -> (B, T, dim).

        Sums the rows of the first K codebooks in codebook order, as the original receiver does.
        """
        n_used = codes.shape[1]
        if n_used > self.num_quantizers:
            raise ValueError(f"{n_used} codebooks given but the model has {self.num_quantizers}")
        table = self._table()[: n_used * self.codebook_size]
        offsets = torch.arange(n_used, device=codes.device).view(1, n_used, 1) * self.codebook_size
        rows = F.embedding((codes + offsets).transpose(0, 1), table)
        return rows.sum(dim=0)
