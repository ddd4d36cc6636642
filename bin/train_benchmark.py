#!/usr/bin/env python3
"""Training speed of a recipe: seconds per step and samples/s of stage 1 (metric losses) and of the
adversarial stage, per precision and with or without torch.compile, on random audio of the recipe's
batch shape (the trainer's own step; see trainer/benchmark.py).

    python bin/train_benchmark.py --steps 3                       # symAD_vctk_48000_hop300, fp32 and bf16
    python bin/train_benchmark.py --precisions fp32 --compile both --threads 2 --json out.json
    python bin/train_benchmark.py --device cuda --steps 50 --precisions fp32,bf16 --compile both
    python bin/train_benchmark.py --precisions fp32 --compile both --original /path/to/AudioDec

`--original DIR` (a checkout of facebookresearch/AudioDec) times the original trainer's step of each
phase after ours, in the same run on the same CPU (fp32, eager: all it has), from its own copy of
the config (DIR/config/<same path under config/>), and gives each of our rows as a ratio of its
steps/s (bin/time_original.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bin.time_original import run_in_own_process  # noqa: E402
from trainer.benchmark import PHASES, cpu_name, time_phase  # noqa: E402
from trainer.builder import read_config  # noqa: E402
from utils.cli import run_main  # noqa: E402
from utils.errors import CodecError  # noqa: E402


def _choices(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    values = [value.strip() for value in text.split(",") if value.strip()]
    unknown = [value for value in values if value not in allowed]
    if unknown or not values:
        raise argparse.ArgumentTypeError(f"{what}: {text!r}; use a comma-separated list of {', '.join(allowed)}")
    return values


def original_config(original: Path, config: str) -> Path:
    """The original's copy of `config` (same path below config/), or a one-line error."""
    if not (original / "models" / "autoencoder" / "AudioDec.py").is_file():
        raise CodecError(
            f"{original} is not a checkout of facebookresearch/AudioDec (no models/autoencoder/AudioDec.py)"
        )
    parts = Path(config).resolve().parts
    if "config" not in parts:
        raise CodecError(f"{config} is not under a config/ folder: --original needs one of the original's recipes")
    copy = original.joinpath(*parts[len(parts) - parts[::-1].index("config") - 1:])
    if not copy.is_file():
        raise CodecError(f"{original} has no {copy.relative_to(original)}: give --original a checkout of "
                         "facebookresearch/AudioDec and one of its recipes with -c")
    return copy


def time_original(original: Path, config: Path, phase: str, args: argparse.Namespace) -> dict:
    """The original trainer's step of `phase` (bin/time_original.py, in its own process: both trees
    have models/ and layers/)."""
    arguments = [
        "--autoencoder", str(config), "--train_phase", phase, "--steps", str(args.steps),
        "--warmup", str(args.warmup), "--threads", str(torch.get_num_threads()),
        *(["--batch_size", str(args.batch_size)] if args.batch_size else []),
        *(["--batch_length", str(args.batch_length)] if args.batch_length else []),
    ]
    return run_in_own_process(original, arguments, "the original trainer")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", default="config/autoencoder/symAD_vctk_48000_hop300.yaml")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (compilation happens there)")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated: {', '.join(PHASES)}")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16, fp16")
    parser.add_argument("--compile", choices=("off", "on", "both"), default="off")
    parser.add_argument("--batch_size", type=int, help="override the recipe's batch_size")
    parser.add_argument("--batch_length", type=int, help="override the recipe's batch_length and adv_batch_length")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--original", type=Path, help="checkout of facebookresearch/AudioDec: time its trainer too")
    args = parser.parse_args()
    phases = _choices(args.phases, PHASES, "--phases")
    precisions = _choices(args.precisions, ("fp32", "bf16", "fp16"), "--precisions")
    compiles = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    if args.threads:
        torch.set_num_threads(args.threads)
    config = read_config(args.config)
    if args.original and args.device != "cpu":
        raise CodecError("--original times the original trainer on CPU: use --device cpu")
    theirs = original_config(args.original, args.config) if args.original else None
    if args.batch_size:
        config["batch_size"] = args.batch_size
    if args.batch_length:
        config.update(batch_length=args.batch_length, adv_batch_length=args.batch_length)
    if args.device.startswith("cuda"):
        machine = torch.cuda.get_device_name(torch.device(args.device))
    else:
        machine = f"{cpu_name()}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}"
    logging.getLogger("trainer").setLevel(logging.WARNING)
    print(f"{args.config} on {machine} (torch {torch.__version__})")
    print(f"{'phase':<12} {'precision':<9} {'compile':<7} {'batch':>9} {'s/step':>8} {'samples/s':>9} "
          f"{'warm-up s':>9} {'peak MiB':>8}")  # fmt: skip
    results, originals = [], []
    for phase in phases:
        ours = []
        for precision in precisions:
            for compiled in compiles:
                timing = time_phase(config, phase, precision, compiled, args.device, args.steps, args.warmup)
                ours.append(timing.as_dict())
                peak = f"{timing.peak_memory_mib:.0f}" if timing.peak_memory_mib is not None else "-"
                line = (f"{phase:<12} {precision:<9} {'yes' if compiled else 'no':<7} "
                        f"{timing.batch_size:>3}x{timing.batch_length:<5} {timing.seconds_per_step:>8.3f} "
                        f"{timing.samples_per_second:>9.2f} {timing.warmup_seconds:>9.1f} {peak:>8}")  # fmt: skip
                print(line, flush=True)
        if theirs is not None:
            original = time_original(args.original, theirs, phase, args)
            originals.append(original)
            print(f"{phase:<12} {'original':<9} {'no':<7} {original['batch_size']:>3}x{original['batch_length']:<5} "
                  f"{original['seconds_per_step']:>8.3f} {original['samples_per_second']:>9.2f}", flush=True)
            for row in ours:
                row["vs_original"] = original["seconds_per_step"] / row["seconds_per_step"]
                print(f"{'':<12} ours {row['precision']}{' compiled' if row['compile'] else ''}: "
                      f"{row['vs_original']:.2f}x the original's steps/s", flush=True)
        results += ours
    if args.json:
        report = {"config": args.config, "machine": machine, "torch": torch.__version__, "device": args.device,
                  "results": results, "original": originals}  # fmt: skip
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    run_main(main)
