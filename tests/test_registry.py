"""The model registry: each entry's rate is its config's, and a missing model says how to get it."""

from __future__ import annotations

import dataclasses
import re

import pytest

from tests.conftest import OFFICIAL
from utils.audiodec import StreamingCodec
from utils.errors import CodecError
from utils.experiment_config import load_config
from utils.registry import MODELS, TOOLKIT_ROOT, ModelEntry, installed_root, resolve


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_entry_registers_its_configs_rate(name: str) -> None:
    entry = MODELS[name]
    root = installed_root(entry, OFFICIAL) or installed_root(entry, TOOLKIT_ROOT)
    assert root is not None, f"{name}: neither tests/data/official nor the toolkit holds it"
    assert load_config(resolve(entry, root)[0])["sampling_rate"] == entry.sample_rate


def test_an_entry_whose_rate_is_not_its_configs_is_refused_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = dataclasses.replace(MODELS["demo48k"], name="mine", sample_rate=16000, released=False, shipped=False)
    monkeypatch.setitem(MODELS, "mine", wrong)
    with pytest.raises(CodecError, match=r"^model 'mine' is registered at 16000 Hz but its config \(.*config.yml\) "
                                         r"codes 48000 Hz: fix the registry entry's sample_rate "
                                         r"\(utils.registry.MODELS\)$"):
        StreamingCodec.from_name("mine", root=TOOLKIT_ROOT)


@pytest.mark.parametrize(("released", "shipped", "hint"), [
    (True, False, "get it with `python -m utils.download mine --root {root}`"),
    (False, True, "restore its exp/ folder from this toolkit's git"),
    (False, False, "train it (codecTrain.py writes its checkpoints under exp/) or copy them there"),
], ids=["released", "shipped", "own"])
def test_a_model_not_installed_says_how_to_get_it(tmp_path, released: bool, shipped: bool, hint: str) -> None:
    entry = ModelEntry("mine", 48000, "exp/autoencoder/mine/checkpoint-100steps.pkl",
                       "exp/autoencoder/mine/checkpoint-100steps.pkl", "a user's model", released, shipped)
    expected = (f"model 'mine' is not installed: exp/autoencoder/mine/checkpoint-100steps.pkl not found under "
                f"{tmp_path}; {hint.format(root=tmp_path)}, or pass --root to where it is")
    with pytest.raises(CodecError, match=f"^{re.escape(expected)}$"):
        resolve(entry, str(tmp_path))


def test_the_listing_and_the_downloader_say_how_to_get_a_users_own_model(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from utils.cli import list_models
    from utils.download import select_models

    own = ModelEntry("mine", 48000, "exp/autoencoder/mine/checkpoint-100steps.pkl",
                     "exp/autoencoder/mine/checkpoint-100steps.pkl", "a user's model", released=False)
    monkeypatch.setattr("utils.cli.MODELS", {"mine": own})
    list_models(str(tmp_path))
    assert "mine" in capsys.readouterr().out.split("not installed: train it (codecTrain.py")[0]
    monkeypatch.setitem(MODELS, "mine", own)
    with pytest.raises(CodecError, match="^model 'mine' is not in the released archive: it is a model of one's own"):
        select_models(["mine"], everything=False)
