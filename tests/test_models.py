"""Generators: training forward shapes, modes, projector kinds, MIMO, weight-norm round trip."""

from __future__ import annotations

import pytest
import torch

from layers.weight_norm import fold_weight_norm, from_original_keys, to_original_keys
from models.autoencoder.AudioDec import Generator
from models.vocoder.HiFiGAN import Generator as HiFiGAN

SMALL = {"encode_channels": 4, "decode_channels": 4, "code_dim": 8, "codebook_size": 16, "codebook_num": 3}


@pytest.mark.parametrize("mode", ["causal", "noncausal"])
@pytest.mark.parametrize("projector", ["conv1d", "conv1d_bn"])
@pytest.mark.parametrize("codec", ["audiodec", "activate_audiodec"])
def test_training_forward(mode: str, projector: str, codec: str) -> None:
    torch.manual_seed(0)
    model = Generator(**SMALL, mode=mode, projector=projector, codec=codec).train()
    x = torch.randn(2, 1, 3000)
    y, zq, z, vq_loss, perplexity = model(x)
    assert y.shape == (2, 1, 3000)
    assert zq.shape == z.shape == (2, 8, 10)
    assert vq_loss.shape == perplexity.shape == (3,)
    (y.pow(2).mean() + vq_loss.sum()).backward()
    assert model.encoder.conv.conv.weight.grad is not None


def test_causality() -> None:
    """A causal model's output before time t does not change when the input after t changes."""
    torch.manual_seed(0)
    model = Generator(**SMALL).eval()
    x = torch.randn(1, 1, 6000)
    changed = x.clone()
    changed[..., 3000:] = torch.randn(1, 1, 3000)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0][..., :3000], model(changed)[0][..., :3000])


def test_mimo_and_channel_batching() -> None:
    model = Generator(**SMALL, input_channels=2, output_channels=2)
    y, *_ = model(torch.randn(3, 2, 600))
    assert y.shape == (3, 2, 600)
    mono = Generator(**SMALL)
    y, *_ = mono(torch.randn(3, 2, 600))  # channels become independent mono batch items
    assert y.shape == (6, 1, 600)


def test_quantizer_dropout_varies_the_number_of_codebooks() -> None:
    torch.manual_seed(0)
    model = Generator(**SMALL, quantizer_dropout=True).train()
    counts = {model(torch.randn(1, 1, 600))[3].shape[0] for _ in range(20)}
    assert counts == {1, 2, 3}
    model.eval()
    assert model(torch.randn(1, 1, 600))[3].shape == (3,)


def test_weight_norm_keys_round_trip_and_fold() -> None:
    torch.manual_seed(0)
    model = Generator(**SMALL, codec="activate_audiodec", use_weight_norm=True).eval()
    original = to_original_keys(model.state_dict())
    assert "encoder.conv.conv.weight_g" in original and "decoder.conv_blocks.0.1.conv.deconv.weight_v" in original
    assert original["decoder.conv_blocks.0.1.conv.deconv.weight_g"].shape[1:] == (1, 1)
    assert from_original_keys(original).keys() == model.state_dict().keys()
    x = torch.randn(1, 1, 1200)
    with torch.no_grad():
        before = model(x)[0]
        fold_weight_norm(model)
        torch.testing.assert_close(model(x)[0], before)


def test_vocoder_normalizes_by_stats(tmp_path) -> None:
    import numpy as np

    stats = tmp_path / "stats.npy"
    np.save(stats, np.stack([np.full(8, 2.0), np.full(8, 4.0)]).astype(np.float32))
    vocoder = HiFiGAN(in_channels=8, channels=16, upsample_scales=(5, 5, 4, 3), upsample_kernel_sizes=(10, 10, 8, 6),
                      resblock_kernel_sizes=(3,), resblock_dilations=((1,),), groups=1, stats=str(stats))
    assert vocoder.mean.tolist() == [2.0] * 8 and vocoder.scale.tolist() == [4.0] * 8
    y = vocoder(torch.randn(2, 8, 4))
    assert y.shape == (2, 1, 1200) and y.abs().max() <= 1
    with pytest.raises(FileNotFoundError, match="statistics stage"):
        HiFiGAN(in_channels=8, stats=str(tmp_path / "missing.npy"))


def test_encoder_and_decoder_checkpoints_must_fit_each_other(tmp_path) -> None:
    """Coders, the test stage and the vocoder's analyzer refuse a pair of another rate or latent size
    (it would write audio at the decoder's rate, twice as long, or fail deep inside the decoder)."""
    import shutil

    import yaml

    from tests.conftest import MANIFEST, official_path
    from trainer.analysis import load_analyzer
    from trainer.synthesis import OfflineCodec
    from utils.audiodec import StreamingCodec
    from utils.checkpoint import check_codec_pair
    from utils.errors import CodecError

    entry = MANIFEST["vctk_v1"]
    encoder, decoder = official_path(entry["encoder_checkpoint"]), official_path(entry["decoder_checkpoint"])
    shutil.copy(decoder, tmp_path / "decoder.pkl")
    config = yaml.safe_load(open(official_path(entry["decoder_checkpoint"]).rsplit("/", 1)[0] + "/config.yml"))
    (tmp_path / "config.yml").write_text(yaml.safe_dump({**config, "sampling_rate": 24000}))
    other_rate = str(tmp_path / "decoder.pkl")
    for build in (StreamingCodec.from_checkpoints, OfflineCodec):
        with pytest.raises(CodecError, match=r"the encoder codes 48000 Hz audio but the decoder makes 24000 Hz"):
            build(encoder, other_rate)
    with pytest.raises(CodecError, match=r"the analyzer .* codes 48000 Hz audio but the recipe's sampling_rate is "
                                         r"24000: give an analyzer trained at 24000 Hz"):
        load_analyzer(encoder, 24000)
    with pytest.raises(CodecError, match=r"gives latents of \d+ channels but the vocoder takes 7"):
        load_analyzer(encoder, 48000, code_dim=7)
    assert load_analyzer(encoder, 48000, code_dim=None) is not None
    ours = {"sampling_rate": 8000, "model_type": "symAudioDec", "generator_params": {"code_dim": 16}}
    theirs = {"sampling_rate": 8000, "model_type": "HiFiGAN", "generator_params": {"in_channels": 8}}
    with pytest.raises(CodecError, match="the encoder gives latents of 16 channels but the decoder takes 8"):
        check_codec_pair("e.pkl", ours, "d.pkl", theirs)
    check_codec_pair("e.pkl", ours, "d.pkl", {**theirs, "generator_params": {"in_channels": 16}})
