#!/usr/bin/env python3
"""Training speed of a recipe: seconds per step and samples/s of stage 1 (metric losses) and of the
adversarial stage, per precision, with or without torch.compile and --fast_conv, on random audio of the recipe's
batch shape (the trainer's own step; see trainer/benchmark.py). Any recipe: autoencoder (both phases),
denoise (stage 1), vocoder (the phases its start steps give: the released ones train adversarially
from the first step; a missing analyzer checkpoint or statistics file gets a stand-in of the same shape).

    python bin/train_benchmark.py --steps 3                       # symAD_vctk_48000_hop300, fp32 and bf16
    python bin/train_benchmark.py --precisions fp32 --compile both --threads 2 --json out.json
    python bin/train_benchmark.py --device cuda --steps 50 --precisions fp32,bf16 --compile both
    python bin/train_benchmark.py --precisions fp32 --compile both --original /path/to/AudioDec
    python bin/train_benchmark.py --phases adversarial --precisions fp32 --compile off,on,all
    python bin/train_benchmark.py --phases stage1 --precisions fp32 --rounds 5 --original /path/to/AudioDec
    python bin/train_benchmark.py --phases stage1 --precisions fp32 --fast_conv both --original /path/to/AudioDec
    python bin/train_benchmark.py -c config/vocoder/AudioDec_v1_symAD_vctk_48000_hop300_clean.yaml --original DIR

`--original DIR` (a checkout of facebookresearch/AudioDec) times the original trainer's step of each
phase after ours, in the same run on the same CPU (fp32, eager: all it has), from its own copy of
the config (DIR/config/<same path under config/>), and gives each of our rows as a ratio of its
steps/s (bin/time_original.py).

The fast_conv column names the form that ran: time-major (the generator, on AVX-512 CPUs) or blocked
(trainer/fast_conv.py); "no" where it was off or does not apply (a GPU).

`--rounds N` repeats the whole comparison N times in turn (ours, then the original's, per phase) and
reports medians: on a machine whose speed drifts by tens of percent within an hour (a shared VM), a
ratio is only meaningful between runs taken minutes apart, so the ratio reported is the median of
each round's own ratio. Each round builds (and compiles) the trainers anew.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

if __name__ == "__main__":  # before anything allocates: the allocator codecTrain.py trains with
    from utils.runtime.cpu_process import use_fast_malloc

    use_fast_malloc()

import torch  # noqa: E402

from bin.time_original import MALLOC_CHOICES, MALLOC_HELP, original_environment, run_in_own_process  # noqa: E402
from trainer.benchmark import PHASES, config_phases, stand_ins, time_phase  # noqa: E402
from trainer.builder import read_recipe  # noqa: E402
from utils.cli import run_main  # noqa: E402
from utils.errors import ArgumentParser, CodecError, check_at_least  # noqa: E402
from utils.files import check_output_folder, write_text_atomic  # noqa: E402
from utils.runtime.cpu_process import cpu_name, current_malloc, release_free_memory  # noqa: E402


def _choices(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    values = [value.strip() for value in text.split(",") if value.strip()]
    unknown = [value for value in values if value not in allowed]
    if unknown or not values:
        raise CodecError(f"{what} {text!r}: give a comma-separated list of {', '.join(allowed)}")
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


def time_original(original: Path, config: Path, phase: str, args: argparse.Namespace,
                  vocoder_inputs: tuple[str, ...] | list[str] = ()) -> dict:  # fmt: skip
    """The original trainer's step of `phase` (bin/time_original.py, in its own process: both trees
    have models/ and layers/); a vocoder's `--analyzer_config` and `--stats` in `vocoder_inputs`."""
    arguments = [
        "--config", str(config), "--train_phase", phase, *vocoder_inputs, "--steps", str(args.steps),
        "--warmup", str(args.warmup), "--threads", str(torch.get_num_threads()),
        *(["--batch_size", str(args.batch_size)] if args.batch_size else []),
        *(["--batch_length", str(args.batch_length)] if args.batch_length else []),
    ]
    environment, malloc = original_environment(args.original_malloc)
    return {**run_in_own_process(original, arguments, "the original trainer", environment), "malloc": malloc}


def _time_ours(
    config: dict, phase: str, precision: str, compiled: bool | str, fast_conv: bool, args: argparse.Namespace
) -> dict:
    """One of our settings timed, its row printed."""
    timing = time_phase(config, phase, precision, compiled, args.device, args.steps, args.warmup, fast_conv=fast_conv)
    # Our allocator keeps the setting's peak (GBs at a denoising recipe's 2 s crops) unless told to
    # give it back, and the original's process would then run beside it: two peaks, out of memory.
    gc.collect()
    release_free_memory()
    peak = f"{timing.peak_memory_mib:.0f}" if timing.peak_memory_mib is not None else "-"
    form = {"": "no", "time_major": "time-major"}.get(timing.fast_conv_form, timing.fast_conv_form)
    print(f"{phase:<12} {precision:<9} {_compiled_column(timing.compiled):<7} {form:<10} "
          f"{timing.batch_size:>3}x{timing.batch_length:<5} {timing.seconds_per_step:>8.3f} "
          f"{timing.samples_per_second:>9.2f} {timing.warmup_seconds:>9.1f} {peak:>8}", flush=True)  # fmt: skip
    return timing.as_dict()


def _compiled_column(compiled: str) -> str:
    """What a setting compiled, in the table's column: no, G (the generator) or G+D (both)."""
    return {"": "no", "generator": "G"}.get(compiled, "G+D")


def _label(row: dict) -> str:
    """A setting as the summary lines name it: its precision, then 'fast_conv' and what it compiled."""
    compiled = {"": "", "generator": " generator compiled"}.get(row["compiled"], " compiled")
    return f"{row['precision']}{' fast_conv' if row.get('fast_conv') else ''}{compiled}"


def _time_theirs(
    original: Path, config: Path, phase: str, args: argparse.Namespace, ours: list[dict], vocoder_inputs: list[str]
) -> dict:
    """The original's step of `phase` timed, its row printed, and each of `ours` given its ratio."""
    timing = time_original(original, config, phase, args, vocoder_inputs)
    print(f"{phase:<12} {'original':<9} {'no':<7} {'no':<10} {timing['batch_size']:>3}x{timing['batch_length']:<5} "
          f"{timing['seconds_per_step']:>8.3f} {timing['samples_per_second']:>9.2f}   malloc {timing['malloc']}",
          flush=True)  # fmt: skip
    for row in ours:
        row["vs_original"] = timing["seconds_per_step"] / row["seconds_per_step"]
        print(f"{'':<12} ours {_label(row)}: {row['vs_original']:.2f}x the original's steps/s", flush=True)
    return timing


def _summary(rounds: list[tuple[list[dict], dict | None]]) -> tuple[list[dict], dict | None]:
    """Rounds of one phase -> one row per setting (and the original's): median seconds per step, each
    round's figures kept, and the median of the rounds' own ratios to the original; printed."""
    def merged(rows: list[dict]) -> dict:
        seconds = [row["seconds_per_step"] for row in rows]
        median = statistics.median(seconds)
        return {**rows[0], "seconds_per_step": median, "samples_per_second": rows[0]["batch_size"] / median,
                "rounds_seconds_per_step": seconds}  # fmt: skip

    ours = [merged([round_rows[index] for round_rows, _ in rounds]) for index in range(len(rounds[0][0]))]
    original = merged([theirs for _, theirs in rounds]) if rounds[0][1] is not None else None
    print(f"median of {len(rounds)} rounds:")
    for index, row in enumerate(ours):
        line = f"  ours {_label(row)}: {row['seconds_per_step']:.3f} s/step"
        if original is not None:
            ratios = [round_rows[index]["vs_original"] for round_rows, _ in rounds]
            row["rounds_vs_original"] = ratios
            row["vs_original"] = statistics.median(ratios)
            line += (f", {row['vs_original']:.2f}x the original's steps/s (rounds: "
                     f"{', '.join(f'{ratio:.2f}' for ratio in ratios)})")
        print(line, flush=True)
    if original is not None:
        print(f"  original: {original['seconds_per_step']:.3f} s/step", flush=True)
    return ours, original


def _check_device(name: str) -> None:
    """`--device` names this machine's CPU or one of its GPUs."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CodecError(f"--device {name}: give cpu or cuda[:N]") from None
    if device.type not in ("cpu", "cuda"):
        raise CodecError(f"--device {name}: give cpu or cuda[:N]")
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            build = "a CPU build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise CodecError(f"--device {name}: this machine shows no GPU (torch {torch.__version__}, {build}): "
                             "use --device cpu")
        if (device.index or 0) >= count:
            raise CodecError(f"--device {name}: this machine has {count} GPU(s): use cuda:0..{count - 1}")


def main() -> int:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", default="config/autoencoder/symAD_vctk_48000_hop300.yaml")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (compilation happens there)")
    parser.add_argument("--phases", help=f"comma-separated: {', '.join(PHASES)} (default: those the config trains)")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16, fp16")
    parser.add_argument("--compile", default="off",
                        help="comma-separated: off, on (codecTrain.py's --compile: the discriminators stay eager "
                        "on the CPU), generator, all (both networks on any device); both = off,on")
    parser.add_argument("--fast_conv", choices=("off", "on", "both"), default="off",
                        help="codecTrain.py's --fast_conv (CPU): faster convolutions (time-major generator on AVX-512)")
    parser.add_argument("--batch_size", type=int, help="override the recipe's batch_size")
    parser.add_argument("--batch_length", type=int, help="override the recipe's batch_length and adv_batch_length")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--original", type=Path, help="checkout of facebookresearch/AudioDec: time its trainer too")
    parser.add_argument("--original_malloc", choices=MALLOC_CHOICES, default="system", help=MALLOC_HELP)
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat ours and the original's in turn this many times; report medians")
    args = parser.parse_args()
    precisions = _choices(args.precisions, ("fp32", "bf16", "fp16"), "--precisions")
    switches = {"off": [False], "on": [True], "both": [False, True]}
    compile_values = {"off": False, "on": True, "generator": "generator", "all": "all"}
    compile_text = "off,on" if args.compile == "both" else args.compile
    compiles = [compile_values[value] for value in _choices(compile_text, tuple(compile_values), "--compile")]
    fast_convs = switches[args.fast_conv]
    for option, least in (("steps", 1), ("rounds", 1), ("warmup", 0), ("threads", 1), ("batch_size", 1),
                          ("batch_length", 1)):
        check_at_least(option, getattr(args, option), least)
    _check_device(args.device)
    if args.json:
        check_output_folder(args.json)  # before the timings, not after them
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        return _run(args, folder, precisions, compiles, fast_convs)


def _run(args: argparse.Namespace, folder: str, precisions: list[str], compiles: list, fast_convs: list[bool]) -> int:
    """The timings of main(), with a vocoder's stand-in inputs (trainer.benchmark.stand_ins) in `folder`."""
    config, analyzer_config = stand_ins(read_recipe(args.config), args.config, folder)
    phases = _choices(args.phases or ",".join(config_phases(config)), config_phases(config), "--phases")
    if args.original and args.device != "cpu":
        raise CodecError("--original times the original trainer on CPU: use --device cpu")
    theirs = original_config(args.original, args.config) if args.original else None
    vocoder_inputs = []
    if theirs is not None and analyzer_config is not None:
        # The analyzer's generator_params: a saved experiment's own, else the original's copy of its recipe.
        recipe = analyzer_config
        if recipe.name != "config.yml":
            recipe = original_config(args.original, recipe)
        vocoder_inputs = ["--analyzer_config", str(recipe), "--stats", config["generator_params"]["stats"]]
    if args.batch_size:
        config["batch_size"] = args.batch_size
    if args.batch_length:
        config.update(batch_length=args.batch_length, adv_batch_length=args.batch_length)
    if args.device.startswith("cuda"):
        machine = torch.cuda.get_device_name(torch.device(args.device))
    else:
        machine = (f"{cpu_name()}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}, "
                   f"malloc {current_malloc()}")  # fmt: skip
    logging.getLogger("trainer").setLevel(logging.WARNING)
    print(f"{args.config} on {machine} (torch {torch.__version__})")
    print(f"{'phase':<12} {'precision':<9} {'compile':<7} {'fast_conv':<10} {'batch':>9} {'s/step':>8} "
          f"{'samples/s':>9} {'warm-up s':>9} {'peak MiB':>8}")  # fmt: skip
    results, originals = [], []
    for phase in phases:
        rounds: list[tuple[list[dict], dict | None]] = []
        for round_index in range(args.rounds):
            if args.rounds > 1:
                print(f"{phase}: round {round_index + 1} of {args.rounds}", flush=True)
            ours = [_time_ours(config, phase, precision, compiled, fast_conv, args)
                    for precision in precisions for compiled in compiles for fast_conv in fast_convs]  # fmt: skip
            original = _time_theirs(args.original, theirs, phase, args, ours, vocoder_inputs) if theirs else None
            rounds.append((ours, original))
        ours, original = _summary(rounds) if args.rounds > 1 else rounds[0]
        results += ours
        if original is not None:
            originals.append(original)
    if args.json:
        report = {"config": args.config, "machine": machine, "torch": torch.__version__, "device": args.device,
                  "results": results, "original": originals}  # fmt: skip
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    run_main(main)
