#!/usr/bin/env python3
"""Code every file of a test subset with an encoder and a decoder checkpoint (offline), as the original.

    python codecTest.py --subset test --encoder exp/autoencoder/X/checkpoint-200000steps.pkl \\
        --decoder exp/vocoder/Y/checkpoint-500000steps.pkl --output_dir output/vocoder/Y [--metrics]

Writes <output_dir>/<encoder>-<decoder>_<steps>-<steps>/<subset folder>/<name>_output.wav
(or straight into --output_dir with --specific_folder True), <name> the input's path relative to the
subset's folder without its extension (de/x.wav -> de/x_output.wav). --metrics scores each output
against its input (a denoiser's noisy_* subset: against the clean_* file of the same relative path;
a noisy_* subset without its clean_* one is refused) and writes metrics.csv there (per file, the mean,
and how many files each mean covers); the references are paired before any file is coded.
Without --subset, the encoder config's `test` subset is coded (or `clean_test`, the original's name).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from typing import Any

from utils.cli import file_count, run_main
from utils.errors import ArgumentParser, CodecError
from utils.eval.metrics import mean_row, scored_counts
from utils.experiment_config import load_config

DEFAULT_SUBSETS = ("test", "clean_test")


def pick_subset(config: Mapping[str, Any], asked: str | None) -> str:
    """The `data.subset` entry to code: `asked`, else the first of DEFAULT_SUBSETS the config has."""
    subsets = (config.get("data") or {}).get("subset") or {}
    names = ", ".join(sorted(subsets)) or "none"
    if asked is not None:
        if asked not in subsets:
            raise CodecError(f"--subset {asked}: the encoder's config has no data.subset.{asked} (it has {names})")
        return asked
    for name in DEFAULT_SUBSETS:
        if name in subsets:
            return name
    raise CodecError(f"the encoder's config has no test subset ({' or '.join(DEFAULT_SUBSETS)}): pass --subset "
                     f"with one of {names}")


def main() -> int:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subset", type=str,
                        help="data.subset entry of the encoder's config (default: test, else clean_test)")
    parser.add_argument("--subset_num", type=file_count, default=-1, help="only the first N files (-1: all)")
    parser.add_argument("--encoder", type=str, required=True, help="AudioDec checkpoint (config.yml beside it)")
    parser.add_argument("--decoder", type=str, required=True, help="AudioDec or vocoder checkpoint")
    parser.add_argument("--output_dir", type=str, required=True)
    parser.add_argument("--specific_folder", choices=("True", "False"), default="False",
                        help="write into --output_dir itself")
    parser.add_argument("--metrics", action="store_true", help="score the outputs (utils.eval.metrics)")
    args = parser.parse_args()
    subset = pick_subset(load_config(args.encoder), args.subset)  # (before torch loads: seconds)
    import torch

    from trainer.synthesis import run_test

    device = "cuda" if torch.cuda.is_available() else "cpu"
    outdir, rows = run_test(
        args.encoder, args.decoder, args.output_dir, subset, args.subset_num,
        specific_folder=args.specific_folder == "True", metrics=args.metrics, device=device,
    )
    if rows is not None:
        means, counts = mean_row(rows), scored_counts(rows)
        summary = "  ".join(f"{name} {means[name]:.3f}" + (f" ({count} files)" if count < len(rows) else "")
                            for name, count in counts.items())
        print(f"mean over {len(rows)} files of {outdir}: {summary}")
        logging.info("Per-file metrics: %s", outdir / "metrics.csv")
    return 0


if __name__ == "__main__":
    run_main(main)
