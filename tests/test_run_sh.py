"""./run.sh, the README's main job: codes, decodes and scores the bundled clip, and runs again
over its own outputs (they are its to replace). The fast tests run it in a sandbox whose .venv
python is a stand-in that writes what codec.py would and records what bin/evaluate.py is asked."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, old_bash

# Stand-in for .venv/bin/python: codec.py encode/decode write their -o file (encode --model bogus
# fails as an unknown model does; --entropy fails as for a model without a table); evaluate.py's
# arguments go to evaluate.log.
FAKE_PYTHON = r"""#!/usr/bin/env bash
script=$1; shift
out=""; args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in -o | --json) out=${args[i + 1]} ;; esac
done
case "$script $*" in
    *"--model bogus"*) echo "error: unknown model 'bogus'" >&2; exit 1 ;;
    *--entropy*) exit 1 ;;
    "codec.py encode"* | "codec.py decode"*) echo data > "$out" ;;
    "codec.py info"*) echo "info $*" ;;
    bin/evaluate.py*) echo "$*" >> "$(dirname "$0")/evaluate.log"; echo "{}" > "$out" ;;
esac
"""


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    folder = tmp_path / "toolkit"
    (folder / "utils").mkdir(parents=True)
    (folder / ".venv" / "bin").mkdir(parents=True)
    shutil.copy(os.path.join(REPO, "run.sh"), folder / "run.sh")
    (folder / "utils" / "setup_venv.sh").write_text("exit 0\n")
    python = folder / ".venv" / "bin" / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    return folder


def run_sh(sandbox: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(sandbox / "run.sh")], cwd=cwd, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=30)  # fmt: skip


def test_a_relative_input_is_the_callers_and_only_this_runs_pair_is_scored(sandbox: Path, tmp_path: Path) -> None:
    caller = tmp_path / "my.clips"  # a dot in the folder, none in the file name
    caller.mkdir()
    (caller / "speech").write_bytes(b"RIFF")
    (caller / "speech.flac").write_bytes(b"fLaC")
    for clip in ("speech", "speech.flac"):
        result = run_sh(sandbox, caller, INPUT=clip)
        assert result.returncode == 0, result.stderr
    evaluated = (sandbox / ".venv" / "bin" / "evaluate.log").read_text().splitlines()
    out = "output/demo48k"
    assert [line.split()[:2] for line in evaluated] == [[f"{caller}/speech", f"{out}/speech.wav"],
                                                        [f"{caller}/speech.flac", f"{out}/speech.wav"]]
    assert f"--json {out}/scores.json" in evaluated[1]
    assert not (sandbox / "output" / "reference").exists()


def test_a_toolkit_under_a_folder_whose_name_starts_with_a_dash_runs(sandbox: Path, tmp_path: Path) -> None:
    """`bash -- -dash/AudioDec/run.sh`: run.sh finds its own folder (no `dirname: invalid option`)."""
    (tmp_path / "-dash").mkdir()
    toolkit = sandbox.rename(tmp_path / "-dash" / "AudioDec")
    (tmp_path / "-clip.wav").write_bytes(b"RIFF")
    result = subprocess.run(["bash", "--", "-dash/AudioDec/run.sh"], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "INPUT": "-clip.wav"}, timeout=30)  # fmt: skip
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert sorted(os.listdir(toolkit / "output" / "demo48k")) == ["-clip.adc", "-clip.wav", "scores.json"]


def test_an_unknown_model_or_a_missing_input_leaves_nothing(sandbox: Path, tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    result = run_sh(sandbox, tmp_path, INPUT="a.wav", MODEL="bogus")
    assert result.returncode != 0 and "unknown model 'bogus'" in result.stderr
    assert not (sandbox / "output").exists()
    (sandbox / "output" / "demo48k").mkdir(parents=True)
    result = run_sh(sandbox, tmp_path, INPUT="a.wav", MODEL="bogus")
    assert result.returncode != 0 and sorted(os.listdir(sandbox / "output")) == ["demo48k"]
    result = run_sh(sandbox, tmp_path, INPUT="missing.wav")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [f"error: INPUT={tmp_path}/missing.wav is not a file: give an audio file "
                                          "(read from the folder run.sh is called from)"]  # fmt: skip


# Sourced by every bash the test starts (BASH_ENV): run.sh exits with status 0 where it would decode, as
# bash 3.2 (macOS's) exits a script stopped by set -u, with its EXIT trap seeing $? = 0.
STOP_BEFORE_DECODE = """echo() { if [[ $1 == "== decode"* ]]; then exit 0; fi; builtin echo "$@"; }
"""


def test_a_run_that_stops_early_fails_and_leaves_nothing_even_at_status_0(sandbox: Path, tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    (tmp_path / "stop.sh").write_text(STOP_BEFORE_DECODE)
    result = run_sh(sandbox, tmp_path, INPUT="a.wav", BASH_ENV=str(tmp_path / "stop.sh"))
    assert "== encode" in result.stdout and "== decode" not in result.stdout
    assert result.returncode == 1 and not (sandbox / "output").exists()


def test_an_old_bash_runs_it_and_a_failure_there_exits_non_zero(sandbox: Path, tmp_path: Path) -> None:
    """bash before 4.4 (macOS's /bin/bash is 3.2): an empty array is no error, a failure no exit status 0."""
    bash = old_bash()
    if bash is None:
        pytest.skip("no bash before 4.4 here (set AUDIODEC_OLD_BASH to one to run this)")
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    env = {**os.environ, "INPUT": "a.wav", "PATH": f"{os.path.dirname(bash)}:{os.environ['PATH']}"}
    result = subprocess.run([bash, str(sandbox / "run.sh")], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=30)  # fmt: skip
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert sorted(os.listdir(sandbox / "output" / "demo48k")) == ["a.adc", "a.wav", "scores.json"]
    shutil.rmtree(sandbox / "output")
    result = subprocess.run([bash, str(sandbox / "run.sh")], cwd=tmp_path, env={**env, "MODEL": "bogus"},
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert result.returncode != 0 and "unknown model 'bogus'" in result.stderr
    assert not (sandbox / "output").exists()


@pytest.mark.slow
def test_run_sh_runs_twice() -> None:
    out = os.path.join(REPO, "output", "demo48k")
    for _ in range(2):
        result = subprocess.run(["bash", os.path.join(REPO, "run.sh")], capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert os.path.getsize(os.path.join(out, "alsa_speakers.wav")) > 44
    scores = json.load(open(os.path.join(out, "scores.json")))
    assert scores["files"] and "mean" in scores  # the evaluation scored the decoded clip


def test_output_puts_the_outputs_elsewhere_read_from_the_callers_folder(sandbox: Path, tmp_path: Path) -> None:
    """OUTPUT=DIR: a clone of the toolkit that the user may not write in still runs."""
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    result = run_sh(sandbox, tmp_path, INPUT="a.wav", OUTPUT="coded/here")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path / "coded" / "here" / "demo48k")) == ["a.adc", "a.wav", "scores.json"]
    assert not (sandbox / "output").exists()
    result = run_sh(sandbox, tmp_path, INPUT="a.wav", OUTPUT="made/for/it", MODEL="bogus")
    assert result.returncode != 0 and not (tmp_path / "made").exists()  # all it made is gone again


def test_an_input_among_the_outputs_is_refused_and_kept(sandbox: Path, tmp_path: Path) -> None:
    """INPUT=DIR/demo48k/x.wav OUTPUT=DIR: decode -f would replace the input with its own decoding, and
    score it against itself."""
    (tmp_path / "out" / "demo48k").mkdir(parents=True)
    (tmp_path / "out" / "demo48k" / "x.wav").write_bytes(b"RIFF")
    result = run_sh(sandbox, tmp_path, INPUT="out/demo48k/x.wav", OUTPUT="out")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(f"error: INPUT={tmp_path}/out/demo48k/x.wav is one of the files run.sh writes")
    assert (tmp_path / "out" / "demo48k" / "x.wav").read_bytes() == b"RIFF"


def test_an_output_with_dot_dot_is_refused_before_anything_is_made(sandbox: Path, tmp_path: Path) -> None:
    """The clean-up of a failed run walks OUTPUT's folders by name: '..' would leave a folder it made."""
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    result = run_sh(sandbox, tmp_path, INPUT="a.wav", OUTPUT="new/..", MODEL="bogus")
    assert result.returncode == 1 and result.stderr.startswith("error: OUTPUT=") and "'..'" in result.stderr
    assert sorted(os.listdir(tmp_path)) == ["a.wav", "toolkit"]  # (the sandbox)


def test_an_output_folder_that_cannot_be_made_is_one_line_naming_output(sandbox: Path, tmp_path: Path) -> None:
    """A read-only clone (simulated, as root writes anywhere: a file where output/ would be) is named in
    one line with the way out, before the set-up, and nothing in the way is removed."""
    (sandbox / "output").write_text("not a folder")
    (sandbox / "utils" / "setup_venv.sh").write_text("echo set-up ran >&2\n")
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    result = run_sh(sandbox, tmp_path, INPUT="a.wav")
    assert result.returncode == 1 and result.stdout == ""
    assert re.fullmatch(r"error: cannot create output/demo48k \([^)\n]+\): give OUTPUT=a folder you may write in\n",
                        result.stderr), result.stderr
    assert (sandbox / "output").read_text() == "not a folder"


def test_a_read_only_toolkit_is_one_line_naming_output(sandbox: Path, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes in a read-only folder (the test above simulates one)")
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    sandbox.chmod(0o555)
    try:
        result = run_sh(sandbox, tmp_path, INPUT="a.wav")
    finally:
        sandbox.chmod(0o755)
    assert result.returncode == 1 and result.stderr == (
        "error: cannot create output/demo48k (Permission denied): give OUTPUT=a folder you may write in\n")
