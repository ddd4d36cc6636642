"""The shell scripts run under bash 3.2, macOS's /bin/bash, as under bash 5.

Bash before 4.4 stops a `set -u` script on an empty array's "${a[@]}" or ${a[*]} ("unbound variable"),
and bash 3.2 has none of bash 4's additions (associative arrays, ${v,,}, mapfile, ...). CI runs a
newer bash, where neither shows: a lint reads every script of the toolkit for both, naming file:line
and the portable form. Where an old bash is at hand (AUDIODEC_OLD_BASH, or a /bin/bash before 4.4),
the recipes also run under it.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, old_bash

# Folders of the working tree that hold no script of the toolkit: generated, installed or data.
NOT_SOURCE = {".git", ".venv", "output", "exp", "slurmlogs", "stats", "data", "corpus", "corpus24k", "gpu_check",
              "__pycache__"}  # fmt: skip

# A whole-array expansion that an empty array survives before bash 4.4: the guarded ${a[@]+"${a[@]}"}
# (or ${a[*]+"${a[*]}"}), and ${a[*]-} / ${a[*]:-...} (one word: a default is the same word).
GUARDED = re.compile(r'\$\{(\w+)\[([@*])\]\+"?\$\{\1\[\2\]\}"?\}|\$\{\w+\[\*\]:?-')
WHOLE_ARRAY = re.compile(r"\$\{(\w+)\[([@*])\][^}]*\}")

# bash 4 and later only: (pattern, what it is, what bash 3.2 takes instead).
BASH4_ONLY = [
    (r"\b(declare|local|typeset)\s+-\w*A", "an associative array (bash 4.0)", "two indexed arrays or a case"),
    (r"\b(declare|local|typeset)\s+-\w*n", "a name reference (bash 4.3)", "${!name} or printf -v"),
    (r"\b(declare|local|typeset)\s+-\w*[lu]", "case-converting attributes (bash 4.0)", "tr"),
    (r"\b(declare|local|typeset)\s+-\w*g", "declare -g (bash 4.2)", "a plain assignment"),
    (r"\$\{[#!]?\w+(\[[^]]*\])?(\^\^?|,,?)", "case modification ${v,,} / ${v^^} (bash 4.0)", "tr"),
    (r"\b(mapfile|readarray)\b", "mapfile/readarray (bash 4.0)", "a while read loop"),
    (r"&>>", "&>> (bash 4.0)", ">>file 2>&1"),
    (r"(?<![|>])\|&", "|& (bash 4.0)", "2>&1 |"),
    (r";;&|(?<![;&]);&(\s|$)", "case fall-through ;& / ;;& (bash 4.0)", "separate patterns"),
    (r"\$\{\w+\[\s*-\d", "a negative array index (bash 4.3)", "${a[${#a[@]}-1]}"),
    (r"\$\{\w+:[^}:]*:\s*-\d", "a negative substring length (bash 4.2)", "${v:0:${#v}-N}"),
    (r"(\[\[?|\btest)\s+(!\s+)?-v\b", "-v NAME (bash 4.2)", '[ -n "${NAME+set}" ]'),
    (r"\$\{[^{}]*@[QEPAaUuLK]\}", "${v@Q} and the other @ operators (bash 4.4)", "printf %q"),
    (r"\bcoproc\b", "coproc (bash 4.0)", "a named pipe"),
    (r"\bwait\s+-n\b", "wait -n (bash 4.3)", "wait PID"),
    (r"\bglobstar\b", "globstar (bash 4.0)", "find"),
    (r"\bBASHPID\b", "$BASHPID (bash 4.0)", "$$ or sh -c 'echo $PPID'"),
    (r"\bEPOCH(SECONDS|REALTIME)\b", "$EPOCHSECONDS (bash 5.0)", "date +%s"),
    (r"%\(", "printf's %(...)T (bash 4.2)", "date"),
    (r"(?<!\$)\{\w+\}[<>]", "{fd}> redirection (bash 4.1)", "a fixed descriptor"),
]


def shell_scripts() -> list[Path]:
    """Every *.sh of the toolkit, and every file whose first line is a bash or sh shebang (.ci/run)."""
    scripts = []
    for folder, subfolders, files in os.walk(REPO):
        # (hidden folders are caches, .venv and .git, but for .ci)
        subfolders[:] = [name for name in subfolders
                         if name not in NOT_SOURCE and (name == ".ci" or not name.startswith("."))]
        for name in files:
            path = Path(folder, name)
            if not path.is_file():  # a link to nothing
                continue
            if name.endswith(".sh"):
                scripts.append(path)
            elif not name.endswith(".py"):
                with open(path, "rb") as file:
                    first = file.readline(100)
                if re.match(rb"#!.*\b(ba)?sh\b", first):
                    scripts.append(path)
    return sorted(scripts)


def offences(text: str) -> list[tuple[int, str]]:
    """(line number, what to change) for each construct of ``text`` that bash 3.2 under set -u refuses."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue
        code = GUARDED.sub("", line)
        for match in WHOLE_ARRAY.finditer(code):
            name, index = match.groups()
            safe = f'${{{name}[@]+"${{{name}[@]}}"}}' if index == "@" else f"${{{name}[*]-}}"
            found.append((number, f"{match.group(0)} stops bash before 4.4 (macOS's 3.2) under set -u when {name} "
                                  f"is empty: write {safe}"))  # fmt: skip
        for pattern, what, instead in BASH4_ONLY:
            if re.search(pattern, code):
                found.append((number, f"{what} is not in bash 3.2 (macOS's /bin/bash): use {instead}"))
    return found


def test_the_lint_finds_the_scripts() -> None:
    names = {path.relative_to(REPO).as_posix() for path in shell_scripts()}
    assert {"run.sh", "test.sh", "parse_options.sh", "submit_codec.sh", "utils/setup_venv.sh",
            "utils/recipe/launcher.sh", ".ci/run"} <= names  # fmt: skip


def test_every_script_runs_under_bash_3_2() -> None:
    report = [f"{path.relative_to(REPO)}:{number}: {message}"
              for path in shell_scripts() for number, message in offences(path.read_text())]  # fmt: skip
    assert not report, "\n".join(report)


@pytest.mark.parametrize("line", [
    'run "${args[@]}"', 'echo "jobs: ${jobs[*]}"', 'run "${args[@]:1}"', 'declare -A seen', 'local -n ref=$1',
    'echo "${name,,}"', 'echo "${name^^}"', 'mapfile -t lines < f', 'cmd &>> log', 'cmd |& tee log',
    'last=${a[-1]}', '[[ -v name ]]', 'echo "${v@Q}"', 'wait -n', 'exec {fd}>file', 'echo "${v:0:-1}"',
])  # fmt: skip
def test_the_lint_catches_what_bash_3_2_refuses(line: str) -> None:
    assert [number for number, _ in offences(f"set -u\n{line}\n")] == [2]


@pytest.mark.parametrize("line", [
    'run ${args[@]+"${args[@]}"}', 'set -- "${args[@]+"${args[@]}"}"', 'echo "jobs: ${jobs[*]-}"',
    'echo "${#args[@]} ${!args[@]}"', 'echo "${args[0]} ${BASH_REMATCH[2]:-0}"', 'run "$@"',
    '# a comment may say "${args[@]}"', 'declare -r x=1; local -a y=(); declare -p x', 'echo "${v: -1}"',
    'cmd >>log 2>&1 || true', 'printf -v line "%q " a',
])  # fmt: skip
def test_the_lint_passes_what_bash_3_2_runs(line: str) -> None:
    assert offences(f"set -u\n{line}\n") == []


@pytest.fixture
def stub_python(tmp_path: Path) -> dict[str, str]:
    stub = tmp_path / "python"
    stub.write_text('#!/bin/sh\necho "RUN $*"\n')
    stub.chmod(0o755)
    return {"PYTHON": str(stub)}


@pytest.mark.parametrize("recipe", [
    ["submit_autoencoder.sh", "--stage", "012", "--ngpu", "0"],
    ["submit_vocoder.sh", "--stage", "012"],
    ["submit_denoise.sh", "--stage", "012"],
    ["submit_statistic.sh"],
    ["submit_codec.sh", "--start", "0", "--stop", "4"],
    ["submit_codec.sh", "--start", "0", "--stop", "4", "--cmd", "slurm", "--dry-run"],
])  # fmt: skip
def test_the_recipes_run_under_an_old_bash(recipe: list[str], stub_python: dict[str, str], tmp_path: Path) -> None:
    bash = old_bash()
    if bash is None:
        pytest.skip("no bash before 4.4 here (set AUDIODEC_OLD_BASH to one to run this)")
    options = [] if "--cmd" in recipe else ["--dry-run"]
    result = subprocess.run([bash, str(Path(REPO, recipe[0])), *recipe[1:], *options, "--slurm_logdir", str(tmp_path)],
                            cwd=tmp_path, env={**os.environ, **stub_python}, capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "(dry run: not run)" in result.stdout or "would be submitted" in result.stdout
