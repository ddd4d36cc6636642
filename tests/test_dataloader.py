"""Datasets, random-crop collaters and the DataLoader builder, on small wav/flac files written here."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from dataloader import (
    AudioCollater,
    AudioDataset,
    PairedAudioCollater,
    PairedAudioDataset,
    build_data_loaders,
    build_dataset,
    find_audio_files,
)

RATE = 48000
CROP = 960


def ramp(length: int, channels: int = 1, offset: float = 0.0) -> np.ndarray:
    """Distinct values per sample (exact in float32), so a crop reveals where it was cut: ``(T, C)``."""
    values = (np.arange(length, dtype=np.float64) + offset) / 2**16
    return np.stack([values + channel / 4 for channel in range(channels)], axis=1)


def write(path: Path, audio: np.ndarray, rate: int = RATE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, rate, subtype="FLOAT" if path.suffix == ".wav" else "PCM_24")
    return path


def crop_start(crop: torch.Tensor) -> int:
    """Where a crop of a :func:`ramp` began, from its first sample ``(C, T)``."""
    return round(float(crop[0, 0]) * 2**16)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """corpus/{train,dev} with long files, one short file, and noisy_{train,dev} partners."""
    for split, count in (("train", 4), ("dev", 2)):
        for index in range(count):
            name = f"spk{index % 2}/utt{index}.wav"
            write(tmp_path / split / name, ramp(3 * CROP + 100 * index))
            write(tmp_path / f"noisy_{split}" / name, ramp(3 * CROP + 100 * index, offset=7))
        write(tmp_path / split / "short.wav", ramp(CROP // 2))
        write(tmp_path / f"noisy_{split}" / "short.wav", ramp(CROP // 2, offset=7))
    return tmp_path


def make_config(corpus: Path, **overrides) -> dict:
    config = {
        "sampling_rate": RATE,
        "train_mode": "autoencoder",
        "data": {"path": str(corpus), "subset": {"train": "train", "valid": "dev", "test": "dev"}},
        "batch_size": 2,
        "batch_length": CROP,
        "num_workers": 0,
        "pin_memory": False,
    }
    config.update(overrides)
    return config


# ---- files and datasets ----------------------------------------------------------------------


def test_find_audio_files_is_recursive_sorted_and_keeps_wav_and_flac(tmp_path: Path) -> None:
    write(tmp_path / "b" / "deep" / "two.flac", ramp(100))
    write(tmp_path / "a" / "one.wav", ramp(100))
    write(tmp_path / "c" / "three.WAV", ramp(100))
    (tmp_path / "notes.txt").write_text("not audio")
    found = find_audio_files(tmp_path)
    assert [path.relative_to(tmp_path).as_posix() for path in found] == ["a/one.wav", "b/deep/two.flac", "c/three.WAV"]


def test_dataset_returns_float32_time_by_channel_and_names(tmp_path: Path) -> None:
    write(tmp_path / "x" / "p225_001.wav", ramp(500, channels=2))
    write(tmp_path / "p225_002.flac", ramp(300, channels=2))
    dataset = AudioDataset(tmp_path, sampling_rate=RATE, return_name=True)
    assert len(dataset) == 2
    name, audio = dataset[0]
    assert name == "p225_002" and audio.dtype == np.float32 and audio.shape == (300, 2)
    assert dataset[1][1].shape == (500, 2)
    assert dataset.names == ["p225_002", "p225_001"]
    assert isinstance(AudioDataset(tmp_path)[0], np.ndarray)


def test_dataset_reads_a_list_file_and_subset_num(tmp_path: Path) -> None:
    files = [write(tmp_path / f"u{index}.wav", ramp(200)) for index in range(3)]
    list_file = tmp_path / "list.txt"
    list_file.write_text("\n".join(str(path) for path in reversed(files)) + "\n\n")
    assert AudioDataset(list_file).files == files
    assert AudioDataset(list_file, subset_num=2).files == files[:2]


def test_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no \.wav/\.flac files found in .*empty"):
        AudioDataset(tmp_path / "empty")


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        AudioDataset(tmp_path / "nowhere")


def test_wrong_sampling_rate_is_a_clear_error(tmp_path: Path) -> None:
    write(tmp_path / "slow.wav", ramp(200), rate=24000)
    dataset = AudioDataset(tmp_path, sampling_rate=RATE)
    with pytest.raises(ValueError, match="sampled at 24000 Hz but the config's sampling_rate is 48000 Hz; resample"):
        dataset[0]
    with pytest.raises(ValueError, match="24000 Hz"):
        dataset.keep_longer_than(10)


def test_keep_longer_than_drops_files_not_longer_than_the_crop(tmp_path: Path) -> None:
    for length in (CROP - 1, CROP, CROP + 1):
        write(tmp_path / f"len{length}.wav", ramp(length))
    dataset = AudioDataset(tmp_path)
    assert dataset.keep_longer_than(CROP) == 2
    assert dataset.names == [f"len{CROP + 1}"]


def test_paired_dataset_matches_by_relative_path(corpus: Path) -> None:
    dataset = PairedAudioDataset(corpus / "noisy_train", corpus / "train", sampling_rate=RATE, return_name=True)
    assert len(dataset) == 5
    for noisy_path, clean_path in dataset.pairs:
        assert noisy_path.relative_to(corpus / "noisy_train") == clean_path.relative_to(corpus / "train")
    name, noisy, clean = dataset[0]
    assert name == dataset.names[0]
    np.testing.assert_allclose(noisy - clean, 7 / 2**16, rtol=0, atol=1e-7)


def test_paired_dataset_missing_partner_is_a_clear_error(corpus: Path) -> None:
    (corpus / "noisy_train" / "spk1" / "utt1.wav").unlink()
    with pytest.raises(ValueError, match=r"utt1\.wav has no partner under .*noisy_train \(1 of 5 files"):
        PairedAudioDataset(corpus / "noisy_train", corpus / "train")


# ---- collaters --------------------------------------------------------------------------------


def test_collater_cuts_contiguous_crops_of_batch_length() -> None:
    batch = [ramp(5 * CROP, channels=2), ramp(2 * CROP, channels=2)]
    crops = AudioCollater(CROP)(batch)
    assert crops.shape == (2, 2, CROP) and crops.dtype == torch.float32
    for crop, audio in zip(crops, batch):
        start = crop_start(crop)
        assert 0 <= start <= len(audio) - CROP
        torch.testing.assert_close(crop, torch.from_numpy(audio[start : start + CROP].T.astype(np.float32)))


def test_collater_start_covers_the_whole_file() -> None:
    torch.manual_seed(0)
    starts = {crop_start(AudioCollater(CROP)([ramp(CROP + 2)])[0]) for _ in range(200)}
    assert starts == {0, 1, 2}


def test_collater_skips_files_not_longer_than_the_crop() -> None:
    crops = AudioCollater(CROP)([ramp(CROP), ramp(CROP + 10), ramp(10)])
    assert crops.shape == (1, 1, CROP)
    with pytest.raises(ValueError, match="lower batch_length or set pad_short: true"):
        AudioCollater(CROP)([ramp(CROP), ramp(10)])


def test_collater_pad_short_zero_pads_instead() -> None:
    crops = AudioCollater(CROP, pad_short=True)([ramp(10), ramp(3 * CROP)])
    assert crops.shape == (2, 1, CROP)
    torch.testing.assert_close(crops[0, 0, :10], torch.from_numpy(ramp(10)[:, 0].astype(np.float32)))
    assert torch.count_nonzero(crops[0, 0, 10:]) == 0


def test_paired_collater_cuts_aligned_crops() -> None:
    torch.manual_seed(1)
    batch = [(ramp(4 * CROP, offset=7), ramp(4 * CROP)) for _ in range(8)]
    noisy, clean = PairedAudioCollater(CROP)(batch)
    assert noisy.shape == clean.shape == (8, 1, CROP)
    torch.testing.assert_close(noisy - clean, torch.full_like(noisy, 7 / 2**16))
    assert len({crop_start(crop) for crop in clean}) > 1


def test_paired_collater_skips_short_and_mismatched_pairs() -> None:
    batch = [(ramp(CROP), ramp(CROP)), (ramp(2 * CROP), ramp(2 * CROP + 1)), (ramp(2 * CROP), ramp(2 * CROP))]
    noisy, clean = PairedAudioCollater(CROP)(batch)
    assert noisy.shape == clean.shape == (1, 1, CROP)
    noisy, clean = PairedAudioCollater(CROP, pad_short=True)(batch)
    assert noisy.shape == (2, 1, CROP)


# ---- DataLoader builder -----------------------------------------------------------------------


def test_build_data_loaders_yields_batches_and_skips_short_files(corpus: Path) -> None:
    loaders = build_data_loaders(make_config(corpus))
    assert set(loaders) == {"train", "dev"}
    assert len(loaders["train"].dataset) == 4 and len(loaders["dev"].dataset) == 2
    batches = list(loaders["train"])
    assert [batch.shape for batch in batches] == [(2, 1, CROP), (2, 1, CROP)]


def test_build_data_loaders_pad_short_keeps_short_files(corpus: Path) -> None:
    loaders = build_data_loaders(make_config(corpus, pad_short=True, batch_size=8))
    assert len(loaders["train"].dataset) == 5
    assert next(iter(loaders["train"])).shape == (5, 1, CROP)


def test_build_data_loaders_batch_length_override(corpus: Path) -> None:
    loaders = build_data_loaders(make_config(corpus), batch_length=2 * CROP)
    assert next(iter(loaders["dev"])).shape[-1] == 2 * CROP


def test_build_data_loaders_denoise_gives_aligned_noisy_clean(corpus: Path) -> None:
    subsets = {
        f"{kind}_{split}": f"{prefix}{folder}"
        for kind, prefix in (("noisy", "noisy_"), ("clean", ""))
        for split, folder in (("train", "train"), ("valid", "dev"))
    }
    config = make_config(corpus, train_mode="denoise")
    config["data"]["subset"] = subsets
    noisy, clean = next(iter(build_data_loaders(config)["train"]))
    assert noisy.shape == clean.shape == (2, 1, CROP)
    torch.testing.assert_close(noisy - clean, torch.full_like(noisy, 7 / 2**16))


def test_build_data_loaders_errors_name_the_fix(corpus: Path) -> None:
    with pytest.raises(ValueError, match="none of the 5 files is longer than batch_length=100000 samples"):
        build_data_loaders(make_config(corpus, batch_length=100000))
    with pytest.raises(ValueError, match="sampling_rate is 24000 Hz"):
        build_data_loaders(make_config(corpus, sampling_rate=24000))
    config = make_config(corpus)
    del config["data"]["subset"]["valid"]
    with pytest.raises(ValueError, match="data.subset has no 'valid' entry"):
        build_data_loaders(config)
    with pytest.raises(ValueError, match="train_mode 'gan'"):
        build_data_loaders(make_config(corpus, train_mode="gan"))


@pytest.mark.parametrize("pad_short", [False, True])
def test_a_file_the_model_cannot_take_is_named_before_training(corpus: Path, pad_short: bool) -> None:
    """Found from the headers when the loaders are built, not by a loader worker in the middle of training."""
    (corpus / "train" / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(ValueError, match=r"cannot read .*broken.wav as audio \(.*\): repair it or remove it"):
        build_data_loaders(make_config(corpus, pad_short=pad_short))
    (corpus / "train" / "broken.wav").unlink()
    write(corpus / "dev" / "stereo.wav", ramp(3 * CROP, channels=2))
    with pytest.raises(ValueError, match=r"stereo.wav has 2 channel\(s\) but the model \(generator_params.input_"
                                         r"channels\) takes 1: convert it"):
        build_data_loaders(make_config(corpus, pad_short=pad_short))
    # A 2-channel model takes it (and refuses the mono files); a vocoder is checked against its output.
    with pytest.raises(ValueError, match=r"short.wav has 1 channel\(s\) but the model .* takes 2"):
        build_data_loaders(make_config(corpus, generator_params={"input_channels": 2}))
    with pytest.raises(ValueError, match=r"stereo.wav has 2 channel\(s\) but the vocoder \(generator_params.out_"):
        build_data_loaders(make_config(corpus, train_mode="vocoder", generator_params={"out_channels": 1}))


def test_distributed_ranks_read_disjoint_shares(corpus: Path) -> None:
    config = make_config(corpus, batch_size=1)
    shares = []
    for rank in range(2):
        loader = build_data_loaders(config, rank=rank, world_size=2)["train"]
        loader.sampler.set_epoch(0)
        assert len(loader) == 2
        shares.append(set(loader.sampler))
    assert shares[0].isdisjoint(shares[1]) and shares[0] | shares[1] == {0, 1, 2, 3}


def test_build_dataset_for_the_test_stage_returns_names(corpus: Path) -> None:
    dataset = build_dataset(make_config(corpus), "test", return_name=True, subset_num=2)
    assert [name for name, _ in dataset] == ["short", "utt0"]


def test_workers_draw_different_crops(tmp_path: Path) -> None:
    for index in range(4):
        write(tmp_path / "train" / f"same{index}.wav", ramp(40 * CROP))
        write(tmp_path / "dev" / f"same{index}.wav", ramp(40 * CROP))
    loader = build_data_loaders(make_config(tmp_path, batch_size=1, num_workers=2))["train"]
    starts = [crop_start(batch[0]) for batch in loader]
    assert len(starts) == 4 and len(set(starts)) == 4
