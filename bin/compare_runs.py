"""Training runs side by side, from the learning curves they wrote while training (trainer/curve.py).

    python bin/compare_runs.py exp/ablation/a_recipe exp/ablation/b_kmeans exp/ablation/c_waveform \\
        exp/ablation/d_lightdisc --out exp/autoencoder/demo48k/ablation

Each run folder holds ``curve.json`` and ``config.yml``. Writes to ``--out``: ``compare.md`` (one row
per run: its last point's steps, training CPU and wall minutes, threads and scores, each with the
count of files it covers where a metric was undefined on some), ``compare.json``
and ``compare.png`` (each metric against training CPU minutes, one line per run).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402

import yaml  # noqa: E402

from trainer.curve import plot_curves, points_from_json, points_to_json  # noqa: E402
from utils.cli import run_main  # noqa: E402
from utils.errors import ArgumentParser, CodecError  # noqa: E402
from utils.files import make_output_folder, write_text_atomic  # noqa: E402

COLUMNS = {  # key in a curve point -> column title, format
    "pesq_wb": ("PESQ-WB", "{:.3f}"),
    "stoi": ("STOI", "{:.3f}"),
    "estoi": ("ESTOI", "{:.3f}"),
    "si_sdr": ("SI-SDR", "{:.2f}"),
    "log_mel_distance": ("LogMel", "{:.3f}"),
    "dev_codes_used_0": ("codes used (cb 1, dev)", "{:.0f}"),
    "codes_in_use_0": ("codes in use (cb 1, EMA)", "{:.0f}"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="experiment folders with curve.json (and config.yml)")
    parser.add_argument("--out", required=True, help="folder for compare.md, compare.json and compare.png")
    return parser.parse_args(argv)


POINT_KEYS = ("steps", "train_cpu_seconds", "wall_seconds")  # what every row of the table needs


def read_run(folder: Path) -> dict:
    """A run's curve points (NaN for null) and the settings that matter for a comparison."""
    curve = folder / "curve.json"
    if not curve.is_file():
        raise CodecError(f"{curve} not found: train with a learning_curve section in the config")
    try:
        document = json.loads(curve.read_text())
    except ValueError as error:  # cut short, or not JSON
        raise CodecError(f"{curve} is not a learning curve the trainer wrote (ValueError: {error}): "
                         "give the run's folder") from None
    if isinstance(document, list) and all(isinstance(row, dict) and "checkpoint" in row for row in document):
        raise CodecError(f"{curve} is bin/learning_curve.py's table of scored checkpoints, which has no training "
                         "CPU time to compare runs at: give the folder of a run trained with a learning_curve "
                         "section in its config (its curve.json is written while it trains)")
    try:
        points = points_from_json(document["points"])
        files = len(document["files"])
    except (KeyError, TypeError, AttributeError) as error:  # not a curve
        raise CodecError(f"{curve} is not a learning curve the trainer wrote ({type(error).__name__}: {error}): "
                         "give the run's folder") from None
    if not points:
        raise CodecError(f"{curve} has no points yet")
    for index, point in enumerate(points):
        missing = [key for key in POINT_KEYS if not isinstance(point.get(key), (int, float))]
        if missing:
            raise CodecError(f"{curve}: point {index} has no {', '.join(missing)}: not a learning curve the trainer "
                             "wrote; give the run's folder")
    config_path = folder / "config.yml"
    try:
        config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or type(error).__name__
        problem += f" at line {mark.line + 1}" if mark is not None else ""
        raise CodecError(f"{config_path} is not valid YAML ({problem}): fix it, or remove it to compare the run "
                         "without its settings") from None
    if config is None:  # no config.yml, or an empty one: the run's settings are unknown
        config = {}
    if not isinstance(config, dict):
        raise CodecError(f"{config_path} holds a {type(config).__name__}, not a training config: fix it, or remove "
                         "it to compare the run without its settings")
    return {"name": folder.name, "points": points, "files": files,
            "threads": config.get("threads"), "cpu_budget_minutes": config.get("cpu_budget_minutes")}


def format_table(runs: list[dict]) -> str:
    header = ["run", "steps", "CPU min", "wall min", "threads", *(title for title, _ in COLUMNS.values())]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for run in runs:
        last = run["points"][-1]
        cells = [run["name"], str(last["steps"]), f"{last['train_cpu_seconds'] / 60:.1f}",
                 f"{last['wall_seconds'] / 60:.1f}", str(run["threads"] or "-")]
        for key, (_, form) in COLUMNS.items():
            value = last.get(key, math.nan)
            cell = form.format(value) if math.isfinite(value) else "-"
            if f"{key}_scored" in last:  # the mean covers only the files the metric is defined on
                cell += f" ({last[key + '_scored']} of {run['files']} files)"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs = [read_run(Path(folder)) for folder in args.runs]
    out = make_output_folder(args.out, "--out")
    table = format_table(runs)
    subsets = sorted({run["files"] for run in runs})
    title = f"Last learning-curve point of each run ({'/'.join(map(str, subsets))} dev files)"
    write_text_atomic(out / "compare.md", f"{title}\n\n{table}\n")
    document = [{**run, "points": points_to_json(run["points"])} for run in runs]
    write_text_atomic(out / "compare.json", json.dumps(document, indent=1) + "\n")
    plot_curves({run["name"]: run["points"] for run in runs}, out / "compare.png", x="train_cpu_seconds")
    print(table)
    return 0


if __name__ == "__main__":
    run_main(main)
