#!/usr/bin/env python3
"""Train a model of a recipe: autoencoder, vocoder or denoising encoder (the config's train_mode).

    python codecTrain.py -c config/autoencoder/demo_48000_hop300.yaml --tag autoencoder/demo_48000_hop300
    torchrun --nproc_per_node 4 codecTrain.py -c ... --tag ...          # DDP, one process per GPU
    python codecTrain.py -c ... --tag ... --resume auto                 # continue from the newest checkpoint
    python codecTrain.py -c ... --tag ... --initial exp/.../checkpoint-9500steps.pkl   # fine-tune from parameters
"""

from __future__ import annotations

import argparse

from trainer.builder import TrainOptions, run_training
from utils.cli import run_main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", type=str, required=True, help="recipe config (YAML)")
    parser.add_argument("--tag", type=str, required=True, help="experiment name: writes to <exp_root>/<tag>/")
    parser.add_argument("--exp_root", type=str, default="exp", help="experiment root folder")
    parser.add_argument(
        "--resume", type=str, default="", nargs="?",
        help="checkpoint to resume from, or 'auto' for the newest one of the experiment (default: none)",
    )
    parser.add_argument(
        "--initial", type=str, default="",
        help="start from this checkpoint's parameters (fresh optimizers, step 0); overrides the config's 'initial'",
    )
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--disable_cudnn", choices=("True", "False"), default="False", help="no cuDNN benchmark")
    args = parser.parse_args()
    run_training(TrainOptions(**{**vars(args), "resume": args.resume or ""}))
    return 0


if __name__ == "__main__":
    run_main(main)
