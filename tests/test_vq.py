"""Residual VQ: nearest codes, EMA updates, losses, straight-through gradients, code lookup."""

from __future__ import annotations

import pytest
import torch

from layers.vq import ResidualVQ, VectorQuantize


def test_nearest_code_and_lookup_round_trip() -> None:
    torch.manual_seed(0)
    vq = ResidualVQ(num_quantizers=3, dim=4, codebook_size=8).eval()
    first = vq.layers[0].codebook
    x = first[[5, 2, 7]].unsqueeze(0)  # (1, 3, 4): exactly code vectors of codebook 0
    codes = vq.encode(x)
    assert codes.shape == (1, 3, 3)
    assert codes[0, 0].tolist() == [5, 2, 7]
    torch.testing.assert_close(vq.decode(codes[:, :1]), x)


def test_residual_stages_reduce_error() -> None:
    torch.manual_seed(0)
    vq = ResidualVQ(num_quantizers=4, dim=2, codebook_size=64).eval()
    for stage, layer in enumerate(vq.layers):  # with a zero code available, no stage can add error
        layer.embed[:, 0] = 0
        layer.embed[:, 1:] *= 0.5**stage
    x = torch.randn(2, 50, 2)
    codes = vq.encode(x)
    errors = [torch.mean((vq.decode(codes[:, :k]) - x) ** 2).item() for k in range(1, 5)]
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 0.2 * errors[0]


def test_ema_update_moves_codes_toward_data_only_in_training() -> None:
    torch.manual_seed(0)
    vq = VectorQuantize(dim=2, codebook_size=4, decay=0.8)
    data = torch.tensor([[3.0, 3.0]]).repeat(16, 1)
    before = vq.embed.clone()
    vq.eval()
    vq(data)
    torch.testing.assert_close(vq.embed, before)
    vq.train()
    index = vq.nearest(data)[0]
    distance_before = torch.dist(vq.codebook[index], data[0])
    for _ in range(20):
        vq(data)
    assert torch.dist(vq.codebook[index], data[0]) < 0.05 * distance_before
    assert vq.cluster_size[index] > 15


def test_losses_perplexity_and_straight_through() -> None:
    torch.manual_seed(0)
    vq = ResidualVQ(num_quantizers=2, dim=3, codebook_size=16).train()
    x = torch.randn(2, 10, 3, requires_grad=True)
    quantized, losses, perplexities = vq(x)
    assert losses.shape == perplexities.shape == (2,)
    assert torch.all(perplexities >= 1) and torch.all(perplexities <= 16)
    # Commitment loss of codebook 0 is the MSE between the input and its (post-update) code.
    quantized.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))


def test_quantizer_dropout_uses_fewer_codebooks() -> None:
    vq = ResidualVQ(num_quantizers=4, dim=3, codebook_size=8).train()
    before = [layer.embed.clone() for layer in vq.layers]
    _, losses, _ = vq(torch.randn(1, 5, 3), n_quantizers=2)
    assert losses.shape == (2,)
    # the first two codebooks counted the batch and moved; the last two were not used
    assert [bool(layer.cluster_size.sum() > 0) for layer in vq.layers] == [True, True, False, False]
    assert [torch.equal(layer.embed, embed) for layer, embed in zip(vq.layers, before)] == [False, False, True, True]


def test_inference_caches_follow_codebook_changes() -> None:
    """The cached code norms and stacked table give what a fresh computation gives, and are
    rebuilt when a codebook changes in place (training, load_state_dict)."""
    torch.manual_seed(3)
    rvq = ResidualVQ(num_quantizers=3, dim=4, codebook_size=16).eval()
    x = torch.randn(2, 9, 4)
    codes = torch.randint(0, 16, (2, 3, 9))

    def fresh_decode(k: int) -> torch.Tensor:
        return sum(layer.codebook[codes[:, i]] for i, layer in enumerate(rvq.layers[:k]))

    with torch.inference_mode():
        first = rvq.encode(x)
        torch.testing.assert_close(rvq.decode(codes), fresh_decode(3), rtol=0, atol=1e-6)
        torch.testing.assert_close(rvq.decode(codes[:, :2]), fresh_decode(2), rtol=0, atol=1e-6)
        assert torch.equal(rvq.encode(x), first)
    with torch.no_grad():
        # move the first codebook far away: every code of stage 0 changes meaning
        rvq.layers[0].embed.add_(10.0)
    with torch.inference_mode():
        torch.testing.assert_close(rvq.decode(codes), fresh_decode(3), rtol=0, atol=1e-5)
        flatten = x.reshape(-1, 4)
        embed = rvq.layers[0].embed
        expected = (-(flatten.pow(2).sum(1, keepdim=True) - 2 * flatten @ embed
                      + embed.pow(2).sum(0, keepdim=True))).max(1).indices
        assert torch.equal(rvq.layers[0].nearest(flatten), expected)


def test_nearest_keeps_the_original_arithmetic_bit_for_bit() -> None:
    """`nearest` folds the doubling into a cached codebook and takes the minimum of the distances;
    the indices must be the original formula's, ties included (the first of equal distances)."""
    torch.manual_seed(3)
    vq = VectorQuantize(dim=64, codebook_size=1024).eval()
    with torch.no_grad():
        vq.embed.copy_(torch.randn(64, 1024) * 0.5)
        vq.embed[:, 7] = vq.embed[:, 3]  # exact ties: codes 3 and 7 are the same vector
    flatten = torch.randn(4000, 64) * 0.5
    flatten[:5] = vq.embed[:, 3] + 1e-3 * torch.randn(5, 64)  # nearest is the tied pair
    embed = vq.embed
    dist = flatten.pow(2).sum(1, keepdim=True) - 2 * flatten @ embed + embed.pow(2).sum(0, keepdim=True)
    expected = (-dist).max(1).indices
    with torch.inference_mode():
        got = vq.nearest(flatten)
        for rows in (1, 3, 80):  # streaming chunks and whole-file blocks give the search other row counts
            assert torch.equal(vq.nearest(flatten[:rows]), expected[:rows])
    assert torch.equal(got, expected)
    assert torch.equal(expected[:5], torch.full((5,), 3))
    assert torch.equal(vq.nearest(flatten), expected)  # the training-mode path (no cache)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_rows_distances_do_not_depend_on_how_many_rows_are_searched(threads: int) -> None:
    """Streaming searches one frame per 300-sample chunk, a whole file 80 per block: each row's
    distances must be bitwise the same either way (a plain batched matrix product rounds rows of
    small products differently, which could flip a code at a near-tie)."""
    torch.manual_seed(5)
    vq = VectorQuantize(dim=64, codebook_size=1024).eval()
    flatten = torch.randn(83, 64)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            whole = vq.distances(flatten)
            for size in (1, 2, 3, 5, 16, 80):
                parts = torch.cat([vq.distances(block) for block in flatten.split(size)])
                assert torch.equal(parts, whole), f"rows searched {size} at a time differ"
    finally:
        torch.set_num_threads(previous)


def test_the_commitment_loss_pulls_the_encoder_output_toward_its_code() -> None:
    """The original's commitment loss, commitment x mean((x - sg(q))^2), sends x the gradient
    2 commitment (x - q) / numel."""
    torch.manual_seed(0)
    vq = VectorQuantize(dim=3, codebook_size=8, commitment=0.25).eval()
    x = torch.randn(2, 5, 3, requires_grad=True)
    _, loss, _ = vq(x)
    code = vq.codebook[vq.nearest(x.detach().reshape(-1, 3))].reshape(x.shape)
    torch.testing.assert_close(loss, 0.25 * (x.detach() - code).pow(2).mean())
    loss.backward()
    expected = 2 * 0.25 * (x.detach() - code) / x.numel()
    assert expected.abs().min() > 0
    torch.testing.assert_close(x.grad, expected)
