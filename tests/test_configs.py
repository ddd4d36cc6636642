"""The recipe configs: every configuration of the original project, with its values, and the CPU demos."""

import math
from pathlib import Path

import pytest
import yaml

CONFIG_ROOT = Path(__file__).resolve().parent.parent / "config"

ORIGINAL_CONFIGS = [
    "autoencoder/symAD_vctk_48000_hop300",
    "autoencoder/symAAD_vctk_48000_hop300",
    "autoencoder/symAD_c16_vctk_48000_hop320",
    "autoencoder/symAD_libritts_24000_hop300",
    "autoencoder/symADuniv_vctk_48000_hop300",
    "vocoder/AudioDec_v0_symAD_vctk_48000_hop300_clean",
    "vocoder/AudioDec_v1_symAD_vctk_48000_hop300_clean",
    "vocoder/AudioDec_v2_symAD_vctk_48000_hop300_clean",
    "vocoder/AudioDec_v1_symAD_libritts_24000_hop300_clean",
    "vocoder/AudioDec_v3_symADuniv_vctk_48000_hop300_clean",
    "statistic/symAD_vctk_48000_hop300_clean",
    "statistic/symAD_libritts_24000_hop300_clean",
    "statistic/symADuniv_vctk_48000_hop300_clean",
    "denoise/symAD_vctk_48000_hop300",
]
DEMO_CONFIGS = [
    "autoencoder/demo_48000_hop300",
    "statistic/demo_48000_hop300",
    "vocoder/demo_v1_48000_hop300",
    "denoise/demo_48000_hop300",
]
TRAINING_CONFIGS = [name for name in ORIGINAL_CONFIGS + DEMO_CONFIGS if not name.startswith("statistic/")]


def load(name: str) -> dict:
    with open(CONFIG_ROOT / f"{name}.yaml") as handle:
        return yaml.safe_load(handle)


def hop_size(config: dict) -> int:
    params = config["generator_params"]
    return math.prod(params["enc_strides"] if "enc_strides" in params else params["upsample_scales"])


@pytest.mark.parametrize("name", ORIGINAL_CONFIGS + DEMO_CONFIGS)
def test_config_exists_and_loads(name: str) -> None:
    config = load(name)
    assert isinstance(config["sampling_rate"], int)
    assert {"path", "subset"} <= set(config["data"])


def test_every_config_file_loads() -> None:
    for path in CONFIG_ROOT.rglob("*.yaml"):
        with open(path) as handle:
            assert isinstance(yaml.safe_load(handle), dict), path


@pytest.mark.parametrize("name", TRAINING_CONFIGS)
def test_crops_are_whole_frames_and_mel_rate_matches(name: str) -> None:
    config = load(name)
    for key in ("batch_length", "adv_batch_length"):
        if key in config:
            assert config[key] % hop_size(config) == 0
    assert config["mel_loss_params"]["fs"] == config["sampling_rate"]
    assert config["mel_loss_params"]["fmax"] == config["sampling_rate"] // 2


def test_symAD_vctk_values() -> None:
    config = load("autoencoder/symAD_vctk_48000_hop300")
    params = config["generator_params"]
    assert (config["model_type"], config["train_mode"]) == ("symAudioDec", "autoencoder")
    assert (params["codebook_num"], params["codebook_size"], params["code_dim"]) == (8, 1024, 64)
    assert params["enc_strides"] == [3, 4, 5, 5] and params["dec_strides"] == [5, 5, 4, 3]
    assert params["enc_ratios"] == [2, 4, 8, 16] and params["quantier"] == "residual_vq"
    assert config["start_steps"] == {"generator": 0, "discriminator": 200000}
    assert (config["train_max_steps"], config["adv_train_max_steps"]) == (200000, 700000)
    assert config["lambda_mel_loss"] == 45.0 and config["mel_loss_params"]["log_base"] is None
    assert config["generator_optimizer_params"] == {"lr": 1.0e-4, "betas": [0.5, 0.9], "weight_decay": 0.0}
    assert config["discriminator_scheduler_params"]["milestones"] == [200000, 400000, 600000, 800000]
    assert config["data"]["subset"]["train"] == "clean_trainset_84spk_wav"


def test_other_autoencoder_values() -> None:
    c16 = load("autoencoder/symAD_c16_vctk_48000_hop320")
    assert c16["generator_params"]["codebook_num"] == 16 and hop_size(c16) == 320
    assert (c16["batch_length"], c16["shape_loss_params"]["winlen"]) == (96000, [320])
    activate = load("autoencoder/symAAD_vctk_48000_hop300")
    assert activate["generator_params"]["codec"] == "activate_audiodec"
    assert activate["generator_params"]["use_weight_norm"] is True
    assert activate["data"]["subset"]["vhstest"] == "VHS_48000_raw_Phase1_test.txt"
    libritts = load("autoencoder/symAD_libritts_24000_hop300")
    assert (libritts["sampling_rate"], libritts["adv_train_max_steps"]) == (24000, 1000000)
    univ = load("autoencoder/symADuniv_vctk_48000_hop300")
    assert univ["model_type"] == "symAudioDecUniv"
    assert univ["discriminator_params"]["spectral_discriminator_params"]["kernel_sizes"][-1] == [3, 3]


@pytest.mark.parametrize(
    ("name", "stats", "analyzer_step", "kernels", "groups"),
    [
        ("vocoder/AudioDec_v0_symAD_vctk_48000_hop300_clean", "symAD_vctk_48000_hop300_clean", 200000, [3, 7, 11], 1),
        ("vocoder/AudioDec_v1_symAD_vctk_48000_hop300_clean", "symAD_vctk_48000_hop300_clean", 200000, [11], 3),
        ("vocoder/AudioDec_v2_symAD_vctk_48000_hop300_clean", "symAD_vctk_48000_hop300_clean", 200000, [3], 3),
        ("vocoder/AudioDec_v1_symAD_libritts_24000_hop300_clean", "symAD_libritts_24000_hop300_clean", 500000, [11], 3),
        ("vocoder/AudioDec_v3_symADuniv_vctk_48000_hop300_clean", "symADuniv_vctk_48000_hop300_clean", 500000, [11], 3),
    ],
)
def test_vocoder_values(name: str, stats: str, analyzer_step: int, kernels: list[int], groups: int) -> None:
    config = load(name)
    params = config["generator_params"]
    assert params["stats"] == f"stats/{stats}.npy"
    assert config["analyzer"].endswith(f"/checkpoint-{analyzer_step}steps.pkl")
    assert (params["resblock_kernel_sizes"], params["groups"]) == (kernels, groups)
    assert len(params["resblock_dilations"]) == len(kernels)
    assert params["in_channels"] == 64 and hop_size(config) == 300
    assert config["train_max_steps"] == 500000 and config["train_mode"] == "vocoder"
    statistic = load(f"statistic/{stats}")
    assert (statistic["stats"], statistic["analyzer"]) == (params["stats"], config["analyzer"])


def test_denoise_values() -> None:
    config = load("denoise/symAD_vctk_48000_hop300")
    assert config["train_mode"] == "denoise"
    assert config["initial"] == "exp/autoencoder/symAD_vctk_48000_hop300/checkpoint-200000steps.pkl"
    assert config["data"]["subset"]["noisy_train"] == "noisy_trainset_84spk_wav"
    assert config["mel_loss_params"]["win_lengths"] == [None] and config["batch_length"] == 96000


def test_demo_configs_run_on_the_corpus_and_fit_together() -> None:
    autoencoder, statistic, vocoder, denoise = (load(name) for name in DEMO_CONFIGS)
    for config in (autoencoder, statistic, vocoder):
        assert config["data"] == {"path": "corpus", "subset": {"train": "train", "valid": "dev", "test": "test"}}
    assert denoise["data"]["path"] == "corpus"
    assert denoise["data"]["subset"] == {
        "clean_train": "train",
        "clean_valid": "dev",
        "clean_test": "test",
        "noisy_train": "noisy_train",
        "noisy_valid": "noisy_dev",
        "noisy_test": "noisy_test",
    }
    encoder_checkpoint = f"exp/autoencoder/demo_48000_hop300/checkpoint-{autoencoder['train_max_steps']}steps.pkl"
    assert statistic["analyzer"] == vocoder["analyzer"] == denoise["initial"] == encoder_checkpoint
    assert vocoder["generator_params"]["stats"] == statistic["stats"]
    assert vocoder["generator_params"]["in_channels"] == autoencoder["generator_params"]["code_dim"]
    assert denoise["generator_params"] == autoencoder["generator_params"]
    assert hop_size(autoencoder) == hop_size(vocoder) == 300
    for config in (autoencoder, vocoder, denoise):
        assert config["batch_size"] <= 4 and config["batch_length"] == 9600 and config["num_workers"] == 0
        assert config["train_max_steps"] <= 20 and config["save_interval_steps"] <= 10
    params = autoencoder["generator_params"]
    assert params["encode_channels"] <= 8 and params["code_dim"] <= 32 and params["codebook_size"] <= 256
    assert autoencoder["start_steps"]["discriminator"] == autoencoder["train_max_steps"] == 10
    assert autoencoder["adv_train_max_steps"] == 20
