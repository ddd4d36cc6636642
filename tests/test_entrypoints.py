"""codecTrain.py / codecStatistic.py / codecTest.py from the command line: outputs and one-line errors."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from tests.test_trainer import save_recipe, tiny_recipe
from utils.runtime.cpu_process import fast_malloc_library

REPO = Path(__file__).resolve().parent.parent


def run_script(script: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / script), *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env
    )


def assert_one_line_error(result: subprocess.CompletedProcess, expected: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and expected in lines[0], result.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 2-step autoencoder trained through codecTrain.py; returns (root, experiment folder)."""
    root = tmp_path_factory.mktemp("cli")
    config = tiny_recipe(root, train_max_steps=2, save_interval_steps=2, eval_interval_steps=2)
    config.pop("adv_train_max_steps")
    recipe = save_recipe(config, root / "autoencoder.yaml")
    result = run_script("codecTrain.py", "-c", recipe, "--tag", "autoencoder/cli", "--seed", "3", cwd=root,
                        env={k: v for k, v in os.environ.items() if k != "AUDIODEC_MALLOC"})  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (root / "train.log").write_text(result.stderr)
    return root, root / "exp" / "autoencoder" / "cli"


def test_train_writes_config_and_checkpoint(trained: tuple[Path, Path]) -> None:
    _, expdir = trained
    assert (expdir / "checkpoint-2steps.pkl").is_file()
    config = yaml.safe_load((expdir / "config.yml").read_text())
    assert config["seed"] == 3 and config["exp_root"] == "exp" and config["disable_cudnn"] == "False"


@pytest.mark.skipif(fast_malloc_library("auto") is None, reason="no tcmalloc/jemalloc installed (utils/system_deps.sh)")
def test_training_runs_with_the_fast_allocator_and_learns_the_same_weights_as_with_glibcs(
    trained: tuple[Path, Path],
) -> None:
    """codecTrain.py preloads tcmalloc/jemalloc as the coding CLIs do (a faster CPU step); the arithmetic is the
    same, so the same seed gives the same weights, bit for bit, as under AUDIODEC_MALLOC=system."""
    root, expdir = trained
    assert re.search(r"malloc (tcmalloc|jemalloc)", (root / "train.log").read_text())
    result = run_script("codecTrain.py", "-c", str(root / "autoencoder.yaml"), "--tag", "autoencoder/cli_glibc",
                        "--seed", "3", cwd=root, env=dict(os.environ, AUDIODEC_MALLOC="system"))  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "malloc glibc" in result.stderr
    fast = torch.load(expdir / "checkpoint-2steps.pkl", map_location="cpu", weights_only=True)["model"]["generator"]
    system = torch.load(root / "exp" / "autoencoder" / "cli_glibc" / "checkpoint-2steps.pkl", map_location="cpu",
                        weights_only=True)["model"]["generator"]  # fmt: skip
    assert fast.keys() == system.keys()
    for name, tensor in fast.items():
        assert torch.equal(tensor, system[name]), name


def test_statistic_writes_mean_and_scale(trained: tuple[Path, Path]) -> None:
    root, expdir = trained
    analyzer = str(expdir / "checkpoint-2steps.pkl")
    config = {"sampling_rate": 8000, "data": tiny_recipe(root)["data"], "analyzer": analyzer,
              "stats": str(root / "stats" / "cli.npy")}
    result = run_script("codecStatistic.py", "-c", save_recipe(config, root / "statistic.yaml"), "--subset", "train",
                        "--subset_num", "2", cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    stats = np.load(root / "stats" / "cli.npy")
    assert stats.shape == (2, 8) and stats.dtype == np.float32 and (stats[1] > 0).all()


def test_statistic_output_in_the_way_stops_before_the_pass_and_npy_is_added_as_numpy_does(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    root, expdir = trained
    config = {"sampling_rate": 8000, "data": tiny_recipe(root)["data"],
              "analyzer": str(expdir / "checkpoint-2steps.pkl"), "stats": str(tmp_path / "file" / "s.npy")}
    (tmp_path / "file").write_text("not a folder")
    result = run_script("codecStatistic.py", "-c", save_recipe(config, tmp_path / "blocked.yaml"), "--subset",
                        "train", cwd=tmp_path)  # fmt: skip
    assert_one_line_error(result, f"the config's stats {tmp_path / 'file' / 's.npy'}: cannot create")
    assert "Finished the statistics" not in result.stderr  # refused before the pass over the data
    config["stats"] = str(tmp_path / "stats" / "named")  # the original's np.save writes named.npy
    result = run_script("codecStatistic.py", "-c", save_recipe(config, tmp_path / "named.yaml"), "--subset", "train",
                        "--subset_num", "1", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(path.name for path in (tmp_path / "stats").iterdir()) == ["named.npy"]
    assert np.load(tmp_path / "stats" / "named.npy").shape == (2, 8)


def test_a_statistic_config_without_data_is_one_line_and_analyzer_overrides_the_configs(tmp_path: Path) -> None:
    config = {"sampling_rate": 8000, "analyzer": str(tmp_path / "nope.pkl"), "stats": str(tmp_path / "s" / "x.npy")}
    result = run_script("codecStatistic.py", "-c", save_recipe(config, tmp_path / "no_data.yaml"), cwd=tmp_path)
    assert_one_line_error(result, "no_data.yaml: data needs a path and a subset mapping: add data: {path: ")
    assert not (tmp_path / "s").exists()
    config["data"] = tiny_recipe(tmp_path)["data"]
    result = run_script("codecStatistic.py", "-c", save_recipe(config, tmp_path / "stat.yaml"), "--analyzer",
                        str(tmp_path / "given.pkl"), cwd=tmp_path)  # fmt: skip
    assert_one_line_error(result, f"analyzer checkpoint '{tmp_path / 'given.pkl'}' not found")


def test_codec_test_writes_one_output_per_input(trained: tuple[Path, Path]) -> None:
    root, expdir = trained
    checkpoint = str(expdir / "checkpoint-2steps.pkl")
    result = run_script("codecTest.py", "--subset", "test", "--encoder", checkpoint, "--decoder", checkpoint,
                        "--output_dir", str(root / "output"), cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    outdir = root / "output" / "cli-cli_2-2" / "test"
    inputs = sorted((root / "corpus" / "test").glob("*.wav"))
    for path in inputs:
        output = outdir / f"{path.stem}_output.wav"
        assert sf.info(output).frames == sf.info(path).frames
        assert sf.info(output).subtype == "PCM_16"
    assert len(list(outdir.glob("*.wav"))) == len(inputs)


def _test_subset_with(root: Path, expdir: Path, tmp_path: Path, name: str, audio: np.ndarray | bytes,
                      rate: int = 8000) -> str:
    """A copy of the trained experiment whose config's test subset is the corpus's plus ``name``; its checkpoint."""
    shutil.copytree(root / "corpus" / "test", tmp_path / "corpus" / "test")
    if isinstance(audio, bytes):
        (tmp_path / "corpus" / "test" / name).write_bytes(audio)
    else:
        sf.write(tmp_path / "corpus" / "test" / name, audio, rate)
    shutil.copytree(expdir, tmp_path / "exp", ignore=shutil.ignore_patterns("tensorboard"))
    config = yaml.safe_load((tmp_path / "exp" / "config.yml").read_text())
    config["data"]["path"] = str(tmp_path / "corpus")
    (tmp_path / "exp" / "config.yml").write_text(yaml.safe_dump(config))
    return str(tmp_path / "exp" / "checkpoint-2steps.pkl")


@pytest.mark.parametrize(
    ("name", "audio", "rate", "expected"),
    [
        ("zz_broken.wav", b"RIFF\x10\x00\x00\x00WAVE not audio", 8000, "cannot read"),
        ("zz_fast.wav", np.zeros(800, dtype=np.float32), 16000, "is sampled at 16000 Hz"),
        ("zz_empty.wav", np.zeros(0, dtype=np.float32), 8000, "holds no samples"),
    ],
    ids=["unreadable", "another_rate", "empty"],
)
def test_codec_test_names_a_file_it_cannot_code_before_writing_any_output(
    trained: tuple[Path, Path], tmp_path: Path, name: str, audio: np.ndarray | bytes, rate: int, expected: str
) -> None:
    """The file sorts last, so a run that read files as it went would have written the others' outputs first."""
    root, expdir = trained
    checkpoint = _test_subset_with(root, expdir, tmp_path, name, audio, rate)
    result = run_script("codecTest.py", "--subset", "test", "--encoder", checkpoint, "--decoder", checkpoint,
                        "--output_dir", str(tmp_path / "output"), cwd=tmp_path)  # fmt: skip
    assert_one_line_error(result, name)
    assert expected in result.stderr
    assert not (tmp_path / "output").exists()


def test_codec_test_output_dir_in_the_way_is_one_error_line(trained: tuple[Path, Path], tmp_path: Path) -> None:
    _, expdir = trained
    checkpoint = str(expdir / "checkpoint-2steps.pkl")
    (tmp_path / "file").write_text("not a folder")
    result = run_script("codecTest.py", "--subset", "test", "--encoder", checkpoint, "--decoder", checkpoint,
                        "--output_dir", str(tmp_path / "file"), cwd=tmp_path)  # fmt: skip
    assert_one_line_error(result, f"--output_dir {tmp_path / 'file'}: cannot create")
    assert f"({tmp_path / 'file'} is a file)" in result.stderr


def test_errors_are_one_line(trained: tuple[Path, Path], tmp_path: Path) -> None:
    root, expdir = trained
    assert_one_line_error(run_script("codecTrain.py", "-c", "missing.yaml", "--tag", "x", cwd=tmp_path), "not found")
    statistic = str(REPO / "config" / "statistic" / "demo_48000_hop300.yaml")  # another kind of config
    assert_one_line_error(run_script("codecTrain.py", "-c", statistic, "--tag", "x", cwd=tmp_path),
                          "is not a training recipe (no model_type, generator_params")
    assert not (tmp_path / "exp").exists()
    config = tiny_recipe(root)
    config["data"]["path"] = str(tmp_path / "nowhere")
    recipe = save_recipe(config, tmp_path / "nodata.yaml")
    assert_one_line_error(run_script("codecTrain.py", "-c", recipe, "--tag", "x", cwd=tmp_path), "does not exist")
    recipe = save_recipe(tiny_recipe(root), tmp_path / "ok.yaml")
    assert_one_line_error(
        run_script("codecTrain.py", "-c", recipe, "--tag", "x", "--resume", "nope.pkl", cwd=tmp_path),
        "no such checkpoint",
    )
    checkpoint = str(expdir / "checkpoint-2steps.pkl")
    assert_one_line_error(
        run_script("codecTest.py", "--subset", "nosuch", "--encoder", checkpoint, "--decoder", checkpoint,
                   "--output_dir", str(tmp_path), cwd=tmp_path),
        "nosuch",
    )
    for script, more in (("codecTest.py", ("--encoder", checkpoint, "--decoder", checkpoint, "--output_dir", "o")),
                         ("codecStatistic.py", ("-c", recipe))):
        for count in ("0", "-5"):  # (0 and -5 had read every file)
            assert_one_line_error(run_script(script, "--subset_num", count, *more, cwd=tmp_path),
                                  f"argument --subset_num: {count} files: give 1 or more, or -1 for all")


def test_a_damaged_file_met_in_training_is_one_line_and_leaves_no_folder(trained: tuple[Path, Path],
                                                                          tmp_path: Path) -> None:
    root, _ = trained
    config = tiny_recipe(root, num_workers=1)
    shutil.copytree(root / "corpus", tmp_path / "corpus")
    config["data"]["path"] = str(tmp_path / "corpus")
    damaged = tmp_path / "corpus" / "train" / "damaged.flac"
    sf.write(damaged, 0.3 * np.sin(np.arange(8000) / 3), 8000)
    data = bytearray(damaged.read_bytes())
    for index in range(len(data) // 4, len(data)):  # the header is fine, the frames are not
        data[index] = (data[index] * 7 + 3) & 255
    damaged.write_bytes(bytes(data))
    config["data"]["subset"]["train"] = str(tmp_path / "list.txt")
    (tmp_path / "list.txt").write_text(f"{damaged}\n")
    result = run_script("codecTrain.py", "-c", save_recipe(config, tmp_path / "damaged.yaml"), "--tag", "damaged",
                        cwd=tmp_path)
    assert_one_line_error(result, f"cannot read {damaged} as audio (")
    assert "repair it or remove it from the data" in result.stderr
    assert not (tmp_path / "exp" / "damaged").exists()


def test_commands_do_not_import_the_compiler_stack() -> None:
    # torch._dynamo takes seconds to import: only compiled training needs it (layers.vq.keep_statistics_eager).
    modules = ["codec", "demoFile", "demoStream", "codecTrain", "codecTest", "codecStatistic", "trainer.builder"]
    probe = (f"import sys; [__import__(m) for m in {modules!r}]; "
             "print(sorted(m for m in sys.modules if m.startswith('torch._dynamo')))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("script, args, expected", [
    ("codec.py", ["--help"], None),
    ("codec.py", ["info", "{adc}"], None),
    ("codec.py", ["encode", "--model", "vctk_v1", "-i", "{missing}", "-o", "out.adc"], "does not exist"),
    ("codec.py", ["decode", "-i", "{adc}", "-o", "{adc}.txt"], ".txt"),
    ("demoFile.py", ["--model", "vctk_v1", "-i", "{missing}", "-o", "out.wav"], "does not exist"),
    ("demoStream.py", ["--model", "vctk_v1", "--receive", "0"], "give a port in 1..65535"),
    ("demoFile.py", ["-i", "{wav}", "-o", "out.wav", "--root", "{tmp}"], "the default, model 'libritts_v1' is not"),
    ("codec.py", ["encode", "--encoder", "{wav}", "--decoder", "{wav}", "-i", "{wav}", "-o", "out.adc"],
     "no config.yml beside"),
    ("codecTrain.py", ["--help"], None),
    ("codecTrain.py", ["-c", "missing.yaml", "--tag", "x"], "config missing.yaml not found"),
    ("codecTrain.py", ["-c", "missing.yaml", "--tag", "../x"], "--tag '../x': give a folder name under --exp_root"),
    ("codecTest.py", ["--encoder", "{wav}", "--decoder", "{wav}", "--output_dir", "o"], "no config.yml beside"),
    ("codecStatistic.py", ["-c", "missing.yaml"], "config missing.yaml not found"),
], ids=["help", "info", "encode-missing-input", "decode-to-text", "demoFile-missing-input", "demoStream-bad-port",
        "model-not-installed", "checkpoint-without-config", "codecTrain-help", "codecTrain-missing-config",
        "codecTrain-bad-tag", "codecTest-checkpoint-without-config", "codecStatistic-missing-config"])
def test_help_info_and_errors_before_the_work_answer_without_torch(tmp_path: Path, script: str, args: list[str],
                                                                   expected: str | None) -> None:
    """torch takes seconds to import (the trainer's modules more): a command imports it only once its arguments
    and files are checked."""
    from utils.bitstream.adc import StreamHeader, encode_adc

    header = StreamHeader(sample_rate=48000, hop=300, channels=1, n_samples=3000, n_codebooks=8, codebook_size=1024,
                          model_name="nowhere_model")  # fmt: skip
    (tmp_path / "x.adc").write_bytes(encode_adc(header, np.zeros((1, 8, 10), dtype=np.int64)))
    sf.write(tmp_path / "x.wav", np.zeros(4800, dtype=np.float32), 48000)
    given = [arg.format(adc=tmp_path / "x.adc", missing=tmp_path / "missing.wav", wav=tmp_path / "x.wav", tmp=tmp_path)
             for arg in args]
    result = run_script(script, *given, cwd=tmp_path, env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
    profile = [line for line in result.stderr.splitlines() if line.startswith("import time")]
    imported = {line.rsplit("|", 1)[-1].strip() for line in profile}
    assert "numpy" in imported  # (the profile is there to read)
    assert "torch" not in imported
    report = [line for line in result.stderr.splitlines() if not line.startswith("import time")]
    if expected is None:
        assert result.returncode == 0, report
        assert "10 frames" in result.stdout or "usage" in result.stdout
    else:
        assert result.returncode != 0 and len(report) == 1 and expected in report[0], report


def test_a_failed_command_leaves_no_empty_output_folder(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """codecStatistic.py makes the stats folder before its pass over the data; when the pass fails
    (here: the analyzer checkpoint is missing), the folders it made go again."""
    root, _ = trained
    config = {"sampling_rate": 8000, "data": tiny_recipe(root)["data"], "analyzer": str(tmp_path / "missing.pkl"),
              "stats": str(tmp_path / "new" / "stats" / "s.npy")}
    result = run_script("codecStatistic.py", "-c", save_recipe(config, tmp_path / "missing.yaml"), "--subset",
                        "train", cwd=tmp_path)  # fmt: skip
    assert_one_line_error(result, "missing.pkl")
    assert not (tmp_path / "new").exists()


def test_codec_test_mirrors_subfolders_and_scores_each_output_against_its_own_reference(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    """Two files named u.wav in two folders get two outputs, each scored against the clean file of its own
    relative path; a noisy file without a clean one is named as not scored."""
    from utils.eval.probe import speech_like_signal

    _, expdir = trained
    corpus = tmp_path / "corpus"
    for index, locale in enumerate(("de", "fr")):
        speech = speech_like_signal(1.0, 8000, seed=index)
        for subset in ("clean", "noisy"):
            (corpus / subset / locale).mkdir(parents=True)
            sf.write(corpus / subset / locale / "u.wav", speech, 8000)
    sf.write(corpus / "noisy" / "extra.wav", speech_like_signal(1.0, 8000, seed=5), 8000)
    shutil.copytree(expdir, tmp_path / "exp", ignore=shutil.ignore_patterns("tensorboard"))
    config = yaml.safe_load((tmp_path / "exp" / "config.yml").read_text())
    config["data"] = {"path": str(corpus), "subset": {"noisy_test": "noisy", "clean_test": "clean"}}
    (tmp_path / "exp" / "config.yml").write_text(yaml.safe_dump(config))
    checkpoint = str(tmp_path / "exp" / "checkpoint-2steps.pkl")
    result = run_script("codecTest.py", "--subset", "noisy_test", "--encoder", checkpoint, "--decoder", checkpoint,
                        "--output_dir", str(tmp_path / "out"), "--specific_folder", "True", "--metrics",
                        cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    outputs = sorted(path.relative_to(tmp_path / "out").as_posix() for path in (tmp_path / "out").rglob("*.wav"))
    assert outputs == ["de/u_output.wav", "extra_output.wav", "fr/u_output.wav"]
    assert "1 of 3 outputs have no reference file of the same relative name and are not scored: extra" in result.stderr
    rows = list(csv.DictReader(open(tmp_path / "out" / "metrics.csv")))
    assert [row["file"] for row in rows] == ["de/u", "fr/u", "mean", "scored"]
    assert rows[-1]["log_mel_distance"] == "2"
    assert "mean over 2 files of" in result.stdout
