"""Datasets, random-crop collaters and the DataLoader builder, on small wav/flac files written here."""

import logging
import os
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
from dataloader.audio_files import AudioFile, DataError, read_file_list

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


def test_links_are_followed_once_and_a_loop_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    corpus = tmp_path / "corpus"
    write(corpus / "train" / "a.wav", ramp(100))
    write(corpus / "dev" / "b.wav", ramp(100))
    write(tmp_path / "elsewhere" / "c.wav", ramp(100))
    (corpus / "train" / "loop").symlink_to("..")  # holds train itself: would pull train, dev and all in again
    (corpus / "train" / "self").symlink_to(".")
    (corpus / "train" / "more").symlink_to(tmp_path / "elsewhere")
    (corpus / "train" / "more_again").symlink_to(tmp_path / "elsewhere")
    with caplog.at_level(logging.WARNING, logger="dataloader.audio_files"):
        found = find_audio_files(corpus / "train")
    assert [path.relative_to(corpus / "train").as_posix() for path in found] == ["a.wav", "more/c.wav"]
    skipped = [record.getMessage() for record in caplog.records if "searched already" in record.getMessage()]
    assert len(skipped) == 3, skipped  # loop, self, more_again


def test_a_folder_that_cannot_be_listed_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "ok" / "a.wav", ramp(100))
    write(tmp_path / "locked" / "b.wav", ramp(100))
    real_scandir = os.scandir

    def scandir(path):  # as for a folder of mode 000 (which root, running the tests, could still read)
        if os.path.basename(os.fspath(path)) == "locked":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(DataError, match=r"cannot list .*locked \(Permission denied\): make it readable or remove it"):
        find_audio_files(tmp_path)


def test_audio_files_of_other_types_are_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path / "a.wav", ramp(100))
    (tmp_path / "b.ogg").write_bytes(b"OggS")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.MP3").write_bytes(b"ID3")
    with caplog.at_level(logging.WARNING, logger="dataloader.audio_files"):
        assert find_audio_files(tmp_path) == [tmp_path / "a.wav"]
    assert any("2 audio files left out, only .wav/.flac files are read" in record.getMessage()
               for record in caplog.records)


def test_a_list_file_that_is_not_utf8_text_is_named(tmp_path: Path) -> None:
    latin = tmp_path / "list.txt"
    latin.write_bytes("caf\xe9.wav\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"list.txt is not UTF-8 text \(byte 0xe9 at 3\): give a folder"):
        read_file_list(latin)
    write(tmp_path / "x.wav", ramp(1000))
    with pytest.raises(DataError, match=r"x.wav is an audio file, not a list of them"):
        build_dataset(make_config(tmp_path, data={"path": str(tmp_path), "subset": {"train": "x.wav"}}), "train")


def test_unreadable_files_say_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "here.wav", ramp(100))
    (tmp_path / "dangling.wav").symlink_to(tmp_path / "gone.wav")
    listed = tmp_path / "list.txt"
    for entry, reason in (
        ("here.wav", r"here.wav as audio \(it does not exist, read from the current folder /\S+\)"),
        (str(tmp_path / "dangling.wav"), r"dangling.wav as audio \(a link to \S+gone.wav, which does not exist\)"),
    ):
        listed.write_text(entry + "\n")
        with pytest.raises(DataError, match=reason + ": repair it or remove it from the data"):
            AudioDataset(listed, sampling_rate=RATE).read_headers()


def test_a_file_name_that_is_not_utf8_is_read(tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9.wav")  # a Latin-1 name, as in old corpora
    sf.write(os.path.join(os.fsencode(tmp_path), b"caf\xe9.wav"), ramp(500), RATE, subtype="FLOAT")
    dataset = AudioDataset(tmp_path, sampling_rate=RATE, lazy=True)
    dataset.read_headers()
    assert dataset.files == [tmp_path / name] and dataset.lengths[tmp_path / name] == 500
    np.testing.assert_array_equal(dataset[0][100:200], ramp(500)[100:200].astype(np.float32))
    np.testing.assert_array_equal(AudioDataset(tmp_path)[0], ramp(500).astype(np.float32))


def test_non_finite_samples_are_named_where_a_crop_meets_them(tmp_path: Path) -> None:
    audio = ramp(1000)
    audio[700, 0] = np.inf
    path = write(tmp_path / "bad.wav", audio)
    file = AudioFile(path, expected_sampling_rate=RATE)
    assert np.isfinite(file[0:700]).all()  # a crop that does not meet it trains
    with pytest.raises(DataError, match=r"bad.wav has a non-finite sample \(inf\) at 0.014583 s \(frame 700, "
                                        r"channel 0\): repair or re-export the file, or remove it from the data"):
        file[600:800]


def test_a_damaged_file_is_named_when_its_crop_is_read(tmp_path: Path) -> None:
    path = tmp_path / "bad.flac"
    sf.write(path, 0.3 * np.sin(np.arange(RATE) / 3), RATE)
    data = bytearray(path.read_bytes())
    for index in range(len(data) // 2, len(data)):
        data[index] = (data[index] * 7 + 3) & 255
    path.write_bytes(bytes(data))
    file = AudioFile(path, expected_sampling_rate=RATE)  # the header is fine
    with pytest.raises(DataError, match=r"cannot read \S+bad.flac as audio \(.+\): repair it or remove it"):
        file[RATE - 2000 : RATE - 1000]


def test_a_truncated_wav_is_told(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path / "cut.wav", ramp(800))
    path.write_bytes(path.read_bytes()[: -200 * 4])  # float32 mono: 200 frames fewer than the header says
    with caplog.at_level(logging.WARNING, logger="dataloader.audio_files"):
        assert AudioFile(path).frames == 600
    assert any("cut.wav is truncated: its header says 800 frames, the file holds 600" in record.getMessage()
               for record in caplog.records)


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
