"""Residual vector quantizer with exponential-moving-average codebooks.

Buffer names (`embed` (dim, size), `cluster_size` (size,), `embed_avg` (dim, size)) follow the
original checkpoints. The arithmetic of the nearest-code search and of the straight-through
value is kept exactly as the original computes it: the codes an official model transmits
depend on it.

Two options keep a codebook's codes in use (both off by default, and then the codebook trains exactly
as the original's):
- ``kmeans_init``: at its first training pass a codebook is set to the k-means centroids (a few Lloyd
  iterations) of the vectors it receives, so codes start on the data instead of as standard-normal
  draws far from a fresh encoder's small outputs.
- ``threshold_ema_dead_code``: after each EMA update, a code whose EMA cluster size is below the
  threshold and that no vector of the batch chose is re-seeded with a vector of the batch.
Under ``torch.distributed`` both decide on statistics that are equal on every rank (the k-means sums
and counts are all-reduced; dead codes are read from the all-reduced EMA sizes) and take their new
vectors from rank 0, so the ranks' codebooks stay identical.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from layers.streaming import tensor_version

USAGE_MIN_CLUSTER_SIZE = 0.01  # EMA cluster size from which a code counts as in use


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _sample_rows(vectors: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` rows of ``vectors`` (N, dim) drawn at random (without replacement when N allows),
    rank 0's draw on every rank."""
    rows = vectors.shape[0]
    if rows >= count:
        picks = torch.randperm(rows, device=vectors.device)[:count]
    else:
        picks = torch.randint(rows, (count,), device=vectors.device)
    sample = vectors[picks].contiguous()
    if _distributed():
        dist.broadcast(sample, src=0)
    return sample


def _kmeans_plus_plus(vectors: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` rows of ``vectors`` (N, dim) chosen by k-means++ seeding (each next row drawn with
    probability proportional to its squared distance from the rows chosen so far; uniformly once
    every row is chosen), rank 0's choice on every rank."""
    rows = vectors.shape[0]
    picks = [torch.randint(rows, (1,), device=vectors.device)]
    nearest = (vectors - vectors[picks[0]]).pow(2).sum(1)
    for _ in range(count - 1):
        if nearest.sum() > 0:
            pick = torch.multinomial(nearest, 1)
        else:
            pick = torch.randint(rows, (1,), device=vectors.device)
        picks.append(pick)
        nearest = torch.minimum(nearest, (vectors - vectors[pick]).pow(2).sum(1))
    seeds = vectors[torch.cat(picks)].contiguous()
    if _distributed():
        dist.broadcast(seeds, src=0)
    return seeds


def _cluster_statistics(vectors: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(count (K,), sum (K, dim)) of the rows of ``vectors`` (N, dim) nearest to each of ``centroids``
    (K, dim), summed over the ranks under ``torch.distributed``."""
    distances = (vectors.pow(2).sum(1, keepdim=True) - 2 * vectors @ centroids.t()
                 + centroids.pow(2).sum(1).unsqueeze(0))  # fmt: skip
    nearest = distances.argmin(1)
    statistics = vectors.new_zeros(centroids.shape[0], 1 + vectors.shape[1])
    statistics[:, 0].index_add_(0, nearest, torch.ones_like(nearest, dtype=vectors.dtype))
    statistics[:, 1:].index_add_(0, nearest, vectors)
    if _distributed():
        dist.all_reduce(statistics)
    return statistics[:, 0], statistics[:, 1:]


def kmeans(vectors: torch.Tensor, num_clusters: int, iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means of the rows of ``vectors`` (N, dim).

    Starts from ``num_clusters`` rows chosen by k-means++ (rank 0's choice); a cluster left empty keeps its
    centroid. Under ``torch.distributed`` the per-cluster sums and counts are all-reduced, so every
    rank computes the k-means of all ranks' vectors together.

    Returns:
        (centroids (num_clusters, dim), number of vectors nearest to each centroid (num_clusters,)).
    """
    centroids = _kmeans_plus_plus(vectors, num_clusters)
    for _ in range(iterations):
        counts, sums = _cluster_statistics(vectors, centroids)
        centroids = torch.where(counts.unsqueeze(1) > 0, sums / counts.clamp(min=1).unsqueeze(1), centroids)
    counts, _ = _cluster_statistics(vectors, centroids)
    return centroids, counts


class VectorQuantize(nn.Module):
    """One EMA codebook of `codebook_size` vectors of size `dim`.

    Args:
        kmeans_init: set the codebook to the k-means centroids of its first training batch.
        kmeans_iters: Lloyd iterations of that initialisation.
        threshold_ema_dead_code: re-seed codes whose EMA cluster size falls below this (0: never).
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        decay: float = 0.8,
        commitment: float = 1.0,
        eps: float = 1e-5,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        threshold_ema_dead_code: float = 0.0,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.codebook_size = codebook_size
        self.decay = decay
        self.commitment = commitment
        self.eps = eps
        self.kmeans_init = kmeans_init
        self.kmeans_iters = kmeans_iters
        self.threshold_ema_dead_code = threshold_ema_dead_code
        # Set by trainer.distributed.CodebookSync, which then applies the EMA update and the expiry of
        # a step itself, from the whole global batch.
        self.deferred_expiry = False
        self._initialised = False
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
        if cached is None or cached[0] is not self.embed or cached[1] != tensor_version(self.embed):
            with torch.inference_mode(False), torch.no_grad():
                terms = (2 * self.embed, self.embed.pow(2).sum(0, keepdim=True))
            cached = self._search_cache = (self.embed, tensor_version(self.embed), terms)
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

    # Eager even inside torch.compile (keep_statistics_eager): Inductor (torch 2.13, CPU) computes
    # buf.mul_(d).add_(x @ y, alpha=a) wrongly, and the statistics must keep the original's eager arithmetic.
    def _ema_update(self, flatten: torch.Tensor, onehot: torch.Tensor) -> None:
        self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(flatten.t() @ onehot, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.codebook_size * self.eps) * total
        self.embed.copy_(self.embed_avg / smoothed.unsqueeze(0))

    def smoothed_cluster_size(self) -> torch.Tensor:
        """The Laplace-smoothed cluster sizes the EMA update divides `embed_avg` by, (size,)."""
        total = self.cluster_size.sum()
        return (self.cluster_size + self.eps) / (total + self.codebook_size * self.eps) * total

    def _awaiting_init(self) -> bool:
        if not self.kmeans_init or self._initialised:
            return False
        # A codebook that has trained (or was loaded from one that has) has counted vectors.
        self._initialised = bool(self.cluster_size.sum() > 0)
        return not self._initialised

    @torch.no_grad()  # data-dependent; eager inside torch.compile as the EMA update
    def initialise(self, x: torch.Tensor) -> None:
        """With `kmeans_init`, in training mode, before the codebook's first update: set the codes to
        the k-means centroids of x (..., dim), the cluster sizes to their counts, and `embed_avg` so
        that the next EMA update continues from them."""
        if not self.training or not self._awaiting_init():
            return
        centroids, counts = kmeans(x.detach().reshape(-1, self.dim).float(), self.codebook_size, self.kmeans_iters)
        self.embed.copy_(centroids.t())
        self.cluster_size.copy_(counts)
        self.embed_avg.copy_(self.embed * self.smoothed_cluster_size().unsqueeze(0))
        self._initialised = True

    @torch.no_grad()  # data-dependent; eager inside torch.compile as the EMA update
    def expire_dead_codes(self, x: torch.Tensor, used: torch.Tensor) -> int:
        """Re-seed the codes whose EMA cluster size is below `threshold_ema_dead_code` and that the
        batch did not use (`used` (size,) bool) with vectors of x (..., dim) (rank 0's); their sizes
        are set to the threshold. The other codes are left as they are. Returns the number re-seeded."""
        if self.threshold_ema_dead_code <= 0 or not self.training:
            return 0
        dead = ((self.cluster_size < self.threshold_ema_dead_code) & ~used).nonzero().squeeze(1)
        if dead.numel() == 0:
            return 0
        seeds = _sample_rows(x.detach().reshape(-1, self.dim).to(self.embed.dtype), dead.numel())
        self.embed[:, dead] = seeds.t()
        self.cluster_size[dead] = self.threshold_ema_dead_code
        self.embed_avg[:, dead] = seeds.t() * self.smoothed_cluster_size()[dead].unsqueeze(0)
        return dead.numel()

    def usage(self, min_cluster_size: float = USAGE_MIN_CLUSTER_SIZE) -> tuple[int, float]:
        """Codebook usage from the EMA cluster sizes: (codes whose size is at least `min_cluster_size`,
        entropy in bits of the sizes taken as a distribution over the codes; 0 before any update)."""
        sizes = self.cluster_size.detach().double()
        total = sizes.sum()
        if total <= 0:
            return 0, 0.0
        share = sizes[sizes > 0] / total
        entropy = float(-(share * share.log()).sum()) / math.log(2)
        return int((sizes >= min_cluster_size).sum()), entropy

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantize x (..., dim); returns (straight-through value, commitment loss, batch perplexity).

        In training mode the codebook follows the assigned vectors by EMA (Laplace-smoothed sizes),
        after a k-means start and followed by dead-code expiry when those options are on. The
        perplexity is that of the codes this batch chose, so it cannot exceed its number of vectors.
        """
        self.initialise(x)
        flatten = x.reshape(-1, self.dim)
        indices = self.nearest(flatten)
        onehot = F.one_hot(indices, self.codebook_size).type(x.dtype)
        quantized = F.embedding(indices.view(*x.shape[:-1]), self.codebook)
        if self.training:
            with torch.no_grad():
                self._ema_update(flatten.detach(), onehot)
                if self.threshold_ema_dead_code > 0 and not self.deferred_expiry:
                    self.expire_dead_codes(flatten, onehot.sum(0) > 0)
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


_EAGER_METHODS = ("_ema_update", "initialise", "expire_dead_codes")


def keep_statistics_eager() -> None:
    """Make the codebook statistics' updates run eagerly inside ``torch.compile`` (call before compiling).

    Applied here, once, rather than as decorators: ``torch.compiler.disable`` imports ``torch._dynamo``,
    about two seconds that every command coding audio would otherwise pay at start-up.
    """
    for name in _EAGER_METHODS:
        method = getattr(VectorQuantize, name)
        if not getattr(method, "_kept_eager", False):
            method = torch.compiler.disable(method)
            method._kept_eager = True
            setattr(VectorQuantize, name, method)


class ResidualVQ(nn.Module):
    """`num_quantizers` codebooks, each quantizing what the previous ones left over; kwargs go to
    each :class:`VectorQuantize` (decay, k-means initialisation, dead-code threshold)."""

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

    def usage(self, min_cluster_size: float = USAGE_MIN_CLUSTER_SIZE) -> list[tuple[int, float]]:
        """(codes in use, entropy in bits) of each codebook, from its EMA cluster sizes (see
        :meth:`VectorQuantize.usage`)."""
        return [layer.usage(min_cluster_size) for layer in self.layers]

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
        key = [(layer.embed, tensor_version(layer.embed)) for layer in self.layers]
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
