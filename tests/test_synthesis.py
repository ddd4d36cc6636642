"""trainer/synthesis.py: the test stage's output names and its pairing of outputs with references."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.synthesis import pair_with_references, relative_names, run_test
from utils.errors import CodecError


def test_a_folders_files_are_named_by_their_path_in_it(tmp_path: Path) -> None:
    files = [tmp_path / "de" / "u.wav", tmp_path / "fr" / "u.flac", tmp_path / "v.wav"]
    assert relative_names(tmp_path, files, "data.subset.test") == ["de/u", "fr/u", "v"]


def test_a_lists_files_are_named_from_the_folder_they_share(tmp_path: Path) -> None:
    listing = tmp_path / "test.list"
    listing.write_text("")
    files = [tmp_path / "corpus" / "de" / "u.wav", tmp_path / "corpus" / "fr" / "u.wav"]
    assert relative_names(listing, files, "data.subset.test") == ["de/u", "fr/u"]
    assert relative_names(listing, [files[0]], "data.subset.test") == ["u"]  # one folder: the stems, as the original


@pytest.mark.parametrize("second", ["u.flac", "u.wav"], ids=["other_extension", "listed_twice"])
def test_two_files_that_would_share_an_output_are_refused(tmp_path: Path, second: str) -> None:
    listing = tmp_path / "test.list"
    listing.write_text("")
    with pytest.raises(CodecError, match=r"data.subset.test: .*u\.wav and .*u\.\w+ would both be written as u_output"):
        relative_names(listing, [tmp_path / "u.wav", tmp_path / second], "data.subset.test")


def test_outputs_without_a_reference_are_named_and_left_out(tmp_path: Path, caplog) -> None:
    names = ["de/u", "extra"]
    references = {"de/u": tmp_path / "clean" / "de" / "u.wav", "fr/u": tmp_path / "clean" / "fr" / "u.wav"}
    with caplog.at_level(logging.WARNING, logger="trainer.synthesis"):
        pairs = pair_with_references(names, references, "data.subset.noisy_test")
    assert pairs == {"de/u": references["de/u"]}
    assert "1 of 2 outputs have no reference file of the same relative name and are not scored: extra" in caplog.text
    with pytest.raises(CodecError, match="no reference files matched the outputs of data.subset.noisy_test"):
        pair_with_references(names[1:], references, "data.subset.noisy_test")


@pytest.fixture
def untrained_pair(tmp_path: Path) -> Path:
    """An untrained tiny autoencoder checkpoint (hop 8) whose config's data has noisy_test and clean_test."""
    from tests.test_trainer import tiny_recipe, untrained_checkpoint, write_wavs

    config = tiny_recipe(tmp_path)
    write_wavs(tmp_path / "corpus" / "noisy", 2, 1003, seed=4)
    write_wavs(tmp_path / "corpus" / "clean", 2, 1003, seed=5, names=["other0", "other1"])
    config["data"]["subset"].update(noisy_test="noisy", noisy_dev="noisy", clean_test="clean")
    return Path(untrained_checkpoint(config, tmp_path / "exp"))


def test_a_noisy_subset_without_its_clean_one_is_not_scored_against_itself(untrained_pair: Path,
                                                                           tmp_path: Path) -> None:
    with pytest.raises(CodecError, match=r"--metrics on data.subset.noisy_dev: the encoder's config has no "
                                         r"data.subset.clean_dev to score against: add clean_dev .* or leave out"):
        run_test(str(untrained_pair), str(untrained_pair), str(tmp_path / "out"), "noisy_dev", metrics=True)
    assert not (tmp_path / "out").exists()


def test_outputs_without_references_are_refused_before_any_file_is_coded(untrained_pair: Path,
                                                                         tmp_path: Path) -> None:
    with pytest.raises(CodecError, match="no reference files matched the outputs of data.subset.noisy_test"):
        run_test(str(untrained_pair), str(untrained_pair), str(tmp_path / "out"), "noisy_test", metrics=True)
    assert not (tmp_path / "out").exists()


def test_the_test_stage_writes_the_originals_samples_of_a_file_not_a_whole_number_of_hops(
    untrained_pair: Path,
) -> None:
    """The original codes the file unpadded (its last frame covers the partial hop): the first T samples of
    that output, not those of the file zero-padded to whole hops (other rounding; in a trained model other
    codes for the last frames, tens of LSB in the last hop or two)."""
    from trainer.analysis import quantized_latent
    from trainer.synthesis import OfflineCodec

    codec = OfflineCodec(str(untrained_pair), str(untrained_pair))
    for length in (1001, 1003, 1005, 1007):
        for seed in range(3):
            audio = np.random.default_rng(seed).uniform(-0.5, 0.5, (length, 1)).astype(np.float32)
            signal = torch.from_numpy(audio.T.copy()).unsqueeze(0)
            expected = codec.decoder.decoder(quantized_latent(codec.encoder, signal))[0, 0, :length]
            np.testing.assert_array_equal(codec.code(audio)[:, 0], expected.numpy(), err_msg=f"{length}, {seed}")


def test_a_vocoder_of_another_hop_than_the_encoder_is_refused(untrained_pair: Path, tmp_path: Path) -> None:
    """It failed deep in the output's reshape ("shape '[-1, 1003]' is invalid")."""
    import yaml

    from tests.test_trainer import tiny_vocoder_recipe
    from trainer.synthesis import OfflineCodec
    from utils.checkpoint import build_generator, generator_state_dict

    config = tiny_vocoder_recipe(tmp_path, str(untrained_pair), "unused.npy")
    config["generator_params"].update(upsample_scales=[2, 2], upsample_kernel_sizes=[4, 4])
    config["generator_params"].pop("stats")
    (tmp_path / "vocoder").mkdir()
    (tmp_path / "vocoder" / "config.yml").write_text(yaml.safe_dump(config))
    model = build_generator(config, inference=False)
    torch.save({"model": {"generator": generator_state_dict(model)}}, tmp_path / "vocoder" / "checkpoint-1steps.pkl")
    with pytest.raises(CodecError, match=r"encoder hop 8 and decoder hop 4 differ \(.*checkpoint-0steps.pkl, "
                                         r".*checkpoint-1steps.pkl\): pick a matching pair"):
        OfflineCodec(str(untrained_pair), str(tmp_path / "vocoder" / "checkpoint-1steps.pkl"))


@pytest.fixture
def twins_one_case_apart(untrained_pair: Path, tmp_path: Path) -> Path:
    """untrained_pair, its clean_test subset holding Take.wav and take.wav."""
    clean = tmp_path / "corpus" / "clean"
    (clean / "other0.wav").rename(clean / "Take.wav")
    (clean / "other1.wav").rename(clean / "take.wav")
    return untrained_pair


def test_outputs_one_case_apart_are_refused_where_the_disk_ignores_case(twins_one_case_apart: Path, tmp_path: Path,
                                                                        monkeypatch) -> None:
    """Take.wav and take.wav give Take_output.wav and take_output.wav: one file on macOS's and Windows' disks
    (the second replaced the first, and was scored against both references), two on Linux's. The probe is
    made to answer as macOS's disk would."""
    import trainer.synthesis

    checkpoint, out = str(twins_one_case_apart), tmp_path / "out"
    monkeypatch.setattr(trainer.synthesis, "ignores_case", lambda folder: True)
    with pytest.raises(CodecError) as caught:
        run_test(checkpoint, checkpoint, str(out), "clean_test", specific_folder=True)
    clean = tmp_path / "corpus" / "clean"
    assert str(caught.value) == (f"data.subset.clean_test: {clean / 'Take.wav'} and {clean / 'take.wav'} would both "
                                 f"be written as take_output.wav ({out} ignores letter case in names): rename or "
                                 "remove one of them")
    assert list(out.iterdir()) == []
    monkeypatch.undo()
    if sys.platform == "linux":  # a case-sensitive disk: both are written
        run_test(checkpoint, checkpoint, str(out), "clean_test", specific_folder=True)
        assert sorted(path.name for path in out.iterdir()) == ["Take_output.wav", "take_output.wav"]
