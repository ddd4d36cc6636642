"""trainer/synthesis.py: the test stage's output names and its pairing of outputs with references."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from trainer.synthesis import pair_with_references, relative_names
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
    written = [("de/u", tmp_path / "de" / "u_output.wav"), ("extra", tmp_path / "extra_output.wav")]
    references = {"de/u": tmp_path / "clean" / "de" / "u.wav", "fr/u": tmp_path / "clean" / "fr" / "u.wav"}
    with caplog.at_level(logging.WARNING, logger="trainer.synthesis"):
        pairs = pair_with_references(written, references, "data.subset.noisy_test")
    assert pairs == [("de/u", references["de/u"], written[0][1])]
    assert "1 of 2 outputs have no reference file of the same relative name and are not scored: extra" in caplog.text
    with pytest.raises(CodecError, match="no reference files matched the outputs of data.subset.noisy_test"):
        pair_with_references(written[1:], references, "data.subset.noisy_test")
