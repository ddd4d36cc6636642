#!/usr/bin/env python3
"""Train a model of a recipe: autoencoder, vocoder or denoising encoder (the config's train_mode).

    python codecTrain.py -c config/autoencoder/demo_48000_hop300.yaml --tag autoencoder/demo_48000_hop300
    torchrun --nproc_per_node 4 codecTrain.py -c ... --tag ...          # DDP, one process per GPU
    python -m trainer.torchrun --nproc_per_node 4 codecTrain.py ...     # the same; a stop signal then exits 0
    python codecTrain.py -c ... --tag ... --resume auto                 # continue from the newest checkpoint
    python codecTrain.py -c ... --tag ... --initial exp/.../checkpoint-9500steps.pkl   # fine-tune from parameters
    torchrun --nproc_per_node 8 codecTrain.py -c ... --tag ... --ngpu 8 --precision bf16 --compile

The config's batch_size is the global batch, shared by the processes (see docs/training.md).
"""

from __future__ import annotations

if __name__ == "__main__":  # before anything allocates: a faster malloc (utils/runtime/cpu_process.py)
    from utils.runtime.cpu_process import use_fast_malloc

    use_fast_malloc()

import argparse  # noqa: E402

from trainer.options import COMPILE_SETTINGS, TrainOptions, read_config  # noqa: E402
from utils.cli import run_main  # noqa: E402
from utils.errors import ArgumentParser  # noqa: E402


def _compile_setting(text: str) -> str | bool:
    """``--compile``'s value: generator or all (a bare ``--compile`` is ``true``)."""
    if text not in COMPILE_SETTINGS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(COMPILE_SETTINGS)}")
    return text


def main() -> int:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    parser.add_argument(
        "--analyzer", type=str, default="",
        help="a vocoder recipe's frozen encoder checkpoint (it learns from its codes); overrides the config's analyzer",
    )
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--disable_cudnn", choices=("True", "False"), default="False", help="no cuDNN benchmark")
    parser.add_argument(
        "--ngpu", type=int, default=None,
        help="GPUs per node this job asked for: fewer visible is an error; 0 trains on the CPU "
        "(default: CUDA when present, else the CPU)",
    )
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default=None,
                        help="autocast precision of the forward passes (default: the config's, else fp32)")
    parser.add_argument("--compile", nargs="?", const=True, default=None, type=_compile_setting,
                        metavar="generator|all",
                        help="torch.compile the generator and, on a GPU, the discriminator; 'all': both on any "
                        "device, 'generator': the generator only (default: the config's, else none)")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="compile nothing")
    parser.add_argument("--fast_conv", action=argparse.BooleanOptionalAction, default=None,
                        help="CPU training: convolutions through faster kernels, the generator's time-major on "
                        "AVX-512 CPUs (the discriminators' too in bf16), and the generator's ELUs and LeakyReLUs on "
                        "the native engine (the same sums in another order: not bit-identical to the original "
                        "trainer)")
    parser.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=None,
                        help="TF32 matmuls/convolutions on Ampere and newer GPUs (default: on)")
    parser.add_argument("--batch_size_per_rank", type=int, default=None,
                        help="samples per process and step: the global batch becomes processes x this "
                        "(default: the config's batch_size is the global batch, shared by the processes)")
    parser.add_argument("--micro_batch", type=int, default=None,
                        help="at most this many samples per forward pass; the rest of a process's share is "
                        "accumulated (for batches that do not fit in memory)")
    parser.add_argument("--ddp_bf16_compress", action=argparse.BooleanOptionalAction, default=None,
                        help="all-reduce the discriminator's gradients as bfloat16")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per process (default: torch's choice, one per core)")
    parser.add_argument("--cpu_budget_minutes", type=float, default=None,
                        help="stop after this many minutes of the process's CPU time in training steps "
                        "(a checkpoint and a learning-curve point are written); for runs compared at equal CPU")
    args = parser.parse_args()
    options = TrainOptions(**{**vars(args), "resume": args.resume or ""})  # its errors before torch loads
    read_config(options.config)
    from trainer.builder import run_training

    run_training(options)
    return 0


if __name__ == "__main__":
    run_main(main)
