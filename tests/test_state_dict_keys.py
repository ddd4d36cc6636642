"""Full-size models: our module tree has exactly the original's state-dict keys, shapes and sizes."""

from __future__ import annotations

import glob
import json
import os

import pytest
import yaml

from tests.conftest import official_path
from utils.checkpoint import build_generator, generator_state_dict
from utils.errors import CodecError

PARAM_COUNTS = json.load(open(official_path("keys", "param_counts.json")))
KEY_FILES = sorted(glob.glob(official_path("keys", "*", "*.json")))

# The vectors shrink widths; the released models use these (everything else is as configured).
FULL_AUTOENCODER = {"encode_channels": 32, "decode_channels": 32, "code_dim": 64, "codebook_size": 1024}
FULL_VOCODER = {"channels": 512, "in_channels": 64}


def full_size_config(tag: str) -> dict:
    config = yaml.safe_load(open(official_path("exp", tag, "config.yml")))
    overrides = FULL_VOCODER if config["model_type"] in ("HiFiGAN", "UnivNet") else FULL_AUTOENCODER
    config["generator_params"].update(overrides)
    return config


@pytest.mark.parametrize("key_file", KEY_FILES, ids=lambda path: os.path.relpath(path, official_path("keys")))
def test_full_size_keys_shapes_and_counts(key_file: str) -> None:
    tag = os.path.relpath(key_file, official_path("keys"))[: -len(".json")]
    expected = json.load(open(key_file))
    model = build_generator(full_size_config(tag), inference=True)
    ours = {key: list(value.shape) for key, value in generator_state_dict(model).items()}
    assert sorted(set(expected) - set(ours)) == [], "missing keys"
    assert sorted(set(ours) - set(expected)) == [], "unexpected keys"
    assert ours == expected
    counts = PARAM_COUNTS[tag]
    assert sum(p.numel() for p in model.parameters()) == counts["generator_parameters"]
    assert sum(v.numel() for v in generator_state_dict(model).values()) == counts["generator_state_dict_numel"]
    assert len(ours) == counts["generator_state_dict_keys"]


@pytest.mark.parametrize("config", [{}, {"model_type": "symAudioDec"}, {"generator_params": {}}])
def test_a_config_without_a_generator_is_a_one_line_error(config: dict) -> None:
    with pytest.raises(CodecError, match=r"the config has no '(model_type|generator_params)': it is not an AudioDec"):
        build_generator(config)


def test_a_checkpoint_missing_one_tensor_is_refused_naming_it(tmp_path) -> None:
    """A released generator's state dict less one codebook (nothing extra, no shape changed) does not
    load with that codebook left as initialised: one line names the missing key."""
    import shutil

    import torch

    from utils.checkpoint import load_generator, read_checkpoint

    folder = official_path("exp", "autoencoder", "symAD_vctk_48000_hop300")
    state = read_checkpoint(os.path.join(folder, "checkpoint-700000steps.pkl"))
    del state["model"]["generator"]["quantizer.codebook.layers.7.embed"]
    torch.save(state, tmp_path / "checkpoint-700000steps.pkl")
    shutil.copy(os.path.join(folder, "config.yml"), tmp_path / "config.yml")
    with pytest.raises(CodecError) as caught:
        load_generator(str(tmp_path / "checkpoint-700000steps.pkl"))
    message = str(caught.value)
    assert "\n" not in message and "unexpected" not in message
    assert "1 missing keys" in message and "quantizer.codebook.layers.7.embed" in message
