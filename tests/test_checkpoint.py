"""utils/checkpoint: a checkpoint or config.yml of the wrong shape or type is one CodecError naming the
file, the key and the fix, where the loaders read it (not a TypeError deep in torch, nor a 4 TB allocation)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import REPO, official_path
from tests.test_trainer import tiny_recipe, tiny_vocoder_recipe, untrained_checkpoint
from trainer.builder import build_discriminator, build_training_generator
from trainer.state import read_training_checkpoint
from utils.audiodec import StreamingCodec
from utils.checkpoint import INTEGER_BUFFERS, load_generator, read_checkpoint
from utils.errors import CodecError
from utils.experiment_config import load_config

SOURCE = official_path("exp", "autoencoder", "symAD_vctk_48000_hop300")
NOT_A_CHECKPOINT = "it is not an AudioDec checkpoint (give one that codecTrain.py or the original saved)"
REMOVED = object()  # a config key left out


def official_state() -> dict:
    return torch.load(os.path.join(SOURCE, "checkpoint-700000steps.pkl"), map_location="cpu", weights_only=True)


def saved(folder, state: object, **changes: object) -> str:
    """`state` saved as a checkpoint beside the official vctk_sym config with `changes` (REMOVED: left out)."""
    folder.mkdir()
    config = {**yaml.safe_load(open(os.path.join(SOURCE, "config.yml"))), **changes}
    kept = {key: value for key, value in config.items() if value is not REMOVED}
    (folder / "config.yml").write_text(yaml.safe_dump(kept))
    path = str(folder / "checkpoint-1steps.pkl")
    torch.save(state, path)
    return path


@pytest.mark.parametrize("state, problem", [
    ([1, 2], " holds no model.generator"),
    ({"model": ["generator"]}, " holds no model.generator"),
    ({"model": torch.zeros(2)}, " holds no model.generator"),
    ({"model": {"generator": [1, 2, 3]}}, ": model.generator is not a state dict (list)"),
    ({"model": {"generator": torch.zeros(3)}}, ": model.generator is not a state dict (Tensor)"),
    ({"model": {"generator": {"encoder.conv.conv.weight": 5}}},
     ": model.generator['encoder.conv.conv.weight'] is not a tensor (int)"),
])
def test_a_checkpoint_of_the_wrong_shape_is_one_error(tmp_path, state: object, problem: str) -> None:
    path = saved(tmp_path / "exp", state)
    with pytest.raises(CodecError) as error:
        load_generator(path)
    assert str(error.value) == f"{path}{problem}: {NOT_A_CHECKPOINT}"


@pytest.mark.parametrize("changes, problem", [
    ({"model_type": ["x"]}, "unknown model_type ['x']: use one of symAudioDec, symAudioDecUniv, HiFiGAN, UnivNet: "
                            "fix the config"),
    ({"sampling_rate": "abc"}, "sampling_rate 'abc' is not a positive whole number of Hz: fix the config"),
    ({"sampling_rate": None}, "sampling_rate None is not a positive whole number of Hz: fix the config"),
    ({"sampling_rate": 0}, "sampling_rate 0 is not a positive whole number of Hz: fix the config"),
    ({"sampling_rate": -48000}, "sampling_rate -48000 is not a positive whole number of Hz: fix the config"),
    ({"sampling_rate": 44100.5}, "sampling_rate 44100.5 is not a positive whole number of Hz: fix the config"),
    ({"output_delay": 10**11}, "output_delay 100000000000 is more than 480000 samples (10 s at 48 kHz): "
                               "fix the config"),
])
def test_a_config_value_the_loaders_cannot_use_is_one_error(tmp_path, changes: dict, problem: str) -> None:
    path = saved(tmp_path / "exp", official_state(), **changes)
    with pytest.raises(CodecError) as error:
        StreamingCodec.from_checkpoints(path, path)
    assert str(error.value) == f"{tmp_path / 'exp' / 'config.yml'}: {problem}"


def test_an_autoencoder_config_without_a_sampling_rate_is_one_error(tmp_path) -> None:
    path = saved(tmp_path / "exp", official_state(), sampling_rate=REMOVED)
    with pytest.raises(CodecError) as error:
        StreamingCodec.from_checkpoints(path, path)
    assert str(error.value) == f"{tmp_path / 'exp' / 'config.yml'} has no 'sampling_rate': it is not an AudioDec " \
                               "training config"


def test_whole_values_of_any_yaml_type_load_as_before(tmp_path) -> None:
    path = saved(tmp_path / "exp", official_state(), sampling_rate=48000.0, output_delay=480_000)
    assert load_config(path)["sampling_rate"] == 48000.0
    assert StreamingCodec.from_checkpoints(path, path).sample_rate == 48000


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool])
def test_weights_stored_as_integers_are_refused_naming_the_first(tmp_path, dtype: torch.dtype) -> None:
    """torch's load_state_dict would cast them into the model's floating-point weights, silently."""
    state = official_state()
    generator = state["model"]["generator"]
    name = next(key for key, tensor in generator.items() if tensor.dim() > 1)
    generator[name] = generator[name].to(dtype)
    path = saved(tmp_path / "exp", state)
    with pytest.raises(CodecError) as error:
        load_generator(path)
    assert str(error.value) == (f"checkpoint {path} stores model.generator {name} as {dtype}, where the model's "
                                "weights are floating point: the file was converted or written wrongly; use the "
                                "checkpoint as training saved it")


def test_a_training_checkpoint_with_integer_discriminator_weights_is_refused(tmp_path) -> None:
    state = official_state()
    discriminator = state["model"]["discriminator"]
    name = next(iter(discriminator))
    discriminator[name] = discriminator[name].to(torch.int32)
    path = saved(tmp_path / "exp", state)
    with pytest.raises(CodecError, match=rf"^checkpoint {path} stores model.discriminator {name} as torch.int32, "
                                         r"where .*written wrongly; resume from another$"):
        read_training_checkpoint(path, "resume from another")


def test_every_tensor_the_models_save_is_floating_point_but_the_counters_named(tmp_path) -> None:
    """What lets a checkpoint's integer tensors be refused without the model at hand: an integer buffer
    by design (batch norm's counter, `projector: conv1d_bn`) has its place in INTEGER_BUFFERS, and a
    checkpoint holding one reads."""
    autoencoder = tiny_recipe(tmp_path)
    analyzer = untrained_checkpoint(autoencoder, tmp_path / "analyzer")
    vocoder = tiny_vocoder_recipe(tmp_path, analyzer, str(tmp_path / "stats.npy"))
    np.save(tmp_path / "stats.npy", np.stack([np.zeros(8), np.ones(8)]).astype(np.float32))
    univ = yaml.safe_load(open(os.path.join(REPO, "config", "autoencoder", "symADuniv_vctk_48000_hop300.yaml")))
    univ = {**autoencoder, "model_type": univ["model_type"], "discriminator_params": univ["discriminator_params"]}
    batch_norm = {**autoencoder, "generator_params": {**autoencoder["generator_params"], "projector": "conv1d_bn"}}
    counters = []
    for config in (autoencoder, vocoder, univ, batch_norm):
        for model in (build_training_generator(config), build_discriminator(config)):
            integers = [key for key, tensor in model.state_dict().items() if not tensor.is_floating_point()]
            assert [key for key in integers if key.rpartition(".")[2] not in INTEGER_BUFFERS] == []
            counters += integers
    assert counters and all(key.endswith(".num_batches_tracked") for key in counters)  # conv1d_bn's
    generator = build_training_generator(batch_norm)
    path = saved(tmp_path / "bn", {"model": {"generator": generator.state_dict()}})
    assert read_checkpoint(str(path))["model"]["generator"].keys() == generator.state_dict().keys()
    assert read_training_checkpoint(path)["model"]["generator"].keys() == generator.state_dict().keys()
