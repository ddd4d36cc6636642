"""Quality against training steps: bin/model_report.py on each checkpoint of a run, one table.

    python bin/learning_curve.py exp/autoencoder/demo48k_cont/checkpoint-*steps.pkl \\
        --test corpus/test --every 6 --offset 9500 --out exp/autoencoder/demo48k/learning_curve

Each checkpoint (an autoencoder in the original format, config.yml beside it) codes and decodes the
test files with all its codebooks; the table has one row per checkpoint, sorted by step. `--offset`
is added to each checkpoint's step count (for a run started with `codecTrain.py --initial` from a
model that had already trained that many steps). Writes `curve.json` and `curve.md` to `--out`.
`--reuse` keeps a checkpoint's earlier report only where it was made from the same checkpoint with
the same --test, --every and --max_files; any other is scored again.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402

from bin import model_report  # noqa: E402
from utils.cli import run_main  # noqa: E402
from utils.errors import ArgumentParser, CodecError  # noqa: E402
from utils.eval.metrics import METRIC_LABELS, METRIC_NAMES  # noqa: E402
from utils.files import make_output_folder, write_text_atomic  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="checkpoint-<N>steps.pkl files")
    parser.add_argument("--test", required=True, help="folder of test audio")
    parser.add_argument("--every", type=int, default=1, help="score every N-th test file only")
    parser.add_argument("--max_files", type=int, default=0, help="score only the first N files (0 = all)")
    parser.add_argument("--offset", type=int, default=0, help="steps to add to each checkpoint's count")
    parser.add_argument("--num_threads", type=int, default=2)
    parser.add_argument("--reuse", action="store_true",
                        help="keep a checkpoint's earlier report (<out>/steps<N>/report.json) if it was made with the "
                        "same checkpoint, --test, --every and --max_files")
    parser.add_argument("--out", required=True, help="folder for curve.json and curve.md")
    return parser.parse_args(argv)


def checkpoint_steps(path: str) -> int:
    match = re.search(r"checkpoint-(\d+)steps\.pkl$", path)
    if not match:
        raise CodecError(f"{path}: expected a checkpoint-<N>steps.pkl file")
    return int(match.group(1))


REUSED_SETTINGS = {"encoder": "checkpoint", "test": "--test", "every": "--every", "max_files": "--max_files"}


def differing_setting(report_path: Path, wanted: dict) -> str | None:
    """What the report at ``report_path`` differs in from ``wanted`` (keyed as :data:`REUSED_SETTINGS`),
    named for a message; None where it was made with all of them."""
    try:
        settings = json.loads(report_path.read_text())["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        return "an unreadable report"
    for key, value in wanted.items():
        if key not in settings:  # a report from before the settings were recorded
            return f"no record of its {REUSED_SETTINGS[key]}"
        if settings[key] != value:
            return f"{REUSED_SETTINGS[key]} {settings[key]} (now {value})"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    checkpoints = sorted(args.checkpoints, key=checkpoint_steps)
    out = make_output_folder(args.out, "--out")  # before the first checkpoint's report
    rows = []
    for checkpoint in checkpoints:
        steps = checkpoint_steps(checkpoint) + args.offset
        folder = out / f"steps{steps}"
        wanted = {"encoder": checkpoint, "test": args.test, "every": args.every, "max_files": args.max_files}
        reused = args.reuse and (folder / "report.json").is_file()
        if reused:
            differing = differing_setting(folder / "report.json", wanted)
            if differing is not None:
                logging.info("%s has %s: scoring %s again", folder / "report.json", differing, checkpoint)
                reused = False
        if not reused:
            model_report.main([
                "--encoder", checkpoint, "--decoder", checkpoint, "--test", args.test, "--every", str(args.every),
                "--max_files", str(args.max_files), "--cuda", "-1", "--num_threads", str(args.num_threads),
                "--out", str(folder),
            ])
        report = json.loads((folder / "report.json").read_text())
        summary = report["summary"][0]
        rows.append({"steps": steps, "checkpoint": checkpoint, "files": report["settings"]["files"],
                     **{name: summary[name] for name in METRIC_NAMES}})
    header = "| steps | " + " | ".join(METRIC_LABELS[name] for name in METRIC_NAMES) + " |"
    lines = [header, "| --- |" + " --- |" * len(METRIC_NAMES)]
    for row in rows:
        cells = ["" if row[name] is None else f"{row[name]:.3f}" for name in METRIC_NAMES]
        lines.append(f"| {row['steps']} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    write_text_atomic(out / "curve.json", json.dumps(rows, indent=1))
    title = f"{rows[0]['files']} files of `{args.test}` (every {args.every}-th)"
    write_text_atomic(out / "curve.md", f"{title}\n\n{table}\n")
    print(table)
    return 0


if __name__ == "__main__":
    run_main(main)
