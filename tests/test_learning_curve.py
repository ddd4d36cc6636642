"""Learning curves while training (trainer/curve.py) and the training CPU budget: points at the
interval and at the end, their metrics, curve.json / curve.png / TensorBoard, a budget that stops the
run with a checkpoint, and CPU seconds carried across a resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.test_trainer import SAMPLE_RATE, tiny_recipe, train, write_wavs
from trainer.curve import LearningCurve, curve_files, plot_curves
from utils.errors import CodecError
from utils.eval.metrics import METRIC_NAMES


def curve_recipe(root: Path, **overrides):
    config = tiny_recipe(root, learning_curve={"interval_steps": 2, "subset": "curve", "files": 2}, **overrides)
    write_wavs(root / "corpus" / "curve", 3, SAMPLE_RATE, seed=4)  # 1 s each: PESQ and STOI are defined
    return config


def test_curve_points_at_each_interval_with_metrics_usage_and_cpu_time(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    expdir = train(curve_recipe(tmp_path), tmp_path, "curve")
    document = json.loads((expdir / "curve.json").read_text())
    assert [Path(path).name for path in document["files"]] == ["utt0.wav", "utt2.wav"]
    points = document["points"]
    assert [point["steps"] for point in points] == [2, 4]
    assert 0 < points[0]["train_cpu_seconds"] <= points[1]["train_cpu_seconds"]
    for point in points:
        for name in METRIC_NAMES:
            assert point[name] is not None and math.isfinite(point[name]), name
        # (STOI is a mean correlation: an untrained model's can fall just below 0)
        assert 1.0 <= point["pesq_wb"] <= 4.7 and -1 <= point["stoi"] <= 1
        assert 1 <= point["dev_codes_used_0"] <= 16 and 1 <= point["dev_codes_used_1"] <= 16
        assert 0 <= point["codes_in_use_0"] <= 16 and point["code_entropy_bits_0"] >= 0
    assert (expdir / "curve.png").stat().st_size > 1000
    events = EventAccumulator(str(expdir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    assert [event.step for event in events.Scalars("curve/pesq_wb")] == [2, 4]
    # The checkpoints scored again afterwards, with all of their 2 codebooks
    from bin.learning_curve import main as curve_main

    checkpoints = [str(expdir / f"checkpoint-{steps}steps.pkl") for steps in (2, 4)]
    assert curve_main([*checkpoints, "--test", str(tmp_path / "corpus" / "curve"), "--max_files", "1",
                       "--num_threads", "1", "--out", str(tmp_path / "again")]) == 0
    assert [row["steps"] for row in json.loads((tmp_path / "again" / "curve.json").read_text())] == [2, 4]


def test_cpu_budget_stops_with_a_checkpoint_and_resume_keeps_counting(tmp_path: Path) -> None:
    config = curve_recipe(tmp_path)
    path = tmp_path / "budget.yaml"
    path.write_text(yaml.safe_dump(config))
    from trainer.builder import run_training
    from trainer.options import TrainOptions

    options = dict(config=str(path), tag="budget", exp_root=str(tmp_path / "exp"))
    expdir = run_training(TrainOptions(**options, cpu_budget_minutes=1e-9))
    assert [checkpoint.name for checkpoint in expdir.glob("checkpoint-*")] == ["checkpoint-1steps.pkl"]
    assert yaml.safe_load((expdir / "config.yml").read_text())["cpu_budget_minutes"] == 1e-9
    first = torch.load(expdir / "checkpoint-1steps.pkl", map_location="cpu", weights_only=True)["train_seconds"]
    assert first["cpu"] > 0 and first["wall"] > 0
    assert [point["steps"] for point in json.loads((expdir / "curve.json").read_text())["points"]] == [1]
    # Resumed with the budget already spent: nothing more is trained.
    run_training(TrainOptions(**options, resume="auto", cpu_budget_minutes=1e-9))
    assert sorted(checkpoint.name for checkpoint in expdir.glob("checkpoint-*")) == ["checkpoint-1steps.pkl"]
    # Resumed without a budget: trains to the end, and the CPU seconds go on from the first run's.
    run_training(TrainOptions(**options, resume="auto"))
    last = torch.load(expdir / "checkpoint-4steps.pkl", map_location="cpu", weights_only=True)["train_seconds"]
    assert last["cpu"] > first["cpu"]
    points = json.loads((expdir / "curve.json").read_text())["points"]
    assert [point["steps"] for point in points] == [1, 2, 4]
    assert points[0]["train_cpu_seconds"] == pytest.approx(first["cpu"], abs=0.1)


def test_curve_files_are_a_fixed_even_spread(tmp_path: Path) -> None:
    write_wavs(tmp_path / "dev", 9, 100, seed=0)
    names = [path.name for path in curve_files(tmp_path / "dev", 3)]
    assert names == ["utt0.wav", "utt4.wav", "utt8.wav"]
    assert len(curve_files(tmp_path / "dev", 0)) == 9
    with pytest.raises(CodecError, match="is not a folder"):
        curve_files(tmp_path / "missing", 3)


def test_a_delayed_output_is_scored_from_its_delay_on(tmp_path: Path) -> None:
    """A generator whose output lags its input by ``output_delay`` samples is scored as a copy."""
    write_wavs(tmp_path / "dev", 2, SAMPLE_RATE, seed=0)
    delay = 40

    def delayed_copy(audio: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(audio, (delay, 0))[..., : audio.shape[-1]]

    scores = {}
    for name, curve_delay in (("aligned", delay), ("unaligned", 0)):
        curve = LearningCurve({"subset": str(tmp_path / "dev"), "files": 2}, tmp_path, SAMPLE_RATE, 8,
                              tmp_path / name, curve_delay)  # fmt: skip
        scores[name] = curve.score(delayed_copy, torch.nn.Linear(1, 1), {}, 0, 0.0, 0.0)
    assert scores["aligned"]["si_sdr"] > 60 and scores["aligned"]["stoi"] > 0.999
    assert scores["unaligned"]["si_sdr"] < 10


def test_a_mean_over_fewer_files_than_the_subset_records_its_count(tmp_path: Path) -> None:
    """A silent decoding of one file leaves PESQ-WB and SI-SDR undefined there: their means cover the
    other file, and the point says how many files each covers; a metric defined on all has no count."""
    write_wavs(tmp_path / "dev", 2, SAMPLE_RATE, seed=0)
    calls = []

    def first_silent(audio: torch.Tensor) -> torch.Tensor:
        calls.append(None)
        return torch.zeros_like(audio) if len(calls) == 1 else audio

    curve = LearningCurve({"subset": str(tmp_path / "dev"), "files": 2}, tmp_path, SAMPLE_RATE, 8, tmp_path / "x", 0)
    point = curve.score(first_silent, torch.nn.Linear(1, 1), {}, 0, 0.0, 0.0)
    assert point["pesq_wb_scored"] == 1 and point["si_sdr_scored"] == 1
    assert point["si_sdr"] > 60  # the copy alone, not pulled down by the silent file
    assert "log_mel_distance_scored" not in point and math.isfinite(point["log_mel_distance"])


def test_plot_curves_draws_runs_side_by_side(tmp_path: Path) -> None:
    rows = [{"steps": step, "train_cpu_seconds": 60.0 * step, "pesq_wb": 1 + 0.1 * step, "stoi": np.nan}
            for step in range(1, 4)]
    plot_curves({"a": rows, "b": rows[:2]}, tmp_path / "runs.png", x="train_cpu_seconds")
    assert (tmp_path / "runs.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_runs_tables_and_plots_runs_from_their_curves(tmp_path: Path) -> None:
    from bin.compare_runs import main as compare_main

    for name, pesq in (("a", 1.1), ("b", 1.4)):
        folder = tmp_path / name
        folder.mkdir()
        points = [{"steps": 100 * step, "train_cpu_seconds": 60.0 * step, "wall_seconds": 90.0 * step,
                   "pesq_wb": pesq + 0.01 * step, "stoi": 0.6, "estoi": None, "si_sdr": -3.0,
                   "log_mel_distance": 1.0, "dev_codes_used_0": 300, "codes_in_use_0": 500} for step in (1, 2)]
        if name == "b":
            points[-1]["pesq_wb_scored"] = 3  # a silent decoding among the 4 files
        (folder / "curve.json").write_text(json.dumps({"files": ["x.wav"] * 4, "points": points}))
        (folder / "config.yml").write_text(yaml.safe_dump({"threads": 1}))
    assert compare_main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "out")]) == 0
    table = (tmp_path / "out" / "compare.md").read_text()
    assert "| a | 200 | 2.0 | 3.0 | 1 | 1.120 | 0.600 | - | -3.00 | 1.000 | 300 | 500 |" in table
    assert "| b | 200 | 2.0 | 3.0 | 1 | 1.420 (3 of 4 files) | 0.600 |" in table
    assert (tmp_path / "out" / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert [run["name"] for run in json.loads((tmp_path / "out" / "compare.json").read_text())] == ["a", "b"]
    with pytest.raises(CodecError, match="curve.json not found"):
        compare_main([str(tmp_path / "out"), "--out", str(tmp_path / "x")])
    with pytest.raises(CodecError, match=r"--out .*/compare.md/x: cannot create it \(.*compare.md is a file\)"):
        compare_main([str(tmp_path / "a"), "--out", str(tmp_path / "out" / "compare.md" / "x")])
    for broken in ("{bad", "[1, 2]", '{"points": 3, "files": []}'):
        (tmp_path / "b" / "curve.json").write_text(broken)
        with pytest.raises(CodecError, match=r"b/curve.json is not a learning curve the trainer wrote"):
            compare_main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "y")])


def _run_folder(folder: Path, points: list[dict], config: str | None = None) -> Path:
    folder.mkdir()
    (folder / "curve.json").write_text(json.dumps(points if isinstance(points, list) and points and "checkpoint"
                                                  in points[0] else {"files": ["x.wav"], "points": points}))
    if config is not None:
        (folder / "config.yml").write_text(config)
    return folder


def test_compare_runs_refuses_broken_inputs_in_one_line_and_takes_an_empty_config(tmp_path: Path) -> None:
    from bin.compare_runs import main as compare_main

    point = {"steps": 100, "train_cpu_seconds": 60.0, "wall_seconds": 90.0, "pesq_wb": 1.2}
    good = _run_folder(tmp_path / "good", [point], "threads: 2\n")
    empty = _run_folder(tmp_path / "empty", [point], "")
    assert compare_main([str(good), str(empty), "--out", str(tmp_path / "out")]) == 0
    assert "| empty | 100 | 1.0 | 1.5 | - | 1.200 |" in (tmp_path / "out" / "compare.md").read_text()
    cases = [
        (_run_folder(tmp_path / "bad_yaml", [point], "threads: [1,\n"), r"bad_yaml/config.yml is not valid YAML"),
        (_run_folder(tmp_path / "list_yaml", [point], "- 1\n"), r"list_yaml/config.yml holds a list"),
        (_run_folder(tmp_path / "no_cpu", [{"steps": 100, "wall_seconds": 1.0}]),
         r"no_cpu/curve.json: point 0 has no train_cpu_seconds"),
        (_run_folder(tmp_path / "scored", [{"steps": 9500, "checkpoint": "c.pkl", "files": 3, "pesq_wb": 1.2}]),
         r"scored/curve.json is bin/learning_curve.py's table of scored checkpoints"),
    ]
    for folder, message in cases:
        with pytest.raises(CodecError, match=message):
            compare_main([str(good), str(folder), "--out", str(tmp_path / "refused")])
        assert not (tmp_path / "refused").exists()
