"""bin/evaluate.py end to end on folders of synthetic wavs."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import ctrl_c_default
from utils.eval.opus_baseline import opus_available
from utils.eval.probe import speech_like_signal

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "bin" / "evaluate.py"
SAMPLE_RATE = 16000


def run_evaluate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("evaluate")
    reference_dir, degraded_dir = root / "ref", root / "deg"
    for index, name in enumerate(["a.wav", "sub/b.wav"]):
        speech = speech_like_signal(2.0, SAMPLE_RATE, seed=index)
        noise = 0.01 * np.random.default_rng(index).standard_normal(len(speech))
        for folder, audio in ((reference_dir, speech), (degraded_dir, speech + noise)):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            sf.write(folder / name, audio, SAMPLE_RATE)
    sf.write(reference_dir / "unmatched.wav", speech_like_signal(1.0, SAMPLE_RATE), SAMPLE_RATE)
    return reference_dir, degraded_dir


def test_table_csv_json_and_plots(folders, tmp_path):
    reference_dir, degraded_dir = folders
    csv_path, json_path, plots = tmp_path / "scores.csv", tmp_path / "scores.json", tmp_path / "plots"
    options = ["--opus"] if opus_available() else []
    completed = run_evaluate(
        str(reference_dir),
        str(degraded_dir),
        "--csv",
        str(csv_path),
        "--json",
        str(json_path),
        "--plots",
        str(plots),
        "--no-visqol",
        *options,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0].split()[:3] == ["file", "PESQ-WB", "STOI"]
    assert any(line.startswith("a.wav ") for line in lines)
    assert any(line.startswith("sub/b.wav ") for line in lines)
    assert any(line.startswith("mean ") for line in lines)
    assert "visqol: skipped" in completed.stdout
    assert f"1 of 3 reference files have no degraded file in {degraded_dir} and are not scored: unmatched.wav" in (
        completed.stderr)  # the mean is not the whole reference set's

    with open(csv_path) as handle:
        rows = list(csv.DictReader(handle))
    assert [row["file"] for row in rows] == ["a.wav", "sub/b.wav", "mean", "scored"]
    assert 1.0 <= float(rows[-2]["pesq_wb"]) <= 4.7 and rows[-1]["pesq_wb"] == "2"
    assert not any(line.startswith("scored") for line in lines)  # every mean covers every file
    report = json.loads(json_path.read_text())
    assert len(report["files"]) == 2 and report["mean"]["file"] == "mean"
    assert set(report["settings"]["metrics"]) == {"pesq_wb", "stoi", "estoi", "si_sdr", "log_mel_distance"}
    assert (plots / "a.png").is_file() and (plots / "sub" / "b.png").is_file()
    if options:
        assert "opus_pesq_wb" in rows[0]
        assert float(rows[-2]["opus_payload_kbps"]) < float(rows[-2]["opus_kbps"])
        assert "audio packets only" in completed.stdout


def test_a_name_that_is_not_utf8_is_shown_and_written_escaped(tmp_path):
    """A Latin-1 `caf\\xe9.wav` from an old archive: the table (on a stdout that refuses what UTF-8
    cannot encode, as under en_US.UTF-8), the CSV and the JSON name it `caf\\xe9.wav`, and every file
    is scored; the plot keeps the file's own name."""
    latin1 = b"caf\xe9.wav"
    speech = speech_like_signal(1.0, SAMPLE_RATE)
    for side in ("ref", "deg"):
        (tmp_path / side).mkdir()
        for name in (latin1, b"a.wav"):
            sf.write(os.path.join(os.fsencode(tmp_path / side), name), speech, SAMPLE_RATE)
    csv_path, json_path, plots = tmp_path / "scores.csv", tmp_path / "scores.json", tmp_path / "plots"
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "ref"), str(tmp_path / "deg"), "--no-visqol", "--csv",
         str(csv_path), "--json", str(json_path), "--plots", str(plots)],
        cwd=REPO, capture_output=True, timeout=120, env=dict(os.environ, PYTHONIOENCODING="utf-8"),
    )
    assert completed.returncode == 0, completed.stderr.decode(errors="replace")
    lines = completed.stdout.decode("utf-8").splitlines()
    assert [line.split()[0] for line in lines[1:4]] == ["a.wav", "caf\\xe9.wav", "mean"]
    with open(csv_path, encoding="utf-8") as handle:
        assert [row["file"] for row in csv.DictReader(handle)] == ["a.wav", "caf\\xe9.wav", "mean", "scored"]
    report = json.loads(json_path.read_bytes().decode("utf-8"))
    assert [row["file"] for row in report["files"]] == ["a.wav", "caf\\xe9.wav"]
    assert report["files"][1]["pesq_wb"] > 4
    assert sorted(os.listdir(os.fsencode(plots))) == [b"a.png", b"caf\xe9.png"]


def test_missing_directory_is_one_line_error(folders, tmp_path):
    completed = run_evaluate(str(tmp_path / "missing"), str(folders[1]))
    assert completed.returncode == 1
    assert len(completed.stderr.strip().splitlines()) == 1
    assert "not found" in completed.stderr and "Traceback" not in completed.stderr


def test_no_matching_files_is_one_line_error(folders, tmp_path):
    (tmp_path / "empty").mkdir()
    completed = run_evaluate(str(folders[0]), str(tmp_path / "empty"))
    assert completed.returncode == 1
    assert len(completed.stderr.strip().splitlines()) == 1
    assert "no matching audio files" in completed.stderr


def assert_one_line_error(completed: subprocess.CompletedProcess, expected: str) -> None:
    assert completed.returncode == 1
    assert len(completed.stderr.strip().splitlines()) == 1 and "Traceback" not in completed.stderr
    assert expected in completed.stderr, completed.stderr


def test_a_missing_degraded_file_is_named_as_missing(folders, tmp_path):
    reference = folders[0] / "a.wav"
    assert_one_line_error(run_evaluate(str(reference), str(tmp_path / "nope.wav")), "degraded")
    assert "nope.wav not found" in run_evaluate(str(reference), str(tmp_path / "nope.wav")).stderr


@pytest.mark.parametrize("option", ["--csv", "--json", "--plots"])
def test_an_output_that_cannot_be_written_is_an_error_before_the_scoring(folders, tmp_path, option):
    (tmp_path / "file").write_text("not a folder")
    reference_dir, degraded_dir = folders
    completed = run_evaluate(str(reference_dir), str(degraded_dir), "--no-visqol", option,
                             str(tmp_path / "file" / "out"))  # fmt: skip
    assert_one_line_error(completed, f"({tmp_path / 'file'} is a file): give another path")
    assert completed.stdout == ""  # nothing scored


@pytest.mark.parametrize("option", ["--csv", "--json"])
def test_a_file_output_in_a_missing_folder_is_an_error_before_the_scoring(folders, tmp_path, option):
    """As for every command's output file: the folder is not made (a typo would hide the scores)."""
    output = tmp_path / "missing" / "scores"
    completed = run_evaluate(str(folders[0]), str(folders[1]), "--no-visqol", option, str(output))
    expected = f"{option} {output}: output folder {output.parent} does not exist: create it first"
    assert_one_line_error(completed, expected)
    assert completed.stdout == "" and not output.parent.exists()


def test_a_file_output_given_a_folder_is_an_error(folders, tmp_path):
    completed = run_evaluate(str(folders[0]), str(folders[1]), "--no-visqol", "--csv", str(tmp_path))
    assert_one_line_error(completed, "is a folder: give a file name")


def test_clips_too_short_for_a_metric_score_nan_for_it(tmp_path):
    for folder in ("ref", "deg"):
        (tmp_path / folder).mkdir()
        sf.write(tmp_path / folder / "click.wav", speech_like_signal(1.0, 8000)[:100], 8000)
    completed = run_evaluate(str(tmp_path / "ref"), str(tmp_path / "deg"), "--no-visqol", "--json",
                             str(tmp_path / "scores.json"))
    assert completed.returncode == 0, completed.stderr
    (row,) = json.loads((tmp_path / "scores.json").read_text())["files"]
    assert row["stoi"] is None and row["estoi"] is None and row["pesq_wb"] is None  # NaN, as JSON has it
    assert "STOI undefined for this clip (0.013 s, under 0.4 s)" in completed.stderr


def test_a_silent_decode_is_named_and_every_mean_says_how_many_files_it_covers(tmp_path):
    for folder in ("ref", "deg"):
        (tmp_path / folder).mkdir()
    for index, name in enumerate(("a.wav", "b.wav")):
        speech = speech_like_signal(2.0, SAMPLE_RATE, seed=index)
        sf.write(tmp_path / "ref" / name, speech, SAMPLE_RATE)
        sf.write(tmp_path / "deg" / name, speech * 0.9 if name == "a.wav" else np.zeros_like(speech), SAMPLE_RATE)
    csv_path, json_path = tmp_path / "scores.csv", tmp_path / "scores.json"
    completed = run_evaluate(str(tmp_path / "ref"), str(tmp_path / "deg"), "--no-visqol", "--csv", str(csv_path),
                             "--json", str(json_path))
    assert completed.returncode == 0, completed.stderr
    assert "b.wav: decoded signal is silent: PESQ-WB and SI-SDR are undefined" in completed.stderr
    scored = next(line for line in completed.stdout.splitlines() if line.startswith("scored"))
    assert scored.split() == ["scored", "1", "2", "2", "1", "2"]
    with open(csv_path) as handle:
        rows = list(csv.DictReader(handle))
    assert [row["file"] for row in rows] == ["a.wav", "b.wav", "mean", "scored"]
    assert rows[2]["sample_rate"] == "" and rows[3]["pesq_wb"] == "1" and rows[3]["stoi"] == "2"
    mean = json.loads(json_path.read_text())["mean"]
    assert mean["counts"] == {"pesq_wb": 1, "stoi": 2, "estoi": 2, "si_sdr": 1, "log_mel_distance": 2}
    assert "sample_rate" not in mean and "seconds" not in mean


def test_errors_are_the_tools_one_line_with_exit_status_1(folders, tmp_path):
    completed = run_evaluate(str(tmp_path / "missing"), str(folders[1]))
    assert completed.stderr.startswith("error: reference ") and completed.returncode == 1


@pytest.mark.parametrize(("number", "line", "status"), [(signal.SIGINT, "interrupted", 130),
                                                        (signal.SIGTERM, "terminated", 143)])
def test_an_interrupted_run_says_so_and_leaves_no_empty_plot_folder(tmp_path, number, line, status):
    speech = speech_like_signal(30.0, SAMPLE_RATE)
    for folder in ("ref", "deg"):
        (tmp_path / folder).mkdir()
        # minutes of scoring: the signal arrives mid-run however loaded the machine is (it ends the run)
        for index in range(40):
            sf.write(tmp_path / folder / f"long{index}.wav", speech, SAMPLE_RATE)
    plots = tmp_path / "plots"
    process = subprocess.Popen([sys.executable, str(SCRIPT), str(tmp_path / "ref"), str(tmp_path / "deg"),
                                "--no-visqol", "--plot", str(plots)], cwd=REPO, stderr=subprocess.PIPE, text=True,
                               preexec_fn=ctrl_c_default)
    deadline = time.monotonic() + 60
    while not plots.is_dir() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, process.stderr.read()
    process.send_signal(number)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == status and stderr.strip().splitlines()[-1] == line, stderr
    assert "Traceback" not in stderr and not plots.exists()
