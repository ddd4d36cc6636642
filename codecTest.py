#!/usr/bin/env python3
"""Code every file of a test subset with an encoder and a decoder checkpoint (offline), as the original.

    python codecTest.py --subset test --encoder exp/autoencoder/X/checkpoint-200000steps.pkl \\
        --decoder exp/vocoder/Y/checkpoint-500000steps.pkl --output_dir output/vocoder/Y [--metrics]

Writes <output_dir>/<encoder>-<decoder>_<steps>-<steps>/<subset folder>/<name>_output.wav
(or straight into --output_dir with --specific_folder True). --metrics scores each output against its
input (a denoiser's noisy_* subset: against the clean_* files) and writes metrics.csv there.
"""

from __future__ import annotations

import argparse
import logging

import torch

from trainer.synthesis import run_test
from utils.cli import run_main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subset", type=str, default="clean_test", help="data.subset entry of the encoder's config")
    parser.add_argument("--subset_num", type=int, default=-1, help="only the first N files (-1: all)")
    parser.add_argument("--encoder", type=str, required=True, help="AudioDec checkpoint (config.yml beside it)")
    parser.add_argument("--decoder", type=str, required=True, help="AudioDec or vocoder checkpoint")
    parser.add_argument("--output_dir", type=str, required=True)
    parser.add_argument("--specific_folder", choices=("True", "False"), default="False",
                        help="write into --output_dir itself")
    parser.add_argument("--metrics", action="store_true", help="score the outputs (utils.metrics)")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    outdir, means = run_test(
        args.encoder, args.decoder, args.output_dir, args.subset, args.subset_num,
        specific_folder=args.specific_folder == "True", metrics=args.metrics, device=device,
    )
    if means is not None:
        summary = "  ".join(f"{name} {value:.3f}" for name, value in means.items())
        print(f"mean over {outdir}: {summary}")
        logging.info("Per-file metrics: %s", outdir / "metrics.csv")
    return 0


if __name__ == "__main__":
    run_main(main)
