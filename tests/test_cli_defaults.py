"""Quiet, sensible defaults: device, thread count, progress bars, codecTest's subset, the report's rate-quality
plot; a torch too old is one line."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from tests.conftest import OFFICIAL, REPO, official_path
from utils.cli import apply_runtime_arguments, check_torch_version, default_num_threads
from utils.errors import CodecError
from utils.registry import get_entry, resolve

RATE = 48000


def run(script: str, *args: str, cwd: str = OFFICIAL) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(REPO, script), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=180)


@pytest.fixture
def short_wav(tmp_path) -> Path:
    audio, _ = sf.read(official_path("input", "test_48k.wav"))
    folder = tmp_path / "audio"
    folder.mkdir()
    sf.write(folder / "a.wav", audio[:RATE // 2], RATE, "PCM_16")
    return folder / "a.wav"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only default")
def test_cpu_only_default_is_quiet_and_explicit_gpu_says_it_falls_back(tmp_path, short_wav: Path) -> None:
    quiet = run("demoFile.py", "--model", "vctk_sym", "-i", str(short_wav), "-o", str(tmp_path / "a.wav"))
    assert quiet.returncode == 0, quiet.stderr
    assert "CUDA" not in quiet.stderr
    told = run("demoFile.py", "--model", "vctk_sym", "--cuda", "0", "-i", str(short_wav), "-o", str(tmp_path / "b.wav"))
    assert told.returncode == 0 and "--cuda 0: CUDA is not available, running on the CPU" in told.stderr


@pytest.mark.parametrize("script, command, output", [("demoFile.py", [], "out.wav"),
                                                     ("codec.py", ["encode"], "out.adc")])
def test_the_default_model_when_missing_is_named_as_the_default(tmp_path, short_wav: Path, script: str,
                                                                command: list[str], output: str) -> None:
    """No --model: the error says the missing model is the default one, and how to name another."""
    result = run(script, *command, "-i", str(short_wav), "-o", str(tmp_path / output),
                 "--root", str(tmp_path))  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("error: no --model given, so the default, model 'libritts_v1' is not installed")
    assert result.stderr.rstrip().endswith("or name another with --model (--list-models)")
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / output).exists()


def test_thread_default_follows_the_cores_this_process_may_use() -> None:
    assert default_num_threads() == min(4, len(os.sched_getaffinity(0)))
    pinned = subprocess.run(
        [sys.executable, "-c", "import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
         "from utils.cli import default_num_threads; print(default_num_threads())"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert pinned.stdout.strip() == "1", pinned.stderr
    previous = torch.get_num_threads()
    try:
        args = argparse.Namespace(num_threads=None, cuda=-1)
        assert apply_runtime_arguments(args) == "cpu"
        assert args.num_threads == torch.get_num_threads() == default_num_threads()
        with pytest.raises(CodecError, match="give 1 or more"):
            apply_runtime_arguments(argparse.Namespace(num_threads=0, cuda=-1))
    finally:
        torch.set_num_threads(previous)


def test_thread_default_on_a_system_without_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    """macOS and Windows have no os.sched_getaffinity: the default is then the cores there are."""
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert default_num_threads() == 3
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # "undeterminable"
    assert default_num_threads() == 1


def test_fit_entropy_shows_progress(tmp_path, short_wav: Path) -> None:
    table = tmp_path / "table.entropy"
    result = run("codec.py", "fit-entropy", "--model", "vctk_sym", "-i", str(short_wav.parent), "-o", str(table))
    assert result.returncode == 0, result.stderr
    assert "fit-entropy: 100%" in result.stderr and "1/1" in result.stderr
    assert table.is_file()
    (tmp_path / "file").write_text("not a folder")
    result = run("codec.py", "fit-entropy", "--model", "vctk_sym", "-i", str(short_wav.parent), "-o",
                 str(tmp_path / "file" / "table.entropy"))  # fmt: skip
    assert result.returncode == 1 and "fit-entropy: " not in result.stderr  # refused before the coding
    assert result.stderr.strip().endswith("is a file, not a folder: give another output path")


def experiment_with_subsets(tmp_path: Path, subsets: dict[str, str]) -> str:
    """A copy of the official-format vctk_sym experiment whose config names `subsets` under tmp_path/corpus."""
    source = Path(OFFICIAL) / "exp" / "autoencoder" / "symAD_vctk_48000_hop300"
    folder = tmp_path / "exp" / "sym"
    shutil.copytree(source, folder)
    config = yaml.safe_load((folder / "config.yml").read_text())
    config["data"] = {"path": str(tmp_path / "corpus"), "subset": subsets}
    (folder / "config.yml").write_text(yaml.safe_dump(config))
    return str(folder / "checkpoint-200000steps.pkl")


def test_codec_test_default_subset_is_one_the_config_has(tmp_path, short_wav: Path) -> None:
    (tmp_path / "corpus" / "eval").mkdir(parents=True)
    shutil.copy(short_wav, tmp_path / "corpus" / "eval" / "a.wav")
    checkpoint = experiment_with_subsets(tmp_path, {"train": "eval", "test": "eval"})
    result = run("codecTest.py", "--encoder", checkpoint, "--decoder", checkpoint, "--output_dir",
                 str(tmp_path / "out"), "--specific_folder", "True", cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert sf.info(tmp_path / "out" / "a_output.wav").frames == RATE // 2

    other = tmp_path / "other"
    checkpoint = experiment_with_subsets(other, {"train": "eval", "dev": "eval"})
    result = run("codecTest.py", "--encoder", checkpoint, "--decoder", checkpoint, "--output_dir",
                 str(other / "out"), cwd=str(other))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == ("error: the encoder's config has no test subset (test or clean_test): "
                                     "pass --subset with one of dev, train")
    assert not (other / "out").exists()


def test_model_report_writes_a_rate_quality_plot(tmp_path, short_wav: Path) -> None:
    from bin.model_report import main, rate_quality_points
    from utils.eval.opus_baseline import opus_available

    encoder, decoder = resolve(get_entry("vctk_sym"), OFFICIAL)
    opus = ["--opus", "6,12"] if opus_available() else []
    out = tmp_path / "report"
    assert main(["--encoder", encoder, "--decoder", decoder, "--cuda", "-1", "--num_threads", "1",
                 "--test", str(short_wav.parent), "--codebooks", "8,4,2", *opus, "--out", str(out)]) == 0
    assert (out / "rate_quality.png").stat().st_size > 1000
    summary = json.loads((out / "report.json").read_text())["summary"]
    points = rate_quality_points(summary)
    # the tiny model: 64 codes (6 bits) per codebook at 160 frames/s, by rising bitrate
    assert [kbps for kbps, _, _ in points["custom"]] == pytest.approx([k * 6 * 160 / 1000 for k in (2, 4, 8)])
    assert all(1.0 <= pesq <= 4.7 and np.isfinite(estoi) for _, pesq, estoi in points["custom"])
    if opus:
        assert len(points["Opus"]) == 2


@pytest.mark.parametrize("version", ["2.5.0", "2.5.1+cu124", "2.13.0+cpu", "2.14.1+cu130", "3.0.0"])
def test_supported_torch_versions_pass(version: str) -> None:
    check_torch_version(version)


@pytest.mark.parametrize("version", ["2.4.1+cu121", "2.3.0", "1.13.1"])
def test_an_older_torch_is_refused_with_the_fix(version: str) -> None:
    expected = rf"torch {re.escape(version)} is older than 2.5.*python -m utils.install_requirements \(torch 2.13.0\)"
    with pytest.raises(CodecError, match=expected):
        check_torch_version(version)


NO_TORCH = ("def missing(name):\n"
            "    raise importlib.metadata.PackageNotFoundError(name)\n"
            "real_version, real_spec = importlib.metadata.version, importlib.util.find_spec\n"
            "importlib.metadata.version = lambda name: missing(name) if name == 'torch' else real_version(name)\n"
            "importlib.util.find_spec = lambda name, *rest: None if name == 'torch' else real_spec(name, *rest)\n")


@pytest.mark.parametrize("installed, expected", [
    ("real = importlib.metadata.version\n"
     "importlib.metadata.version = lambda name: '2.4.1+cu121' if name == 'torch' else real(name)\n",
     "error: torch 2.4.1+cu121 is older than 2.5, the oldest this toolkit runs on: "
     "python -m utils.install_requirements (torch 2.13.0), or a torch 2.5 or newer built for your CUDA"),
    (NO_TORCH, "error: torch is not installed: python -m utils.install_requirements"),
], ids=["torch-2.4", "no-torch"])
def test_a_cli_under_an_older_torch_or_none_says_so_in_one_line(tmp_path, installed: str, expected: str) -> None:
    """What demoFile.py prints under torch 2.4 (whose models would fail deep inside their constructors), or with
    no torch: the version is read from torch's package metadata, before torch is imported."""
    program = ("import importlib.metadata, importlib.util, runpy, sys\n" + installed
               + "sys.argv = ['demoFile.py', '--list-models']\n"
               f"runpy.run_path({os.path.join(REPO, 'demoFile.py')!r}, run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True,
                            timeout=180, env={**os.environ, "AUDIODEC_MALLOC": "system", "PYTHONPATH": REPO})
    assert result.returncode == 1
    assert result.stderr.splitlines() == [expected]
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize("script, args, expected", [
    ("codecTrain.py", ["-c", "x.yaml", "--tag", "x", "--precision", "fp8"],  # choices quoted or not by Python version
     r"error: argument --precision: invalid choice: 'fp8' \(choose from .*fp32.*\): see codecTrain.py --help"),
    ("codec.py", ["encode", "--model", "demo48k"],
     r"error: the following arguments are required: -i/--input, -o/--output: see codec.py encode --help"),
    ("codec.py", ["encode", "-i", "x.wav", "-o", "x.adc", "--root"],  # (past --list-models' own reading)
     r"error: argument --root: expected one argument: see codec.py encode --help"),
    ("codec.py", ["decode", "--list-models", "--root"],
     r"error: argument --root: expected one argument: see codec.py decode --help"),
    ("demoStream.py", ["--num_threads", "two"],
     r"error: argument --num_threads: invalid int value: 'two': see demoStream.py --help"),
])  # fmt: skip
def test_a_command_line_argparse_refuses_is_one_line(script: str, args: list[str], expected: str) -> None:
    """Not argparse's usage block before its error: the one line our own checks print, exit status 2."""
    result = run(script, *args)
    assert result.returncode == 2 and result.stderr.endswith("\n") and result.stderr.count("\n") == 1, result.stderr
    assert re.fullmatch(expected, result.stderr.strip()), result.stderr


def test_sigterm_stops_a_command_as_ctrl_c_does_leaving_nothing_behind(tmp_path) -> None:
    """A job's time limit (SIGTERM) in the middle of writing an output: exit status 143 and one
    line, no temp file, and the output folders the command made are gone again."""
    body = (
        "import sys, time\n"
        "from utils.cli import run_main\n"
        "from utils.files import atomic_output, make_output_folder\n"
        "def main():\n"
        f"    out = make_output_folder({str(tmp_path / 'new' / 'out')!r}, '--out')\n"
        "    with atomic_output(out / 'x.bin') as tmp:\n"
        "        open(tmp, 'w').write('half')\n"
        "        print('writing', flush=True)\n"
        "        time.sleep(60)\n"
        "run_main(main)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", body], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert process.stdout.readline() == "writing\n"
        assert [path.name.startswith(".tmp-") for path in (tmp_path / "new" / "out").iterdir()] == [True]
        process.terminate()
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 143 and stderr.strip().splitlines()[-1] == "terminated", stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "new").exists()


def test_a_reader_that_goes_away_stops_a_command_quietly() -> None:
    """`demoFile.py --list-models | head -1`: the pipe closes under the writer; no traceback."""
    program = ("import sys\n"
               f"sys.path.insert(0, {REPO!r})\n"
               "from utils.cli import run_main\n"
               "run_main(lambda: [print(line) for line in range(10**6)] and None)\n")
    result = subprocess.run(f"{sys.executable} -c {shlex.quote(program)} | head -1", shell=True, capture_output=True,
                            text=True, timeout=120)
    assert result.stdout == "0\n" and result.stderr == ""


def test_the_downloader_lists_the_models_without_downloading(tmp_path) -> None:
    result = subprocess.run([sys.executable, "-m", "utils.download", "--list-models", "--root", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("vctk_v1") and "not installed: python -m utils.download vctk_v1" in line
               for line in lines)
    assert list(tmp_path.iterdir()) == []
