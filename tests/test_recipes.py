"""The shell recipes: parse_options.sh, and the exact commands each submit_*.sh stage runs.

A stub interpreter (PYTHON) prints its arguments instead of training, so the command lines the
recipes hand to codecTrain.py / codecStatistic.py / codecTest.py are checked without running them.
"""

import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted(ROOT.glob("submit_*.sh"))
STAGE_SCRIPTS = [f"submit_{stage}.sh" for stage in ("codec", "autoencoder", "vocoder", "statistic", "denoise")]


def bash(*args: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", *args], cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=30
    )


# ---- parse_options.sh ------------------------------------------------------------------------


@pytest.fixture
def option_script(tmp_path: Path) -> Path:
    script = tmp_path / "recipe.sh"
    script.write_text(
        "set -euo pipefail\n"
        "stage=0\n"
        "tag_name=autoencoder/symAD_vctk_48000_hop300\n"
        "subset_num=-1\n"
        'empty=""\n'
        f". {ROOT / 'parse_options.sh'}\n"
        'echo "stage=${stage} tag_name=${tag_name} subset_num=${subset_num} empty=${empty} rest=$*"\n'
    )
    return script


def test_defaults_stand_without_options(option_script: Path) -> None:
    result = bash(str(option_script))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "stage=0 tag_name=autoencoder/symAD_vctk_48000_hop300 subset_num=-1 empty= rest="


def test_options_override_in_both_forms(option_script: Path) -> None:
    result = bash(str(option_script), "--stage", "12", "--tag_name=vocoder/x y", "--subset-num", "-5", "--empty", "")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "stage=12 tag_name=vocoder/x y subset_num=-5 empty= rest="


def test_a_value_that_starts_with_dashes_is_taken_when_it_is_no_option(option_script: Path) -> None:
    """`--sbatch_args "--account=x"` style values stay possible; `--name=--value` gives any value."""
    result = bash(str(option_script), "--tag_name", "--account=x --qos=y", "--empty=--stage")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "stage=0 tag_name=--account=x --qos=y subset_num=-1 empty=--stage rest="


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus", "1"], "unknown option --bogus"),
        (["--bogus=1"], "unknown option --bogus"),
        (["--stage"], "option --stage needs a value"),
        (["--x;rm", "1"], "unknown option"),
        # A word that is no option stops the parse, instead of dropping every option after it.
        (["--stage", "2", "data", "--stage", "3"], "unexpected argument 'data'"),
        (["--stage", "0", "-dry-run"], "unexpected argument '-dry-run'"),
        (["--tag_name", "--stage", "0"], "option --tag_name needs a value (the next word, --stage, is an option"),
        (["--tag_name", "--stage=0"], "option --tag_name needs a value"),
        (["--tag_name", "--help"], "option --tag_name needs a value"),
    ],
)
def test_bad_options_fail_with_one_line(option_script: Path, args: list[str], message: str) -> None:
    result = bash(str(option_script), *args)
    assert result.returncode != 0
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


def test_help_lists_the_variables_and_their_values(option_script: Path) -> None:
    result = bash(str(option_script), "--stage", "5", "--help")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert "  --stage 5" in lines and "  --tag_name autoencoder/symAD_vctk_48000_hop300" in lines
    assert '  --empty ""' in lines and "  --subset_num -1" in lines
    assert not any(line.startswith("stage=") for line in lines)  # exits before the script goes on


# ---- submit scripts ----------------------------------------------------------------------------


@pytest.mark.parametrize("script", RECIPES, ids=lambda path: path.name)
def test_recipe_is_valid_bash(script: Path) -> None:
    assert bash("-n", str(script)).returncode == 0
    assert script.stat().st_mode & stat.S_IXUSR
    assert "set -euo pipefail" in script.read_text()


@pytest.mark.parametrize("script", sorted((ROOT / "utils" / "recipe").glob("*.sh")), ids=lambda path: path.name)
def test_sourced_recipe_parts_are_valid_bash(script: Path) -> None:
    assert bash("-n", str(script)).returncode == 0


@pytest.mark.parametrize("script", RECIPES, ids=lambda path: path.name)
def test_a_recipe_under_a_folder_whose_name_starts_with_a_dash_runs(tmp_path: Path, script: Path) -> None:
    """`bash -- -dash/AudioDec/submit_x.sh`: the recipe finds its own folder (no `dirname: invalid option`)."""
    (tmp_path / "-dash").mkdir()
    (tmp_path / "-dash" / "AudioDec").symlink_to(ROOT)
    result = bash("--", f"-dash/AudioDec/{script.name}", "--help", cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert any(line.startswith("Usage: bash submit_") for line in result.stdout.splitlines())


def test_a_config_value_is_read_as_the_stages_read_it(tmp_path: Path) -> None:
    """recipe_config_value (utils/recipe/common.sh): a top-level key's value, its quotes and comment
    taken off; not a longer key nor a nested one; nothing where the key or the file is missing."""
    config = tmp_path / "config.yml"
    config.write_text(
        "analyzer_params:\n"
        "    analyzer: nested/no.pkl\n"
        "analyzer_x: other.pkl\n"
        "analyzer: \"exp/autoencoder/x/checkpoint-200steps.pkl\"   # the encoder\n"
        "initial: 'exp/a b/c.pkl'\n"
        "analyzer: second.pkl\n"
    )
    script = ("source utils/recipe/common.sh; for key in analyzer initial missing; do "
              "printf '%s=[%s]\\n' \"$key\" \"$(recipe_config_value \"$1\" \"$key\")\"; done; "
              "printf 'none=[%s]\\n' \"$(recipe_config_value \"$1.gone\" analyzer)\"")
    result = bash("-c", script, "bash", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "analyzer=[exp/autoencoder/x/checkpoint-200steps.pkl]", "initial=[exp/a b/c.pkl]", "missing=[]", "none=[]"]


def test_every_stage_script_exists() -> None:
    for name in STAGE_SCRIPTS + ["parse_options.sh"]:
        assert (ROOT / name).is_file()


@pytest.fixture
def stub_python(tmp_path: Path) -> dict:
    stub = tmp_path / "python"
    stub.write_text('#!/usr/bin/env bash\necho "RUN $*"\n')
    stub.chmod(0o755)
    return {"PYTHON": str(stub)}


def commands(result: subprocess.CompletedProcess) -> list[str]:
    assert result.returncode == 0, result.stderr
    return [line[len("RUN ") :] for line in result.stdout.splitlines() if line.startswith("RUN ")]


def test_submit_codec_runs_the_five_stages(stub_python: dict) -> None:
    result = bash("submit_codec.sh", "--start", "0", "--stop", "4", env=stub_python)
    autoencoder, vocoder = "autoencoder/symAD_vctk_48000_hop300", "vocoder/AudioDec_v1_symAD_vctk_48000_hop300_clean"
    assert commands(result) == [
        f"codecTrain.py -c config/{autoencoder}.yaml --tag {autoencoder} --exp_root exp --disable_cudnn False "
        "--resume auto --ngpu 1",
        "codecStatistic.py -c config/statistic/symAD_vctk_48000_hop300_clean.yaml --subset train --subset_num -1",
        f"codecTrain.py -c config/{vocoder}.yaml --tag {vocoder} --exp_root exp --disable_cudnn False "
        "--resume auto --ngpu 1",
        f"codecTest.py --subset test --subset_num -1 --encoder exp/{autoencoder}/checkpoint-200000steps.pkl "
        f"--decoder exp/{autoencoder}/checkpoint-700000steps.pkl --output_dir output/{autoencoder}",
        f"codecTest.py --subset test --subset_num -1 --encoder exp/{autoencoder}/checkpoint-200000steps.pkl "
        f"--decoder exp/{vocoder}/checkpoint-500000steps.pkl --output_dir output/{vocoder}",
    ]


def test_submit_codec_stage_range_and_demo_wrapper(stub_python: dict) -> None:
    result = bash("submit_codec_demo.sh", "--start", "3", "--stop", "4", "--subset_num", "2", env=stub_python)
    encoder = "exp/autoencoder/demo_48000_hop300/checkpoint-10steps.pkl"
    assert commands(result) == [
        f"codecTest.py --subset test --subset_num 2 --encoder {encoder} "
        "--decoder exp/autoencoder/demo_48000_hop300/checkpoint-20steps.pkl "
        "--output_dir output/autoencoder/demo_48000_hop300",
        f"codecTest.py --subset test --subset_num 2 --encoder {encoder} "
        "--decoder exp/vocoder/demo_v1_48000_hop300/checkpoint-10steps.pkl "
        "--output_dir output/vocoder/demo_v1_48000_hop300",
    ]


def test_resume_latest_picks_the_highest_step(stub_python: dict, tmp_path: Path) -> None:
    folder = tmp_path / "exp" / "autoencoder" / "demo_48000_hop300"
    folder.mkdir(parents=True)
    for step in (5, 20, 100):
        (folder / f"checkpoint-{step}steps.pkl").touch()
    args = ["--start", "0", "--stop", "0", "--exp_root", str(tmp_path / "exp"), "--seed", "7"]
    result = bash("submit_codec_demo.sh", *args, "--resume", "latest", env=stub_python)
    assert commands(result) == [
        f"codecTrain.py -c config/autoencoder/demo_48000_hop300.yaml --tag autoencoder/demo_48000_hop300 "
        f"--exp_root {tmp_path / 'exp'} --disable_cudnn False --resume {folder / 'checkpoint-100steps.pkl'} --seed 7 "
        "--ngpu 0"
    ]
    result = bash("submit_codec_demo.sh", *args, "--resume", "20", env=stub_python)
    assert commands(result)[0].endswith(f"--resume {folder / 'checkpoint-20steps.pkl'} --seed 7 --ngpu 0")
    result = bash("submit_codec.sh", *args, "--resume", "latest", env=stub_python)
    assert "No checkpoint in" in result.stdout and commands(result)[0].endswith("--resume auto --seed 7 --ngpu 1")


def test_training_options_reach_the_trainer(stub_python: dict) -> None:
    result = bash("submit_autoencoder.sh", "--stage", "0", "--ngpu", "0", "--precision", "bf16", "--compile", "true",
                  "--fast_conv", "true", "--micro_batch", "4", env=stub_python)  # fmt: skip
    assert commands(result)[0].endswith("--ngpu 0 --precision bf16 --compile --fast_conv --micro_batch 4")
    result = bash("submit_autoencoder.sh", "--stage", "0", "--ngpu", "0", "--compile", "all", env=stub_python)
    assert commands(result)[0].endswith("--ngpu 0 --compile all")
    result = bash("submit_autoencoder.sh", "--stage", "0", "--ngpu", "0", env=stub_python)
    assert commands(result)[0].endswith("--ngpu 0")
    bad = bash("submit_autoencoder.sh", "--stage", "0", "--ngpu", "0", "--compile", "yes", env=stub_python)
    assert bad.returncode != 0 and "RUN " not in bad.stdout
    assert bad.stderr.strip().splitlines() == ["submit_autoencoder.sh: --compile takes true, false, generator or all, "
                                               "not 'yes'"]  # fmt: skip
    for cmd in ("local", "slurm"):
        for option in ("--fast_conv", "--dry-run", "--requeue"):
            bad = bash("submit_autoencoder.sh", "--stage", "0", "--ngpu", "0", "--cmd", cmd, option, "yes",
                       env=stub_python)  # fmt: skip
            assert bad.returncode != 0 and "RUN " not in bad.stdout
            lines = bad.stderr.strip().splitlines()
            assert lines == [f"submit_autoencoder.sh: {option} takes true or false, not 'yes'"]


@pytest.mark.parametrize("script, args, message", [
    ("submit_autoencoder.sh", ["--stage", "9"], "--stage takes the stages to run, digits 0 to 2 (e.g. 0, 2 or 02), "
                                                "not '9'"),
    ("submit_vocoder.sh", ["--stage", "0,1"], "--stage takes the stages to run, digits 0 to 2"),
    ("submit_autoencoder.sh", ["--ngpu", "-1"], "--ngpu must be a whole number of 0 or more, not '-1'"),
    ("submit_denoise.sh", ["--ngpu", "two"], "--ngpu must be a whole number of 0 or more, not 'two'"),
    ("submit_vocoder.sh", ["--nnodes", "0"], "--nnodes must be a whole number of 1 or more, not '0'"),
    ("submit_codec.sh", ["--start", "x"], "--start must be a whole number, not 'x'"),
    ("submit_codec.sh", ["--stop", "4.5"], "--stop must be a whole number, not '4.5'"),
    ("submit_codec.sh", ["--encoder_checkpoint", "latest"], "--encoder_checkpoint must be a whole number of 0 or "
                                                            "more, not 'latest'"),
    ("submit_vocoder.sh", ["--decoder_checkpoint", "-5"], "--decoder_checkpoint must be a whole number of 0 or more"),
    ("submit_codec.sh", ["--start", "5"], "--start 5 is past the last stage: the stages are 0 to 4"),
    ("submit_codec.sh", ["--start", "3", "--stop", "1"], "--start 3 is after --stop 1: no stage would run"),
    ("submit_codec.sh", ["--stop", "-3"], "--stop -3 is before the first stage: the stages are 0 to 4"),
    ("submit_autoencoder.sh", ["--stage", "0", "2", "--dry-run"], "unexpected argument '2'"),
    ("submit_autoencoder.sh", ["--stage", "0", "-dry-run", "--ngpu", "0"], "unexpected argument '-dry-run'"),
    ("submit_autoencoder.sh", ["--tag_name", "--ngpu", "0", "--dry-run"], "option --tag_name needs a value"),
    ("submit_autoencoder.sh", ["--seed", "abc"], "--seed must be a whole number from 0 to 4294967295, not 'abc'"),
    ("submit_autoencoder.sh", ["--seed", "4294967296"], "--seed must be a whole number from 0 to 4294967295"),
    ("submit_autoencoder.sh", ["--precision", "fp61"], "--precision takes fp32, bf16 or fp16, not 'fp61'"),
    ("submit_autoencoder.sh", ["--disable_cudnn", "true"], "--disable_cudnn takes True or False (as codecTrain.py "
                                                           "does), not 'true'"),
    ("submit_autoencoder.sh", ["--tag_name", "autoencoder/symAD_vctk_48000_hop30"],
     "--tag_name autoencoder/symAD_vctk_48000_hop30 names no recipe: config/autoencoder/symAD_vctk_48000_hop30.yaml "
     "does not exist"),
    ("submit_denoise.sh", ["--encoder", "denoise/nope"], "--encoder denoise/nope names no recipe"),
    ("submit_statistic.sh", ["--tag_name", "statistic/nope"], "--tag_name statistic/nope names no recipe"),
    ("submit_codec.sh", ["--start", "2", "--vocoder", "vocoder/nope"], "--vocoder vocoder/nope names no recipe"),
])  # fmt: skip
def test_a_wrong_stage_or_count_is_one_line_before_anything_runs(stub_python: dict, script: str, args: list[str],
                                                                 message: str) -> None:
    bad = bash(script, *args, env=stub_python)
    assert bad.returncode != 0 and "RUN " not in bad.stdout
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{script}: {message}"), bad.stderr


def test_gpu_node_and_stage_counts_are_decimal(stub_python: dict) -> None:
    """--ngpu 010 is 10 GPUs for torchrun and codecTrain.py alike (bash had read octal 8), 09 is 9 (an
    arithmetic error that skipped the stage); stage numbers and the seed are decimal too."""
    (train,) = commands(bash("submit_autoencoder.sh", "--ngpu", "010", "--seed", "007", env=stub_python))
    assert "--nproc_per_node 10 codecTrain.py" in train and train.endswith("--seed 7 --ngpu 10")
    result = bash("submit_codec.sh", "--start", "00", "--stop", "01", "--ngpu", "09", "--nnodes", "01",
                  env=stub_python)  # fmt: skip
    train, statistics = commands(result)
    assert "--nproc_per_node 9 codecTrain.py" in train and train.endswith("--ngpu 9")
    assert statistics.startswith("codecStatistic.py")


def test_a_training_stage_run_again_continues_from_its_newest_checkpoint(stub_python: dict) -> None:
    """Without --resume, a training stage passes --resume auto, as the SLURM jobs do: run again over an
    existing experiment, it resumes from the newest checkpoint instead of training over it from step 0."""
    for script, args in (("submit_autoencoder.sh", ["--stage", "0"]), ("submit_codec.sh", ["--start", "2",
                                                                                           "--stop", "2"])):
        (train,) = commands(bash(script, *args, "--ngpu", "0", env=stub_python))
        assert train.endswith("--disable_cudnn False --resume auto --ngpu 0"), train
    (train,) = commands(bash("submit_autoencoder.sh", "--stage", "1", "--resumepoint", "5", env=stub_python))
    assert train.count("--resume ") == 1 and "checkpoint-5steps.pkl" in train


def test_a_local_dry_run_prints_commands_that_paste_back(stub_python: dict, tmp_path: Path) -> None:
    exp = tmp_path / "my exp"
    result = bash("submit_codec.sh", "--start", "3", "--stop", "3", "--exp", str(exp), "--dry-run", env=stub_python)
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("+ ")]
    printed = line[2:].removesuffix("   (dry run: not run)")
    pasted = subprocess.run(["bash", "-c", f"printf '%s\\n' {printed}"], capture_output=True, text=True)
    assert f"{exp}/autoencoder/symAD_vctk_48000_hop300/checkpoint-200000steps.pkl" in pasted.stdout.splitlines()


def test_relative_paths_are_the_callers(stub_python: dict, tmp_path: Path) -> None:
    """--exp myexp (and the other paths given) name the caller's folder, not the toolkit's."""
    result = bash(str(ROOT / "submit_codec.sh"), "--start", "0", "--stop", "0", "--exp", "myexp", "--dry-run",
                  env=stub_python, cwd=tmp_path)  # fmt: skip
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("+ ")]
    assert f"--exp_root {tmp_path}/myexp " in line
    (tmp_path / "my.conf").write_text("cpus=3\n")
    result = bash(str(ROOT / "submit_statistic.sh"), "--cmd", "slurm", "--dry-run", "--slurm_config", "my.conf",
                  "--slurm_logdir", "logs", env=stub_python, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    (line,) = [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("sbatch ")]
    assert "--cpus-per-task 3" in line and f"{tmp_path}/logs/statistic_" in line
    assert list((tmp_path / "logs").glob("*.sh"))


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """The toolkit's files, linked into a folder without .venv."""
    folder = tmp_path / "toolkit"
    folder.mkdir()
    for entry in ROOT.iterdir():
        if entry.name != ".venv":
            (folder / entry.name).symlink_to(entry)
    return folder


def only_bash_path(folder: Path) -> str:
    """A PATH with the commands the recipes use, but no python or python3."""
    folder.mkdir()
    for name in ("bash", "dirname", "basename", "grep", "sed", "tr", "awk", "find", "sort", "tail", "cut", "cat",
                 "mkdir", "env"):  # fmt: skip
        (folder / name).symlink_to(subprocess.run(["which", name], capture_output=True, text=True).stdout.strip())
    return str(folder)


def test_the_recipes_run_the_toolkits_venv(sandbox: Path, tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "PYTHON"}
    path = only_bash_path(tmp_path / "bin")
    result = subprocess.run(["bash", "submit_statistic.sh"], cwd=sandbox, env={**env, "PATH": path},
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert result.returncode == 1 and "RUN" not in result.stdout
    assert result.stderr.splitlines() == ["submit_statistic.sh: no Python: no .venv here and neither python3 nor "
                                          "python on PATH: run ./test.sh (it makes .venv with the pinned "
                                          "requirements) or set PYTHON=/path/to/python"]  # fmt: skip
    (sandbox / ".venv" / "bin").mkdir(parents=True)
    venv_python = sandbox / ".venv" / "bin" / "python"
    venv_python.write_text('#!/usr/bin/env bash\n[ "$1" = -c ] || echo "RUN $*"\n')
    venv_python.chmod(0o755)
    result = subprocess.run(["bash", "submit_statistic.sh"], cwd=sandbox, env={**env, "PATH": path},
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert commands(result) == ["codecStatistic.py -c config/statistic/symAD_vctk_48000_hop300_clean.yaml "
                                "--subset train --subset_num -1"]  # fmt: skip
    assert "+ .venv/bin/python codecStatistic.py" in result.stdout


def test_a_python_without_torch_is_one_line(tmp_path: Path) -> None:
    no_torch = tmp_path / "python"
    no_torch.write_text('#!/usr/bin/env bash\n[ "$1" != -c ] || exit 1\necho "RUN $*"\n')
    no_torch.chmod(0o755)
    result = bash("submit_codec.sh", "--start", "1", "--stop", "1", env={"PYTHON": str(no_torch)})
    assert result.returncode == 1 and "RUN" not in result.stdout
    assert result.stderr.splitlines() == [f"submit_codec.sh: {no_torch} has no torch: run ./test.sh (it makes .venv "
                                          "with the pinned requirements, which the recipes then use) or set "
                                          "PYTHON=/path/to/python of an environment that has them"]  # fmt: skip


def test_checkpoint_steps_are_decimal(stub_python: dict) -> None:
    """09 and 010 are steps 9 and 10 (bash arithmetic read them as octal: an error, and 8)."""
    result = bash("submit_codec.sh", "--start", "3", "--stop", "3", "--encoder_checkpoint", "010",
                  "--decoder_checkpoint", "09", "--dry-run", env=stub_python)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("+ ")]
    assert "/checkpoint-10steps.pkl --decoder " in line and "/checkpoint-19steps.pkl " in line


def test_a_local_dry_run_prints_the_commands_and_runs_none(stub_python: dict) -> None:
    result = bash("submit_codec.sh", "--start", "0", "--stop", "4", "--ngpu", "2", "--dry-run", env=stub_python)
    assert result.returncode == 0, result.stderr
    assert "RUN " not in result.stdout
    printed = [line for line in result.stdout.splitlines() if line.startswith("+ ")]
    assert len(printed) == 5 and all(line.endswith("(dry run: not run)") for line in printed)
    assert "-m trainer.torchrun --standalone --nproc_per_node 2 codecTrain.py" in printed[0]
    assert "codecStatistic.py" in printed[1] and "codecTest.py" in printed[4]


def test_multi_gpu_and_multi_node_launch_torchrun(stub_python: dict) -> None:
    result = bash("submit_codec.sh", "--start", "0", "--stop", "0", "--ngpu", "4", env=stub_python)
    assert commands(result)[0].startswith(
        "-m trainer.torchrun --standalone --nproc_per_node 4 codecTrain.py -c config/autoencoder/"
    )
    env = {**stub_python, "MASTER_ADDR": "node0", "MASTER_PORT": "1234"}
    result = bash("submit_vocoder.sh", "--stage", "0", "--ngpu", "8", "--nnodes", "2", env=env)
    assert commands(result)[0].startswith(
        "-m trainer.torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint node0:1234 "
        "--rdzv_id audiodec codecTrain.py -c config/vocoder/AudioDec_v0_symAD_vctk_48000_hop300_clean.yaml"
    )
    env = {key: value for key, value in os.environ.items() if key != "MASTER_ADDR"}
    result = subprocess.run(
        ["bash", "submit_codec.sh", "--start", "0", "--stop", "0", "--nnodes", "2"],
        cwd=ROOT,
        env={**env, **stub_python},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0 and "needs MASTER_ADDR" in result.stderr


def test_stage_scripts_commands(stub_python: dict) -> None:
    tag = "autoencoder/symAD_vctk_48000_hop300"
    result = bash("submit_autoencoder.sh", "--stage", "012", "--resumepoint", "300", env=stub_python)
    assert commands(result) == [
        f"codecTrain.py -c config/{tag}.yaml --tag {tag} --exp_root exp --disable_cudnn False --resume auto --ngpu 1",
        f"codecTrain.py -c config/{tag}.yaml --tag {tag} --exp_root exp --disable_cudnn False "
        f"--resume exp/{tag}/checkpoint-300steps.pkl --ngpu 1",
        f"codecTest.py --subset test --subset_num -1 --encoder exp/{tag}/checkpoint-200000steps.pkl "
        f"--decoder exp/{tag}/checkpoint-700000steps.pkl --output_dir output/{tag}",
    ]
    vocoder = "vocoder/AudioDec_v0_symAD_vctk_48000_hop300_clean"
    assert commands(bash("submit_vocoder.sh", "--stage", "2", env=stub_python)) == [
        f"codecTest.py --subset test --subset_num -1 --encoder exp/{tag}/checkpoint-200000steps.pkl "
        f"--decoder exp/{vocoder}/checkpoint-500000steps.pkl --output_dir output/{vocoder}"
    ]
    assert commands(bash("submit_statistic.sh", "--tag_name", "statistic/demo_48000_hop300", env=stub_python)) == [
        "codecStatistic.py -c config/statistic/demo_48000_hop300.yaml --subset train --subset_num -1"
    ]
    denoise = "denoise/symAD_vctk_48000_hop300"
    assert commands(bash("submit_denoise.sh", "--stage", "02", env=stub_python)) == [
        f"codecTrain.py -c config/{denoise}.yaml --tag {denoise} --exp_root exp --disable_cudnn False --resume auto "
        "--ngpu 1",
        f"codecTest.py --subset noisy_test --subset_num -1 --encoder exp/{denoise}/checkpoint-200000steps.pkl "
        "--decoder exp/vocoder/AudioDec_v1_symAD_vctk_48000_hop300_clean/checkpoint-500000steps.pkl "
        f"--output_dir output/{denoise}",
    ]


def test_recipe_configs_exist() -> None:
    """Every config a recipe names by default is in config/."""
    for script in RECIPES:
        for word in script.read_text().replace("=", " ").split():
            if word.startswith(("autoencoder/", "vocoder/", "statistic/", "denoise/")) and "{" not in word:
                assert (ROOT / "config" / f"{word.rstrip(',')}.yaml").is_file(), (script.name, word)


def test_the_statistics_and_vocoder_stages_use_the_encoder_of_exp_and_encoder_checkpoint(
    stub_python: dict, tmp_path: Path
) -> None:
    """With --exp or --encoder_checkpoint, stages 1 and 2 read the encoder stage 0 trained and stages 3-4
    test, not the config's analyzer under the toolkit's exp/; by default the commands are the original's."""
    exp = tmp_path / "myexp"
    result = bash("submit_codec.sh", "--start", "1", "--stop", "4", "--exp", str(exp), "--encoder_checkpoint", "300",
                  env=stub_python)  # fmt: skip
    encoder = f"{exp}/autoencoder/symAD_vctk_48000_hop300/checkpoint-300steps.pkl"
    statistics, vocoder, symmetric, with_vocoder = commands(result)
    assert statistics.endswith(f"--subset_num -1 --analyzer {encoder}")
    assert f"--disable_cudnn False --analyzer {encoder} --resume auto" in vocoder
    assert f"--encoder {encoder} " in symmetric and f"--encoder {encoder} " in with_vocoder
    assert f"Stage 2: vocoder training (config/vocoder/AudioDec_v1_symAD_vctk_48000_hop300_clean.yaml) on the codes " \
           f"of the encoder {encoder}" in result.stdout
    statistics, vocoder = commands(bash("submit_codecUniv_vctk.sh", "--start", "1", "--stop", "2", env=stub_python))
    assert "--analyzer" not in statistics + vocoder  # the config's analyzer is the recipe's encoder
    statistics, vocoder = commands(bash("submit_codecUniv_vctk.sh", "--start", "1", "--stop", "2", "--exp", str(exp),
                                        env=stub_python))  # fmt: skip
    assert statistics.endswith(f"--analyzer {exp}/autoencoder/symADuniv_vctk_48000_hop300/checkpoint-500000steps.pkl")


def test_a_denoisers_initial_and_a_vocoders_analyzer_are_read_under_exp(stub_python: dict, tmp_path: Path) -> None:
    exp = tmp_path / "myexp"
    (denoise,) = commands(bash("submit_denoise.sh", "--stage", "0", "--exp", str(exp), env=stub_python))
    assert f"--initial {exp}/autoencoder/symAD_vctk_48000_hop300/checkpoint-200000steps.pkl --resume auto" in denoise
    (vocoder,) = commands(bash("submit_vocoder.sh", "--stage", "0", "--exp", str(exp), env=stub_python))
    assert f"--analyzer {exp}/autoencoder/symAD_vctk_48000_hop300/checkpoint-200000steps.pkl --resume auto" in vocoder
    for script in ("submit_denoise.sh", "submit_vocoder.sh"):  # the toolkit's exp/: the original's command
        (line,) = commands(bash(script, "--stage", "0", env=stub_python))
        assert "--initial" not in line and "--analyzer" not in line


def test_a_vocoder_is_not_tested_with_another_encoder_than_it_learnt_from(stub_python: dict, tmp_path: Path) -> None:
    """The v3 vocoder learnt from the symADuniv encoder: tested with the default symAD one, stage 2 stops."""
    v3 = "vocoder/AudioDec_v3_symADuniv_vctk_48000_hop300_clean"
    result = bash("submit_vocoder.sh", "--stage", "2", "--tag_name", v3, env=stub_python)
    assert result.returncode == 1 and "RUN " not in result.stdout
    assert result.stderr.strip() == (
        f"submit_vocoder.sh: the vocoder {v3} learnt from the codes of exp/autoencoder/symADuniv_vctk_48000_hop300/"
        "checkpoint-500000steps.pkl but stage 2 would code with exp/autoencoder/symAD_vctk_48000_hop300/"
        "checkpoint-200000steps.pkl: give the --autoencoder and --encoder_checkpoint of its analyzer (--autoencoder "
        "autoencoder/symADuniv_vctk_48000_hop300 --encoder_checkpoint 500000)")
    matching = ["--autoencoder", "autoencoder/symADuniv_vctk_48000_hop300", "--encoder_checkpoint", "500000"]
    result = bash("submit_vocoder.sh", "--stage", "2", "--tag_name", v3, *matching, env=stub_python)
    encoder = "exp/autoencoder/symADuniv_vctk_48000_hop300/checkpoint-500000steps.pkl"
    assert commands(result)[0].startswith(f"codecTest.py --subset test --subset_num -1 --encoder {encoder} ")
    assert f"Testing with the encoder {encoder}" in result.stdout
    # A trained vocoder: the analyzer its experiment recorded (here given with --analyzer at step 300).
    record = tmp_path / "exp" / v3 / "config.yml"
    record.parent.mkdir(parents=True)
    trained_on = tmp_path / "exp" / "autoencoder" / "symADuniv_vctk_48000_hop300" / "checkpoint-300steps.pkl"
    record.write_text(f"analyzer: {trained_on}\n")
    args = ["--stage", "2", "--tag_name", v3, "--exp", str(tmp_path / "exp"), *matching[:2]]
    assert "--encoder_checkpoint 300)" in bash("submit_vocoder.sh", *args, env=stub_python).stderr
    assert commands(bash("submit_vocoder.sh", *args, "--encoder_checkpoint", "300", env=stub_python))


def test_the_cpu_demo_examples_of_the_recipe_headers_train_on_the_cpu(stub_python: dict) -> None:
    """An example line a header labels as the CPU demo passes --ngpu 0 (without it the job asks for a GPU)."""
    for script in RECIPES:
        header = script.read_text().split("\nset -euo pipefail")[0].replace("\\\n#      ", "")
        for line in header.splitlines():
            if "CPU demo" not in line or not line.startswith("#   bash "):
                continue
            words = line.removeprefix("#   bash ").split("#")[0].split()
            result = bash(*words, env=stub_python)
            trained = [command for command in commands(result) if command.startswith("codecTrain.py")]
            assert trained and all(command.endswith("--ngpu 0") for command in trained), (script.name, line)


def test_a_local_recipe_told_to_stop_passes_it_on_to_its_stage_and_stops(tmp_path: Path) -> None:
    """SIGTERM to a --cmd local recipe (`timeout`, a scheduler without SLURM): the stage's trainer is told
    too (it saves and exits), the recipe waits for it, then stops with 143 instead of running the next
    stage; it used to end alone and leave its trainer training."""
    import signal
    import time

    log, started = tmp_path / "log", tmp_path / "started"
    stub = tmp_path / "python"
    stub.write_text(f'#!/usr/bin/env bash\n[ "$1" = codecTrain.py ] || exit 0  # (the recipe asks it for torch first)\n'
                    f'echo "RUN $*" >> {log}\ntrap \'echo "saved" >> {log}; exit 0\' TERM\n'
                    f"touch {started}\nsleep 30 &\nwait $!\n")  # fmt: skip
    stub.chmod(0o755)
    recipe = subprocess.Popen(["bash", "submit_codec.sh", "--start", "0", "--stop", "4"], cwd=ROOT,
                              env={**os.environ, "PYTHON": str(stub)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 20
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert started.exists()
    recipe.send_signal(signal.SIGTERM)
    _, stderr = recipe.communicate(timeout=20)
    assert recipe.returncode == 143
    assert "stage 0 was told to stop: the signal was passed on to its processes" in stderr
    lines = log.read_text().splitlines()
    assert lines[0].startswith("RUN codecTrain.py") and lines[1:] == ["saved"]  # no stage after it ran
    with pytest.raises(ProcessLookupError):  # nothing of the stage is left running
        os.killpg(recipe.pid, 0)
