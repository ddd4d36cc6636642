"""Objective evaluation of decoded audio against references, optionally side by side with Opus.

    python bin/evaluate.py REF_DIR DEG_DIR [--opus] [--bitrate 12.8] [--csv out.csv] [--json out.json]
                           [--plot DIR] [--no-visqol]
    python bin/evaluate.py ref.wav decoded.wav [--opus] [--plot DIR]

Two folders: files are matched by relative path (extension may differ); two files: scored as a pair.
--plot writes one PNG per file of log-mel spectrograms side by side (frequency axis in Hz).
Prints one table line per file and the mean; metrics: wide-band PESQ, STOI, ESTOI, SI-SDR, log-mel
distance, ViSQOL (speech) when installed. A metric undefined on a file (a clip too short, a silent
signal) is NaN there and left out of its mean; a `scored` line then gives the files each mean covers
(the CSV's `scored` row and the JSON's mean `counts` always do).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import csv  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402

from utils.cli import configure_logging, run_main  # noqa: E402
from utils.errors import ArgumentParser, CodecError, shown  # noqa: E402
from utils.eval.metrics import (  # noqa: E402
    evaluate_directories,
    format_table,
    mean_row,
    metric_names,
    scored_counts,
    visqol_available,
)
from utils.eval.opus_baseline import check_opus_bitrate, opus_available, opus_roundtrip  # noqa: E402
from utils.files import file_in_the_way, make_output_folder, write_text_atomic  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference_dir", metavar="REF",
                        help="reference audio file, or a folder of them (searched recursively)")
    parser.add_argument("degraded_dir", metavar="DEG",
                        help="decoded audio file, or a folder of them with the same relative names")
    parser.add_argument("--opus", action="store_true", help="also encode+decode each reference with Opus and score it")
    parser.add_argument("--bitrate", type=float, default=12.8, help="Opus bitrate in kbps (default 12.8)")
    parser.add_argument("--csv", type=Path, help="write one row per file (and the mean) to this CSV file")
    parser.add_argument("--json", type=Path, help="write per-file scores, the mean and the settings to this JSON file")
    parser.add_argument("--plot", "--plots", dest="plots", type=Path,
                        help="folder for one log-mel spectrogram PNG per file")
    parser.add_argument("--no-visqol", action="store_true", help="skip ViSQOL even when the visqol package imports")
    return parser.parse_args(argv)


def _json_safe(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _prepare_output(path: Path | None, option: str, folder: bool = False) -> None:
    """Check an output before the scoring (not a traceback after it): a file's folder must exist, as
    for every command's output file; a folder output (--plot) is made now."""
    if path is None:
        return
    if not folder and file_in_the_way(path.parent) is None and not path.parent.is_dir():
        raise CodecError(f"{option} {path}: output folder {path.parent} does not exist: create it first")
    make_output_folder(path if folder else path.parent, option, given=path)
    if not folder and path.is_dir():
        raise CodecError(f"{option} {path} is a folder: give a file name")


def _write(path: Path, option: str, text: str) -> None:
    try:
        write_text_atomic(path, text)  # as bytes: the csv module's own line ends stay
    except OSError as error:
        raise CodecError(f"{option} {path}: cannot write it ({error.strerror}): give another path") from None


def _print_scores(args: argparse.Namespace, table_rows: list[dict], names: tuple[str, ...], mean: dict,
                  with_visqol: bool) -> None:
    """The table of scores, Opus's measured bitrate and whether ViSQOL ran, on stdout."""
    print(format_table(table_rows, names, baseline_name="opus" if args.opus else None))
    if args.opus:
        print(
            f"opus: requested {args.bitrate:g} kbps; measured {mean['opus_kbps']:.2f} kbps (whole Ogg files), "
            f"{mean['opus_payload_kbps']:.2f} kbps (audio packets only), over the files' total duration"
        )
    if not with_visqol:
        print("visqol: " + ("skipped (--no-visqol)" if args.no_visqol else "unavailable (pip install visqol-python)"))


def _write_reports(args: argparse.Namespace, rows: list[dict], mean: dict, scored: dict, counts: dict[str, int],
                   names: tuple[str, ...], with_visqol: bool) -> None:
    """The --csv and --json files asked for."""
    if args.csv:
        table = io.StringIO(newline="")
        writer = csv.DictWriter(table, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([*rows, mean, scored])
        _write(args.csv, "--csv", table.getvalue())
    if args.json:
        report = {
            "settings": {
                "reference_dir": shown(args.reference_dir),
                "degraded_dir": shown(args.degraded_dir),
                "metrics": list(names),
                "visqol": with_visqol,
                "opus_bitrate_kbps": args.bitrate if args.opus else None,
            },
            "files": [{key: _json_safe(value) for key, value in row.items()} for row in rows],
            "mean": {**{key: _json_safe(value) for key, value in mean.items()}, "counts": counts},
        }
        _write(args.json, "--json", json.dumps(report, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(logging.WARNING, "%(levelname)s: %(message)s", force=True)
    _prepare_output(args.csv, "--csv")
    _prepare_output(args.json, "--json")
    _prepare_output(args.plots, "--plot", folder=True)
    with_visqol = visqol_available() and not args.no_visqol
    baseline = None
    if args.opus:
        check_opus_bitrate(args.bitrate)
        if not opus_available():
            raise CodecError("--opus needs opusenc/opusdec: install the Debian package opus-tools")

        def baseline(audio, sample_rate):
            result = opus_roundtrip(audio, sample_rate, bitrate_kbps=args.bitrate)
            return result.audio, {"kbps": result.bitrate_kbps, "payload_kbps": result.payload_kbps}

    rows = evaluate_directories(
        args.reference_dir, args.degraded_dir, baseline=baseline, with_visqol=with_visqol, plots_dir=args.plots
    )
    for row in rows:
        row["file"] = shown(row["file"])
    mean = mean_row(rows)
    counts = scored_counts(rows)
    scored = {"file": "scored", **counts}
    names = metric_names(with_visqol)
    table_rows = [*rows, mean] + ([scored] if min(counts.values()) < len(rows) else [])
    try:
        _print_scores(args, table_rows, names, mean, with_visqol)
    finally:  # whatever became of the table: scores that cannot be printed (a full disk under stdout) are kept
        _write_reports(args, rows, mean, scored, counts, names, with_visqol)
    return 0


if __name__ == "__main__":
    run_main(main)
