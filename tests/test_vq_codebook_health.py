"""Codebooks that stay in use: k-means initialisation, expiry of dead codes, usage from the EMA sizes,
the options off giving the original's training bit for bit, and two gloo ranks staying identical."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from layers.vq import ResidualVQ, VectorQuantize, kmeans
from trainer.distributed import CodebookSync, DistributedContext, shutdown_distributed

CENTRES = torch.tensor([[4.0, 0.0], [-4.0, 0.0], [0.0, 4.0], [0.0, -4.0]])


def toy_stream(batches: int, per_centre: int = 16, seed: int = 0) -> list[torch.Tensor]:
    """Batches (1, 4 * per_centre, 2) of points around the four CENTRES (spread 0.1)."""
    generator = torch.Generator().manual_seed(seed)
    stream = []
    for _ in range(batches):
        points = CENTRES.repeat_interleave(per_centre, 0) + 0.1 * torch.randn(4 * per_centre, 2, generator=generator)
        stream.append(points[torch.randperm(points.shape[0], generator=generator)].unsqueeze(0))
    return stream


def test_kmeans_finds_the_clusters() -> None:
    torch.manual_seed(0)
    vectors = toy_stream(1, per_centre=50)[0][0]
    centroids, counts = kmeans(vectors, 4, 10)
    assert counts.sum() == vectors.shape[0]
    nearest = torch.cdist(CENTRES, centroids).min(1).values
    assert torch.all(nearest < 0.1), nearest


def test_kmeans_init_places_the_codes_on_the_data() -> None:
    torch.manual_seed(0)
    vq = VectorQuantize(dim=2, codebook_size=4, kmeans_init=True, kmeans_iters=10).train()
    assert torch.cdist(CENTRES, vq.codebook).min(1).values.max() > 1.0  # standard-normal draws
    batch = toy_stream(1)[0]
    vq(batch)
    assert torch.cdist(CENTRES, vq.codebook).min(1).values.max() < 0.1
    assert torch.all(vq.cluster_size > 10)  # the k-means counts, then one EMA update: every code used
    codebook = vq.codebook.clone()
    vq(toy_stream(1, seed=1)[0])  # initialised once: later batches only move the codes by EMA
    assert torch.cdist(codebook, vq.codebook).diagonal().max() < 0.1
    vq.eval()
    fresh = VectorQuantize(dim=2, codebook_size=4, kmeans_init=True)
    fresh.load_state_dict(vq.state_dict())
    fresh.train()(batch)  # a codebook loaded from a trained one is not initialised again
    assert torch.cdist(codebook, fresh.codebook).diagonal().max() < 0.1


def test_kmeans_init_of_each_residual_stage() -> None:
    torch.manual_seed(0)
    rvq = ResidualVQ(num_quantizers=2, dim=2, codebook_size=4, kmeans_init=True).train()
    batch = toy_stream(1)[0]
    rvq(batch)
    assert torch.cdist(CENTRES, rvq.layers[0].codebook).min(1).values.max() < 0.1
    # The second stage starts on the residuals the first leaves (within 0.1 * a few of zero).
    assert rvq.layers[1].codebook.abs().max() < 0.5


def test_dead_codes_come_back_and_used_codes_are_untouched() -> None:
    torch.manual_seed(0)
    vq = VectorQuantize(dim=2, codebook_size=8, threshold_ema_dead_code=0.5).train()
    reference = VectorQuantize(dim=2, codebook_size=8).train()
    with torch.no_grad():
        codes = torch.cat([CENTRES[:2] + 0.05, CENTRES[:2] * 100, torch.full((4, 2), 1e3)])
        vq.embed.copy_(codes.t())  # codes 0, 1 near the data of two clusters, the others far away
        reference.load_state_dict(vq.state_dict())
    batch = toy_stream(1)[0][:, :32]
    batch = batch[:, (batch[0, :, 0] > 2) | (batch[0, :, 0] < -2)]  # points of CENTRES[0] and [1] only
    vq(batch)
    reference(batch)
    used = reference.cluster_size > 0
    assert used.tolist() == [True, True] + [False] * 6
    torch.testing.assert_close(vq.embed[:, used], reference.embed[:, used], rtol=0, atol=0)
    torch.testing.assert_close(vq.cluster_size[used], reference.cluster_size[used], rtol=0, atol=0)
    # The dead codes are now vectors of the batch, at the threshold's size.
    distances = torch.cdist(vq.codebook[~used], batch[0]).min(1).values
    assert torch.all(distances == 0)
    assert torch.all(vq.cluster_size[~used] == 0.5)
    assert torch.all(reference.codebook[~used].norm(dim=1) > 100)  # without expiry they stay far away
    # On a stream over all four clusters every code ends up on the data and in use; without expiry
    # the six far codes stay dead.
    for batch in toy_stream(10, seed=2):
        vq(batch)
        reference(batch)
    assert torch.all(vq.codebook.norm(dim=1) < 5)
    assert vq.usage()[0] == 8 and reference.usage()[0] == 2


def test_usage_reads_the_ema_sizes() -> None:
    vq = VectorQuantize(dim=2, codebook_size=8)
    assert vq.usage() == (0, 0.0)
    with torch.no_grad():
        vq.cluster_size.copy_(torch.tensor([2.0, 2.0, 2.0, 2.0, 0.0, 0.001, 0.0, 0.0]))
    in_use, entropy = vq.usage()
    assert in_use == 4
    shares = [2 / 8.001] * 4 + [0.001 / 8.001]
    assert entropy == pytest.approx(-sum(p * math.log2(p) for p in shares), rel=1e-9)  # 2 bits and a little
    assert vq.usage(min_cluster_size=0.0005)[0] == 5
    rvq = ResidualVQ(num_quantizers=2, dim=2, codebook_size=8)
    assert rvq.usage() == [(0, 0.0), (0, 0.0)]


def test_options_off_train_exactly_as_before() -> None:
    """The options at their defaults (and a k-means setting with no dead-code threshold on a model
    that has trained) leave the EMA training bit for bit as the original's arithmetic."""
    torch.manual_seed(3)
    plain = ResidualVQ(num_quantizers=3, dim=4, codebook_size=16).train()
    explicit = ResidualVQ(num_quantizers=3, dim=4, codebook_size=16, kmeans_init=False,
                          threshold_ema_dead_code=0.0).train()  # fmt: skip
    explicit.load_state_dict(plain.state_dict())
    rng_before = torch.get_rng_state()
    for step in range(5):
        x = torch.randn(2, 7, 4, generator=torch.Generator().manual_seed(step))
        for value, reference in zip(explicit(x), plain(x)):
            assert torch.equal(value, reference)
    assert torch.equal(torch.get_rng_state(), rng_before)  # no random draws either
    for (name, buffer), reference in zip(explicit.named_buffers(), plain.buffers()):
        assert torch.equal(buffer, reference), name
    # The original's EMA formula, written out.
    layer = VectorQuantize(dim=4, codebook_size=16).train()
    twin = copy.deepcopy(layer)
    x = torch.randn(30, 4)
    layer(x)
    onehot = torch.nn.functional.one_hot(twin.nearest(x), 16).float()
    size = twin.cluster_size * 0.8 + onehot.sum(0) * 0.2
    avg = twin.embed_avg * 0.8 + (x.t() @ onehot) * 0.2
    smoothed = (size + 1e-5) / (size.sum() + 16 * 1e-5) * size.sum()
    torch.testing.assert_close(layer.embed, avg / smoothed.unsqueeze(0), rtol=1e-6, atol=0)


def _rank_worker(rank: int, world_size: int, store: str, outdir: str, accumulate: bool) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    finished = False
    try:
        torch.manual_seed(100 + rank)  # the ranks' own random draws differ: rank 0's must win
        rvq = ResidualVQ(num_quantizers=2, dim=2, codebook_size=8, kmeans_init=True,
                         threshold_ema_dead_code=0.5).train()  # fmt: skip
        torch.manual_seed(0)
        rvq.load_state_dict(ResidualVQ(num_quantizers=2, dim=2, codebook_size=8).state_dict())
        torch.manual_seed(100 + rank)
        sync = CodebookSync(rvq, DistributedContext(rank=rank, world_size=world_size), accumulate=accumulate)
        assert sync.active
        for batch in toy_stream(6, per_centre=4 + rank, seed=10 + rank):  # different data, uneven shares
            parts = batch.split(5, dim=1) if accumulate else [batch]
            for part in parts:
                rvq(part)
            sync.flush()
        torch.save(rvq.state_dict(), Path(outdir) / f"rank{rank}.pt")
        finished = True
    finally:
        shutdown_distributed(finished)  # (a bare destroy_process_group can hang a gloo rank: see there)


@pytest.mark.parametrize("accumulate", [False, True])
def test_two_gloo_ranks_keep_identical_codebooks(tmp_path: Path, accumulate: bool) -> None:
    mp.spawn(_rank_worker, args=(2, str(tmp_path / "store"), str(tmp_path), accumulate), nprocs=2, join=True)
    first, second = (torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1))
    for key, tensor in first.items():
        assert torch.equal(tensor, second[key]), key
    embed = first["layers.0.embed"].t()
    assert torch.cdist(CENTRES, embed).min(1).values.max() < 1.0  # on the data (init on 10 points with micro-batches)
    assert math.isfinite(float(first["layers.1.embed"].abs().max()))
