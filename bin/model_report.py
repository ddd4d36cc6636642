"""A model's evaluation table on a test set: quality per number of codebooks, beside Opus, and the real bitrate.

    python bin/model_report.py --model demo48k --test corpus/test --codebooks 8,4,2,1 \\
        --opus 12.8,6.4 --entropy --out exp/autoencoder/demo48k/report

Each test file is coded once (all codebooks, from the warmed-up state, as demoFile.py does) and
decoded with the first K codebooks for every K asked; each decode is scored against the reference
(wide-band PESQ, STOI, ESTOI, SI-SDR, log-mel distance; see utils/eval/metrics.py). `--opus` scores Opus
at the given bitrates on the same files. `--entropy` range-codes each file's codes with the model's
entropy table (`codec.py fit-entropy`), checks that they decode to the same codes, and reports the
payload bitrate of what `codec.py encode --entropy` stores (the raw codes where range coding would not
be smaller). `--unquantized` adds the model with its quantizer left out (the encoder's latent
straight into the decoder): its quality at unlimited bitrate, the ceiling the codebooks approach.
Writes `report.json` (settings, per-file rows, means), `report.md` (the table) and `rate_quality.png`
(PESQ-WB and ESTOI against kbps, the codec's points beside Opus's) to `--out`, and prints the table.
The codec's `kbps` is its nominal rate (K codebooks of 10 bits per frame); with `--entropy`, `raw kbps`
and `entropy-coded kbps` are measured, total payload bits over total duration (the raw one above the
nominal by the frames of each file's last part and of the output delay, which are coded too), as
Opus's `kbps` is. A metric undefined on a file (too short, a silent signal) is left out of its mean;
each summary line's `files` gives how many files each mean covers, and the table says where that is
fewer than all.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from dataloader.audio_files import find_audio_files  # noqa: E402
from utils.audio import read_audio  # noqa: E402
from utils.bitstream.codec_file import entropy_table_path, load_entropy_model, stream_header  # noqa: E402
from utils.cli import (  # noqa: E402
    add_model_arguments,
    add_runtime_arguments,
    apply_runtime_arguments,
    load_codec,
    run_main,
)
from utils.errors import ArgumentParser, CodecError, check_at_least  # noqa: E402
from utils.eval.metrics import METRIC_LABELS, METRIC_NAMES, evaluate_pair, save_figure  # noqa: E402
from utils.eval.opus_baseline import check_opus_bitrate, opus_available, opus_roundtrip  # noqa: E402
from utils.files import make_output_folder, write_text_atomic  # noqa: E402


def _numbers(text: str, kind: type, what: str) -> list:
    try:
        values = [kind(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise CodecError(f"{what} '{text}': give a comma-separated list of numbers, e.g. 8,4,2,1") from None
    if not values:
        raise CodecError(f"{what} is empty: give at least one value")
    if len(set(values)) < len(values):  # a row scored twice, under one name
        raise CodecError(f"{what} '{text}' names a value twice: give each once")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    add_runtime_arguments(parser)
    parser.add_argument("--test", required=True,
                        help="folder of test audio at the model's rate (recursive; a file of several channels is "
                        "scored mixed to mono, as the metrics are)")
    parser.add_argument("--codebooks", help="numbers of codebooks to decode with (default: all the model's)")
    parser.add_argument("--opus", default="", help="Opus bitrates in kbps to score beside, e.g. 12.8,6.4")
    parser.add_argument("--entropy", action="store_true", help="measure the entropy-coded bitrate too")
    parser.add_argument("--entropy_table", help="entropy table (default: beside the encoder checkpoint)")
    parser.add_argument("--unquantized", action="store_true",
                        help="also score the model without its quantizer (the latent straight into the decoder)")
    parser.add_argument("--every", type=int, default=1, help="score every N-th file only (a spread-out subset)")
    parser.add_argument("--max_files", type=int, default=0, help="score only the first N files (0 = all)")
    parser.add_argument("--out", required=True, help="folder for report.json and report.md")
    return parser.parse_args(argv)


def test_files(folder: str, max_files: int, every: int = 1) -> list[Path]:
    root = Path(folder)
    if not root.is_dir():
        raise CodecError(f"test folder {folder} not found: build the corpus with python bin/prepare_demo_corpus.py")
    files = find_audio_files(root)
    if not files:
        raise CodecError(f"no audio files under {folder}")
    check_at_least("every", every, 1)
    check_at_least("max_files", max_files, 0, " (0: all)")
    files = files[::every]
    return files[:max_files] if max_files > 0 else files


def _finite_values(rows: list[dict], key: str) -> np.ndarray:
    values = np.array([row[key] for row in rows if key in row and row[key] is not None], dtype=np.float64)
    return values[np.isfinite(values)]


def _mean(rows: list[dict], key: str) -> float:
    values = _finite_values(rows, key)
    return float(values.mean()) if values.size else math.nan


def _scored_line(rows: list[dict], prefix: str) -> dict:
    """The mean of each metric of one system (its columns ``<prefix>_<metric>``), and under ``files`` how
    many files each mean covers."""
    line: dict = {name: _mean(rows, f"{prefix}_{name}") for name in METRIC_NAMES}
    line["files"] = {name: int(_finite_values(rows, f"{prefix}_{name}").size) for name in METRIC_NAMES}
    return line


def score_file(codec, path: Path, root: Path, codebooks: list[int], opus_rates: list[float], entropy,
               used: list[set[int]] | None = None, unquantized: bool = False) -> dict:
    """One row: metrics of every system on one file, its duration, and its entropy-coded size. ``used``
    (one set per codebook) gathers the codes the file's encoding chose."""
    data, rate = read_audio(str(path))
    if rate != codec.sample_rate:
        raise CodecError(f"{path} is at {rate} Hz, model '{codec.name}' codes {codec.sample_rate} Hz: resample it")
    reference = data.mean(axis=1).astype(np.float32)
    streams = codec.streams_from_audio(reference[:, None])
    row: dict = {"file": str(path.relative_to(root)), "seconds": len(reference) / rate}
    codes, full = codec.code(streams)  # all codebooks: also the K = n_codebooks decode
    if used is not None:
        for index, row_codes in enumerate(codes[0].cpu().numpy()):
            used[index].update(row_codes.tolist())
    for k in codebooks:
        if k == codec.n_codebooks:
            decoded = full[0, 0].cpu().numpy()
        else:
            decoded = codec.decode_signal(codes[:, :k], len(reference))[0, 0].cpu().numpy()
        scores = evaluate_pair(reference, decoded, rate, name=f"{path} (K={k})")
        row.update({f"K{k}_{name}": value for name, value in scores.items()})
    if unquantized:
        decoded = codec.code_unquantized(streams)[0, 0].cpu().numpy()
        scores = evaluate_pair(reference, decoded, rate, name=f"{path} (unquantized)")
        row.update({f"unquantized_{name}": value for name, value in scores.items()})
    for kbps in opus_rates:
        result = opus_roundtrip(reference, rate, bitrate_kbps=kbps)
        scores = evaluate_pair(reference, result.audio, rate, name=f"{path} (Opus {kbps:g} kbps)")
        row.update({f"opus{kbps:g}_{name}": value for name, value in scores.items()})
        row[f"opus{kbps:g}_payload_kbps"] = result.payload_kbps
    if entropy is not None:
        array = codes.cpu().numpy()
        for k in codebooks:
            kept = array[:, :k]
            payload = entropy.encode(kept)
            if not np.array_equal(entropy.decode(payload, *kept.shape), kept):
                raise CodecError(f"{path}: entropy-coded codes did not decode to the same codes (K={k})")
            raw_bytes = stream_header(codec, 1, len(reference), k).raw_payload_bytes
            row[f"K{k}_raw_payload_bits"] = 8 * raw_bytes
            # `codec.py encode --entropy` stores the raw codes where range coding is not smaller (the header
            # is the same size either way).
            row[f"K{k}_entropy_payload_bits"] = 8 * min(len(payload), raw_bytes)
    return row


def summarize(rows: list[dict], codec, codebooks: list[int], opus_rates: list[float], entropy: bool,
              unquantized: bool = False) -> list[dict]:
    """One line per system: the mean of each metric, under ``files`` how many files each mean covers, and
    the bitrate: the codec's nominal one and, if measured, its raw and entropy-coded payloads' (total
    bits over total seconds); Opus's measured; none for the unquantized model."""
    seconds = sum(row["seconds"] for row in rows)
    lines = []
    if unquantized:
        lines.append({"system": f"{codec.name} unquantized", "kbps": math.nan, **_scored_line(rows, "unquantized")})
    for k in codebooks:
        tag = "" if codec.precision == "fp32" else f" {codec.precision}"
        line = {"system": f"{codec.name}{tag} K={k}", "kbps": codec.bitrate(k) / 1000, **_scored_line(rows, f"K{k}")}
        if entropy:
            line["raw_payload_kbps"] = sum(row[f"K{k}_raw_payload_bits"] for row in rows) / seconds / 1000
            line["entropy_kbps"] = sum(row[f"K{k}_entropy_payload_bits"] for row in rows) / seconds / 1000
        lines.append(line)
    for kbps in opus_rates:
        # The payload of each file: its rate times its duration, as the codec's bits are summed.
        bits = sum(row[f"opus{kbps:g}_payload_kbps"] * row["seconds"] for row in rows)
        lines.append({"system": f"Opus {kbps:g} kbps", "kbps": bits / seconds, **_scored_line(rows, f"opus{kbps:g}")})
    return lines


def markdown_table(lines: list[dict], entropy: bool, n_files: int) -> str:
    """The summary as a Markdown table; below it, where a mean covers fewer than ``n_files`` files, how many."""
    columns = ["kbps"] + (["raw_payload_kbps", "entropy_kbps"] if entropy else []) + list(METRIC_NAMES)
    labels = {"kbps": "kbps", "raw_payload_kbps": "raw kbps", "entropy_kbps": "entropy-coded kbps", **METRIC_LABELS}
    out = ["| system | " + " | ".join(labels[c] for c in columns) + " |", "| --- |" + " --- |" * len(columns)]
    for line in lines:
        cells = [f"{line[c]:.3f}" if isinstance(line.get(c), float) and math.isfinite(line[c]) else "" for c in columns]
        out.append(f"| {line['system']} | " + " | ".join(cells) + " |")
    notes = {line["system"]: ", ".join(f"{METRIC_LABELS[name]} {count}" for name, count in line["files"].items()
                                       if count < n_files) for line in lines}
    if any(notes.values()):
        if len(set(notes.values())) == 1:
            covered = f"{next(iter(notes.values()))} (every system)"
        else:
            covered = "; ".join(f"{system}: {note}" for system, note in notes.items() if note)
        out.append(f"\nMeans over fewer than the {n_files} files (the metric is undefined on the others: too "
                   f"short, or a silent signal): {covered}.")
    return "\n".join(out)


def rate_quality_points(lines: list[dict]) -> dict[str, list[tuple[float, float, float]]]:
    """(kbps, PESQ-WB, ESTOI) of each summary line, grouped into the codec's points and Opus's, by kbps."""
    groups: dict[str, list[tuple[float, float, float]]] = {}
    for line in lines:
        if not math.isfinite(line["kbps"]):  # the unquantized model has no bitrate
            continue
        family = "Opus" if line["system"].startswith("Opus") else line["system"].split(" K=")[0]
        groups.setdefault(family, []).append((line["kbps"], line["pesq_wb"], line["estoi"]))
    return {family: sorted(points) for family, points in groups.items()}


def save_rate_quality_plot(path: Path, lines: list[dict]) -> None:
    """PESQ-WB and ESTOI against bitrate, one line per system family (the codec's K values, Opus's rates)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.5), layout="constrained")
    for family, points in rate_quality_points(lines).items():
        kbps, pesq, estoi = zip(*points)
        style = "s--" if family == "Opus" else "o-"
        axes[0].plot(kbps, pesq, style, label=family)
        axes[1].plot(kbps, estoi, style, label=family)
    for axis, label in zip(axes, (METRIC_LABELS["pesq_wb"], METRIC_LABELS["estoi"])):
        axis.set_xlabel("bitrate (kbps)")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[0].legend()
    save_figure(figure, path)


def _finite(value):
    """JSON-safe copy: NaN and infinities become null, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    codec = load_codec(args, apply_runtime_arguments(args))
    codebooks = _numbers(args.codebooks, int, "--codebooks") if args.codebooks else [codec.n_codebooks]
    bad = [k for k in codebooks if not 1 <= k <= codec.n_codebooks]
    if bad:
        raise CodecError(f"--codebooks {bad}: model '{codec.name}' has 1..{codec.n_codebooks}")
    opus_rates = _numbers(args.opus, float, "--opus") if args.opus else []
    for rate in opus_rates:
        check_opus_bitrate(rate, "--opus")
    if opus_rates and not opus_available():
        raise CodecError("--opus needs opusenc/opusdec: install the Debian package opus-tools")
    entropy = None
    if args.entropy:
        table = args.entropy_table
        if not table and codec.encoder_checkpoint:
            table = entropy_table_path(codec.encoder_checkpoint)
        entropy = load_entropy_model(codec, table)
    files = test_files(args.test, args.max_files, args.every)
    out = make_output_folder(args.out, "--out")  # before the scoring: a path in the way stops it now
    rows = []
    used: list[set[int]] = [set() for _ in range(codec.n_codebooks)]
    with torch.inference_mode():
        for path in tqdm(files, desc="scoring", unit="file"):
            rows.append(score_file(codec, path, Path(args.test), codebooks, opus_rates, entropy, used,
                                   args.unquantized))
    lines = summarize(rows, codec, codebooks, opus_rates, entropy is not None, args.unquantized)
    table = markdown_table(lines, entropy is not None, len(rows))
    seconds = sum(row["seconds"] for row in rows)
    settings = {
        "model": codec.name, "encoder": codec.encoder_checkpoint, "test": args.test, "every": args.every,
        "max_files": args.max_files, "files": len(rows), "seconds": seconds,
        "codebooks": codebooks, "opus_kbps": opus_rates, "entropy": entropy is not None,
        "unquantized": args.unquantized,
        "precision": args.precision, "codes_used": [len(codes) for codes in used],
        "command": " ".join(["python", "bin/model_report.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    report = {"settings": settings, "summary": lines, "files": rows}
    write_text_atomic(out / "report.json", json.dumps(_finite(report), indent=1))
    usage = ", ".join(str(len(codes)) for codes in used)
    write_text_atomic(out / "report.md", f"{len(rows)} files, {seconds / 60:.1f} min of `{args.test}`\n\n{table}\n\n"
                      f"Codes used on these files, per codebook (of {codec.codebook_size}): {usage}\n")
    save_rate_quality_plot(out / "rate_quality.png", lines)
    print(table)
    return 0


if __name__ == "__main__":
    run_main(main)
