"""Shared pieces of the command-line tools: one-line errors, device choice, model loading."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

import torch

from utils.audiodec import StreamingCodec
from utils.errors import CodecError
from utils.registry import MODELS


def run_main(main: Callable[[], int | None]) -> None:
    """Run a CLI body: a CodecError (or Ctrl-C) becomes one line on stderr and a non-zero exit."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        sys.exit(main() or 0)
    except CodecError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def pick_device(cuda: int) -> str:
    """`--cuda N` -> 'cuda:N' when CUDA exists; negative or no CUDA -> 'cpu' (with a notice)."""
    if cuda < 0:
        return "cpu"
    if not torch.cuda.is_available():
        logging.info("CUDA is not available: running on the CPU")
        return "cpu"
    if cuda >= torch.cuda.device_count():
        raise CodecError(f"--cuda {cuda}: this machine has {torch.cuda.device_count()} GPU(s); use 0..N-1 or -1")
    return f"cuda:{cuda}"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model / --encoder / --decoder / --root / --list-models."""
    parser.add_argument("--model", default="libritts_v1", help="registered model name (see --list-models)")
    parser.add_argument("--encoder", help="encoder checkpoint (instead of --model)")
    parser.add_argument("--decoder", help="decoder checkpoint (instead of --model)")
    parser.add_argument("--root", help="folder holding the models' exp/ (default: current folder, then the toolkit)")
    parser.add_argument("--list-models", action="store_true", help="list the registered models and exit")


def list_models() -> None:
    for entry in MODELS.values():
        print(f"{entry.name:20s} {entry.sample_rate:6d} Hz  {entry.description}")


def load_codec(args: argparse.Namespace, device: str) -> StreamingCodec:
    """The codec that --model or --encoder/--decoder name."""
    if bool(args.encoder) != bool(args.decoder):
        raise CodecError("give both --encoder and --decoder, or neither (and --model)")
    if args.encoder:
        return StreamingCodec.from_checkpoints(args.encoder, args.decoder, device=device)
    return StreamingCodec.from_name(args.model, root=args.root, device=device)
