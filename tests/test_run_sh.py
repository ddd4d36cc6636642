"""./run.sh, the README's main job: codes, decodes and scores the bundled clip, and runs again
over its own outputs (they are its to replace)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_run_sh_runs_twice() -> None:
    out = os.path.join(REPO, "output", "demo48k")
    for _ in range(2):
        result = subprocess.run(["bash", os.path.join(REPO, "run.sh")], capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert os.path.getsize(os.path.join(out, "alsa_speakers.wav")) > 44
    scores = json.load(open(os.path.join(out, "scores.json")))
    assert scores["files"] and "mean" in scores  # the evaluation scored the decoded clip
