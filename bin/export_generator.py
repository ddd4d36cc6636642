"""Write a checkpoint's generator alone, compactly, for distribution (a model file in a repository or
an archive), in the original format.

    python bin/export_generator.py exp/autoencoder/RUN/checkpoint-NNNsteps.pkl \\
        exp/autoencoder/MODEL/checkpoint-NNNsteps.pkl [--dtype bf16|fp16|fp32] [--reset_codebook_statistics] [-f]

Keeps ``model.generator`` (the original key names), ``steps`` and ``epochs``; drops the
discriminators and the optimizer and scheduler states. ``--dtype`` stores the floating tensors in
half the bytes (``bf16``, ``fp16``); both the original's code and ours cast them back to float32 when
they load them. ``--reset_codebook_statistics`` also stores each EMA codebook's statistics in their
reset state, which takes no bytes of its own (utils/checkpoint.py: ``compact_generator_state``).

The source's ``config.yml`` is copied beside the output when the output's folder has none; one
there is kept when it describes the same model (``INFERENCE_KEYS``: its training settings may
differ, as for a model folder whose config is a recipe with comments), and is an error otherwise.
For an autoencoder the script codes a speech-like probe with the source and with the output and
prints how far apart they are (codes that differ, output SNR).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

import torch  # noqa: E402
import yaml  # noqa: E402

from models.registry import AUTOENCODER_TYPES  # noqa: E402
from utils.audiodec import StreamingCodec  # noqa: E402
from utils.checkpoint import (  # noqa: E402
    STORAGE_DTYPES,
    atomic_torch_save,
    compact_generator_state,
    read_checkpoint,
)
from utils.cli import run_main  # noqa: E402
from utils.errors import ArgumentParser, CodecError  # noqa: E402
from utils.eval.metrics import snr_db  # noqa: E402
from utils.eval.probe import speech_like_signal  # noqa: E402
from utils.experiment_config import config_path_for, load_config  # noqa: E402
from utils.files import check_output_folder, make_output_folder, write_bytes_atomic  # noqa: E402

PROBE_SECONDS = 2.0
INFERENCE_KEYS = ("model_type", "sampling_rate", "generator_params", "output_delay")  # what loading reads


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="source checkpoint (config.yml beside it)")
    parser.add_argument("output", help="the generator-only checkpoint to write (.pkl)")
    parser.add_argument("--dtype", choices=sorted(STORAGE_DTYPES), default="fp32",
                        help="storage type of the floating tensors (default: fp32, as trained)")
    parser.add_argument("--reset_codebook_statistics", action="store_true",
                        help="store the EMA codebook statistics in their reset state (no bytes of their own)")
    parser.add_argument("-f", "--force", action="store_true", help="replace an output that exists")
    return parser.parse_args(argv)


def probe_difference(source: str, exported: str, sample_rate: int) -> tuple[float, float]:
    """Both autoencoders on the same speech-like probe: (fraction of codes that differ, SNR in dB of
    the exported model's output against the source's)."""
    probe = torch.from_numpy(speech_like_signal(PROBE_SECONDS, sample_rate)).view(1, 1, -1)
    codes_a, y_a = StreamingCodec.from_checkpoints(source, source).code(probe)
    codes_b, y_b = StreamingCodec.from_checkpoints(exported, exported).code(probe)
    return (codes_a != codes_b).double().mean().item(), snr_db(y_a.numpy(), y_b.numpy())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = load_config(args.checkpoint)
    make_output_folder(os.path.dirname(os.path.abspath(args.output)), "output", args.output)
    check_output_folder(args.output)  # a folder takes no checkpoint
    if os.path.exists(args.output):
        if os.path.samefile(args.output, args.checkpoint):
            raise CodecError(f"{args.output} is the source checkpoint itself: export to another file (the export "
                             "keeps the generator only, and the source its training state)")
        if not args.force:
            raise CodecError(f"{args.output} exists already: pass -f/--force to replace it")
    state = read_checkpoint(args.checkpoint)
    source_config, target_config = config_path_for(args.checkpoint), config_path_for(args.output)
    if os.path.exists(target_config):
        target = yaml.safe_load(Path(target_config).read_text()) or {}
        changed = [key for key in INFERENCE_KEYS if target.get(key) != config.get(key)]
        if changed:
            raise CodecError(f"{target_config} describes another model than {source_config} ({', '.join(changed)} "
                             "differ): remove it, or export to another folder")
    generator = compact_generator_state(
        state["model"]["generator"], STORAGE_DTYPES[args.dtype], args.reset_codebook_statistics
    )
    exported = {"model": {"generator": generator}, "steps": state.get("steps"), "epochs": state.get("epochs")}
    if config["model_type"] in AUTOENCODER_TYPES:
        with tempfile.TemporaryDirectory() as folder:  # checked before anything is written where asked
            trial = os.path.join(folder, os.path.basename(args.output))
            atomic_torch_save(exported, trial)
            shutil.copyfile(source_config, config_path_for(trial))
            differ, snr = probe_difference(args.checkpoint, trial, int(config["sampling_rate"]))
        print(f"on a {PROBE_SECONDS:g} s speech-like probe: {100 * differ:.2f}% of the codes differ, "
              f"output SNR {snr:.1f} dB against the source")
    atomic_torch_save(exported, args.output)
    if not os.path.exists(target_config):
        write_bytes_atomic(target_config, Path(source_config).read_bytes())
    print(f"wrote {args.output}: {os.path.getsize(args.output) / 1e6:.2f} MB "
          f"({os.path.getsize(args.checkpoint) / 1e6:.2f} MB before)")
    return 0


if __name__ == "__main__":
    run_main(main)
