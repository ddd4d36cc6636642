#!/usr/bin/env python3
"""Statistics of the analyzer's quantized latent (mean and scale per channel) for vocoder training.

    python codecStatistic.py -c config/statistic/demo_48000_hop300.yaml --subset train
    python codecStatistic.py -c ... --analyzer myexp/autoencoder/X/checkpoint-200000steps.pkl

Writes the config's ``stats`` file: float32 (2, code_dim), row 0 mean, row 1 scale.
"""

from __future__ import annotations

import argparse
import logging

from trainer.options import read_config
from utils.cli import file_count, run_main
from utils.errors import ArgumentParser, CodecError
from utils.files import make_output_folder


def main() -> int:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", type=str, required=True, help="statistics recipe (YAML)")
    parser.add_argument("--subset", type=str, default="train", help="data.subset entry to read")
    parser.add_argument("--subset_num", type=file_count, default=-1, help="only the first N files (-1: all)")
    parser.add_argument("--analyzer", type=str, default="",
                        help="encoder checkpoint whose codes are counted; overrides the config's 'analyzer'")
    args = parser.parse_args()
    config = read_config(args.config)
    if args.analyzer:
        config["analyzer"] = args.analyzer
    if "stats" not in config:
        raise CodecError(f"{args.config} has no 'stats' entry: name the .npy file to write")
    import torch  # (after the checks above, which answer without it: seconds)

    from dataloader import subset_path
    from trainer.analysis import compute_code_statistics, save_statistics, statistics_path

    try:
        subset_path(config, args.subset)  # before the stats folder is made
    except ValueError as error:
        raise CodecError(f"{args.config}: {error}") from None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    stats_path = statistics_path(config["stats"])
    make_output_folder(stats_path.parent, "the config's stats", given=config["stats"])  # before the pass
    stats = compute_code_statistics(config, args.subset, args.subset_num, device=device)
    save_statistics(stats, config["stats"])
    logging.info("Wrote %s: mean and scale of %d channels", stats_path, stats.shape[1])
    return 0


if __name__ == "__main__":
    run_main(main)
