"""A recipe with a wrong setting stops training before it starts: one CodecError that names the setting
(codecTrain.py prints it as one line), and no experiment folder left behind."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from tests.conftest import official_path
from tests.test_trainer import (
    TINY_AUTOENCODER,
    save_recipe,
    tiny_recipe,
    tiny_vocoder_recipe,
    untrained_checkpoint,
    write_wavs,
)
from trainer import memory
from trainer.base import GANTrainer
from trainer.builder import load_starting_point, run_training
from trainer.distributed import DistributedContext
from trainer.options import TrainOptions
from utils.errors import CodecError

CASES: dict[str, tuple[dict[str, Any], str]] = {
    "batch_size": ({"batch_size": "x"}, "batch_size 'x' is not a whole number: fix the config"),
    "train_max_steps": ({"train_max_steps": 2.5}, "train_max_steps 2.5 is not a whole number"),
    "interval": ({"log_interval_steps": True}, "log_interval_steps True is not a whole number"),
    "lambda": ({"lambda_mel_loss": "x"}, "lambda_mel_loss 'x' is not a number: fix the config"),
    "grad_norm": ({"generator_grad_norm": [1]}, r"generator_grad_norm \[1\] is not a number"),
    "data": ({"data": {"path": "corpus"}}, "data needs a path and a subset mapping"),
    "loss_value": ({"generator_adv_loss_params": {"loss_type": "nope"}},
                   "cannot build GeneratorAdversarialLoss from generator_adv_loss_params: loss_type 'nope'"),
    "loss_name": ({"discriminator_adv_loss_params": {"nope": 1}},
                  "cannot build DiscriminatorAdversarialLoss from discriminator_adv_loss_params: .*'nope'"),
    "optimizer_params": ({"generator_optimizer_params": {"lr": "fast"}},
                         "cannot build Adam from generator_optimizer_params: .*fix the config"),
    "scheduler_params": ({"generator_scheduler_params": {"steps": 3}},
                         "cannot build .* from generator_scheduler_params: .*'steps'"),
    "generator_params": ({"generator_params": {"nope": 1}},
                         "cannot build symAudioDec from generator_params: .*'nope'.*: fix the config"),
    "discriminator_params": ({"discriminator_params": {"nope": 1}},
                             "cannot build the symAudioDec discriminator from discriminator_params: .*'nope'"),
    "paradigm": ({"paradigm": "eficient"}, "paradigm 'eficient' is not one of efficient, joint: fix the config"),
    "start_steps": ({"start_steps": {"gen": 0}}, r"start_steps \{'gen': 0\}: give a mapping of generator and"),
    "save_interval": ({"save_interval_steps": 0}, "save_interval_steps 0: give 1 or more"),
    "log_interval": ({"log_interval_steps": -1}, "log_interval_steps -1: give 1 or more"),
    "sampling_rate": ({"sampling_rate": "8000"}, "sampling_rate '8000' is not a whole number: fix the config"),
    "quoted_switch": ({"use_mel_loss": "false"}, "use_mel_loss 'false' is not true or false \\(unquoted\\)"),
    "misspelt_loss": ({"use_sftf_loss": True, "lambda_sftf_loss": 45},
                      r"use_sftf_loss switches on no loss the trainer knows \(mel, stft, .*\): fix the name"),
    "quoted_padding": ({"pad_short": "no"}, "pad_short 'no' is not true or false"),
    "quoted_run_switch": ({"fast_conv": "false"}, "fast_conv 'false' is not true or false"),  # (had turned it on)
    "quoted_compression": ({"ddp_bf16_compress": "false"}, "ddp_bf16_compress 'false' is not true or false"),
    "budget_zero": ({"cpu_budget_minutes": 0}, "cpu_budget_minutes 0: give minutes above 0, or leave it out"),
    "budget_negative": ({"cpu_budget_minutes": -1}, "cpu_budget_minutes -1: give minutes above 0"),
    "micro_batch": ({"micro_batch": 2.5}, "micro_batch 2.5 is not a whole number: fix the config"),
    "batch_per_rank": ({"batch_size_per_rank": 0}, "batch_size_per_rank 0: give 1 or more"),
    "params_list": ({"generator_params": [1, 2]}, "generator_params is a list, not a mapping of settings"),
    "codebooks": ({"generator_params": {**TINY_AUTOENCODER["generator_params"], "codebook_num": 0}},
                  "cannot build symAudioDec from generator_params: codebook_num 0: give 1 or more"),
    "model_type": ({"model_type": "bogus"}, "unknown model_type 'bogus': use one of symAudioDec, .*: fix the config"),
    "curve_list": ({"learning_curve": [1]}, r"learning_curve is \[1\], not a mapping \(interval_steps, subset"),
    "curve_interval": ({"learning_curve": {"interval_steps": "x"}}, "learning_curve.interval_steps 'x': give a whole"),
}


def assert_stops(config: dict[str, Any], root: Path, message: str) -> None:
    recipe = save_recipe(config, root / "recipe.yaml")
    with pytest.raises(CodecError, match=message):
        run_training(TrainOptions(config=recipe, tag="wrong", exp_root=str(root / "exp")))
    assert not (root / "exp" / "wrong").exists()


@pytest.mark.parametrize("case", CASES)
def test_a_wrong_setting_stops_before_training_with_one_error(tmp_path: Path, case: str) -> None:
    change, message = CASES[case]
    assert_stops(tiny_recipe(tmp_path, **change), tmp_path, message)


def test_a_recipe_without_its_sampling_rate_is_not_trained(tmp_path: Path) -> None:
    config = tiny_recipe(tmp_path)
    del config["sampling_rate"]
    assert_stops(config, tmp_path, r"is not a training recipe \(no sampling_rate\)")


def test_a_config_of_another_kind_is_not_trained(tmp_path: Path) -> None:
    statistic = {key: tiny_recipe(tmp_path)[key] for key in ("sampling_rate", "data")}
    assert_stops(statistic, tmp_path, r"is not a training recipe \(no model_type, generator_params, ")


@pytest.mark.parametrize("option, value, message", [
    ("tag", "", "--tag '': give a folder name under --exp_root"),
    ("tag", ".", "--tag '.': give a folder name under --exp_root"),
    ("seed", -1, r"--seed -1: give a number in 0..4294967295"),
    ("seed", 2**32, r"--seed 4294967296: give a number in 0..4294967295"),
    ("tag", "../elsewhere", "not empty, absolute or with '..'"),
    ("tag", "/abs/olute", "not empty, absolute or with '..'"),
    ("ngpu", -1, "--ngpu -1: give the GPUs per node, or 0 to train on the CPU"),
    ("micro_batch", 0, r"--micro_batch 0: give 1 or more \(or leave it out\)"),
    ("batch_size_per_rank", 0, "--batch_size_per_rank 0: give 1 or more"),
    ("threads", -2, "--threads -2: give 1 or more"),
    ("cpu_budget_minutes", -1.0, r"--cpu_budget_minutes -1.0: give minutes above 0"),
])  # fmt: skip
def test_an_option_a_run_would_misread_is_refused(tmp_path: Path, option: str, value: Any, message: str) -> None:
    """0 would read as 'unset', a negative budget would train nothing, a tag with '..' write elsewhere."""
    options = {"config": save_recipe(tiny_recipe(tmp_path), tmp_path / "recipe.yaml"), "tag": "run",
               "exp_root": str(tmp_path / "exp"), option: value}
    with pytest.raises(CodecError, match=message):
        TrainOptions(**options)


@pytest.mark.parametrize("kind, message", [
    ("autoencoder/symAD_vctk_48000_hop300/checkpoint-200000steps.pkl", r"\d+ tensor\(s\) of another shape \(e.g. "),
    ("vocoder/AudioDec_v1_symAD_vctk_48000_hop300_clean/checkpoint-500000steps.pkl", r"\d+ missing keys \(e.g. \w+"),
])  # fmt: skip
def test_a_checkpoint_of_another_model_is_refused(tmp_path: Path, kind: str, message: str) -> None:
    """--initial (and --resume) with a checkpoint the recipe's models cannot take: one line, no folder."""
    checkpoint = official_path("exp", *kind.split("/"))
    recipe = save_recipe(tiny_recipe(tmp_path), tmp_path / "recipe.yaml")
    with pytest.raises(CodecError, match=f"does not fit the recipe's generator: {message}.*: give a checkpoint of"):
        run_training(TrainOptions(config=recipe, tag="wrong", exp_root=str(tmp_path / "exp"), initial=checkpoint))
    assert not (tmp_path / "exp" / "wrong").exists()


def test_an_exp_root_that_is_a_file_is_one_error(tmp_path: Path) -> None:
    (tmp_path / "exp").write_text("not a folder")
    recipe = save_recipe(tiny_recipe(tmp_path), tmp_path / "recipe.yaml")
    with pytest.raises(CodecError, match=rf"the experiment folder .*: cannot create it \({tmp_path / 'exp'} is a file"):
        run_training(TrainOptions(config=recipe, tag="x", exp_root=str(tmp_path / "exp")))
    assert (tmp_path / "exp").read_text() == "not a folder"


def vocoder_on_an_untrained_analyzer(root: Path, **generator_params: Any) -> dict[str, Any]:
    """The tiny vocoder recipe on the codes of an untrained tiny autoencoder (hop 8), statistics of ones."""
    analyzer = untrained_checkpoint(tiny_recipe(root), root / "analyzer")
    np.save(root / "stats.npy", np.ones((2, 8), np.float32))
    config = tiny_vocoder_recipe(root, analyzer, str(root / "stats.npy"))
    config["generator_params"].update(generator_params)
    return config


def test_a_vocoder_of_another_hop_than_its_analyzer_is_refused(tmp_path: Path) -> None:
    """Upsampling by 4 the frames of an analyzer of hop 8 failed in the mel loss, leaving the folder."""
    config = vocoder_on_an_untrained_analyzer(tmp_path, upsample_scales=[2, 2], upsample_kernel_sizes=[4, 4])
    assert_stops(config, tmp_path, r"encoder hop 8 and decoder hop 4 differ \(the analyzer .*checkpoint-0steps.pkl "
                                   r"and the vocoder's upsample_scales\): pick a matching pair")


@pytest.mark.parametrize("content", [b"not numpy", None], ids=["text", "pickled"])
def test_a_statistics_file_that_is_no_array_is_named_as_such(tmp_path: Path, content: bytes | None) -> None:
    config = vocoder_on_an_untrained_analyzer(tmp_path)
    if content is None:
        np.save(tmp_path / "stats.npy", np.array([{"mean": 0}], dtype=object), allow_pickle=True)
    else:
        (tmp_path / "stats.npy").write_bytes(content)
    assert_stops(config, tmp_path, r"^statistics file .*stats.npy is not a .npy array of statistics \(2 rows: mean, "
                                   r"scale\): write it with the statistics stage")


def add_noisy_subsets(config: dict, tmp_path: Path, train_length: int) -> None:
    """Noisy twins of the tiny corpus's train and dev files (train ones of `train_length` samples), and a
    denoise recipe's four subsets pointing at them."""
    corpus = tmp_path / "corpus"
    for split, length in (("train", train_length), ("dev", 400)):
        names = sorted(path.stem for path in (corpus / split).glob("*.wav"))
        write_wavs(corpus / f"noisy_{split}", len(names), length, seed=11, names=names)
    config["data"]["subset"] = {"clean_train": "train", "clean_valid": "dev", "noisy_train": "noisy_train",
                                "noisy_valid": "noisy_dev"}


@pytest.mark.parametrize("pad_short", [False, True])
def test_denoise_pairs_of_unequal_length_are_named(tmp_path: Path, pad_short: bool) -> None:
    """Pairs whose noisy and clean files differ in length are skipped (as the original's collater does);
    when none is left the error names one and both lengths (it blamed batch_length, or, with pad_short, a
    loader worker's traceback)."""
    config = tiny_recipe(tmp_path, train_mode="denoise", pad_short=pad_short)
    add_noisy_subsets(config, tmp_path, train_length=795)
    assert_stops(config, tmp_path, r"data.subset.noisy_train/clean_train: the noisy and clean files of every pair "
                                   r"differ in length, e.g. .*noisy_train/utt0.wav has 795 samples and "
                                   r".*train/utt0.wav 800; pairs of unequal length are skipped")


def test_a_denoise_recipe_without_initial_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The original trains it too, against the random decoder and codebooks it freezes: a warning says so."""
    config = tiny_recipe(tmp_path, train_mode="denoise", train_max_steps=1, save_interval_steps=1,
                         eval_interval_steps=1, log_interval_steps=1)
    config.pop("adv_train_max_steps")
    add_noisy_subsets(config, tmp_path, train_length=800)
    recipe = save_recipe(config, tmp_path / "denoise.yaml")
    with caplog.at_level(logging.WARNING, logger="trainer.builder"):
        run_training(TrainOptions(config=recipe, tag="denoise", exp_root=str(tmp_path / "exp")))
    assert "The denoise recipe has no 'initial': the encoder trains against a random frozen decoder" in caplog.text


@pytest.mark.parametrize(("rank", "warned"), [(0, True), (1, False)])
def test_the_denoise_warning_is_given_once_by_rank_0(rank: int, warned: bool, caplog: pytest.LogCaptureFixture) -> None:
    """Every rank of a run starts from the same point; only rank 0 says the recipe has no 'initial'."""
    trainer = SimpleNamespace(context=DistributedContext(rank=rank, world_size=2))
    with caplog.at_level(logging.WARNING, logger="trainer.builder"):
        assert load_starting_point(trainer, {"train_mode": "denoise"}, Path("unused"), "", None) is None
    assert ("The denoise recipe has no 'initial'" in caplog.text) is warned


def test_analyzer_option_overrides_a_vocoder_recipes_and_is_refused_elsewhere(tmp_path: Path) -> None:
    """codecTrain.py --analyzer (what submit_codec.sh passes with --exp) replaces the config's analyzer."""
    config = vocoder_on_an_untrained_analyzer(tmp_path, upsample_scales=[2, 2], upsample_kernel_sizes=[4, 4])
    given, config["analyzer"] = config["analyzer"], str(tmp_path / "elsewhere.pkl")
    recipe = save_recipe(config, tmp_path / "vocoder.yaml")
    with pytest.raises(CodecError, match=rf"\(the analyzer {given} and the vocoder's upsample_scales\)"):
        run_training(TrainOptions(config=recipe, tag="wrong", exp_root=str(tmp_path / "exp"), analyzer=given))
    assert not (tmp_path / "exp" / "wrong").exists()
    recipe = save_recipe(tiny_recipe(tmp_path), tmp_path / "autoencoder.yaml")
    with pytest.raises(CodecError, match=r"--analyzer x.pkl: .*autoencoder.yaml is not a vocoder recipe \(train_mode: "
                                         r"autoencoder\), which has no analyzer: leave --analyzer out"):
        run_training(TrainOptions(config=recipe, tag="wrong", exp_root=str(tmp_path / "exp"), analyzer="x.pkl"))
    assert not (tmp_path / "exp" / "wrong").exists()


def test_a_size_yaml_reads_as_text_is_named_with_the_number_to_write(tmp_path: Path) -> None:
    """``codebook_size: 1e9`` is the string '1e9' to YAML 1.1; the model failed comparing it with a number."""
    config = tiny_recipe(tmp_path)
    config["generator_params"] = {**config["generator_params"], "codebook_size": "1e9"}
    assert_stops(config, tmp_path, r"^cannot build symAudioDec from generator_params: codebook_size: '1e9' is text, "
                                   r"not a number \(YAML reads 1e9 as text\): write 1000000000: fix the config$")


@pytest.mark.parametrize(("change", "message"), [
    ({"codebook_size": 2**16}, r"generator_params codebook_size: 65536 makes the models' parameters and buffers "
                               r"take \d+\.\d MB \(quantizer.codebook.layers.0.embed is 8 x 65536\), more than the "
                               r"4.0 MB of CPU memory free for this process: give a smaller codebook_size in "
                               r"generator_params"),
    ({"encode_channels": 64, "decode_channels": 64},
     r"the sizes in generator_params make the models' parameters and buffers take \d+\.\d MB "
     r"\(encoder.conv_blocks.1.conv.conv.weight is 256 x 128 x 8\), more .*: give smaller sizes in generator_params"),
])
def test_models_larger_than_the_free_memory_stop_before_they_are_allocated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: dict, message: str
) -> None:
    """A size a few digits too long failed in the allocator (its own message), or, where the system
    overcommits, was granted and killed the process once written."""
    monkeypatch.setattr(memory, "free_memory", lambda device: 4 * 10**6)
    config = tiny_recipe(tmp_path)
    config["generator_params"] = {**config["generator_params"], **change}
    assert_stops(config, tmp_path, rf"^{message}$")


def test_a_step_that_runs_out_of_memory_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def exhausted(trainer: GANTrainer) -> None:
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                           "memory: you tried to allocate 640000000 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(GANTrainer, "run", exhausted)
    assert_stops(tiny_recipe(tmp_path), tmp_path, r"^out of CPU memory at step 0 \(allocating 640000000 bytes\): "
                                                  r"lower batch_size or batch_length, train in --micro_batch parts, "
                                                  r"or give smaller sizes in generator_params or discriminator_params$")
