#!/usr/bin/env python3
"""Code a file with a streaming codec: wav -> codes -> wav (the original's file demo, plus more).

    python demoFile.py --model vctk_v1 -i in.wav -o out.wav [--cuda N] [--num_threads N]
    python demoFile.py --encoder ENC.pkl --decoder DEC.pkl -i in.wav -o out.wav
    python demoFile.py --model vctk_v1 -i wavs/ -o coded/ [-f]     # a folder: recursive, tree kept
    python demoFile.py --list-models

A file at another sample rate is an error unless --resample is given (then it is resampled with
soxr, and the output is written at the model's rate). A mono model codes every channel of the
file as its own stream. A single output file that exists is replaced (as the original does; the
log says so); in folder mode an existing output is an error unless -f/--force. Folder mode codes
every audio file under -i (by extension) with the model loaded once, into the same tree under -o
(as .wav); a file that fails is reported and the rest go on (exit status 1 at the end).
"""

if __name__ == "__main__":  # before anything allocates: a faster malloc (utils/runtime/cpu_process.py)
    from utils.runtime.cpu_process import use_fast_malloc

    use_fast_malloc()

import argparse
import io
import logging
import os
from pathlib import Path

import numpy as np

from utils.audio import AUDIO_EXTENSIONS, CheckedBlocks, audio_blocks_writer, check_audio_output
from utils.batch import plan, refuse_existing, run_batch
from utils.cli import (
    add_input_arguments,
    add_model_arguments,
    add_runtime_arguments,
    check_n_codebooks,
    input_audio_for,
    list_models,
    load_codec,
    run_main,
)
from utils.errors import ArgumentParser, CodecError
from utils.files import check_output_folder, same_path, write_outputs


def parse_args() -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("-i", "--input", help="input audio file, or a folder of them")
    parser.add_argument("-o", "--output", help="output wav file (PCM_16), or a folder (with a folder -i)")
    add_input_arguments(parser)
    add_runtime_arguments(parser)
    parser.add_argument("--n_codebooks", type=int, help="decode with the first K codebooks only (lower bitrate)")
    parser.add_argument("--resample", action="store_true", help="resample input at another rate instead of failing")
    parser.add_argument("--save_codes", help="also write the transmitted codes (.npy, offset per codebook)")
    return parser.parse_args()


def _check_codes_path(path: str, source: str, output: str) -> None:
    """--save_codes names a file of its own, in a folder that takes it (before the coding)."""
    check_output_folder(path)
    if os.path.exists(source) and same_path(path, source):
        raise CodecError(f"--save_codes {path} is the input file: give another name (the input would be lost)")
    if same_path(path, output):
        raise CodecError(f"--save_codes {path} is the -o file too: give the codes a name of their own (.npy)")


def main() -> None:
    args = parse_args()
    if args.list_models:
        list_models(args.root)
        return
    if not args.input or not args.output:
        raise CodecError("give -i INPUT and -o OUTPUT (or --list-models)")
    folder_mode = os.path.isdir(args.input)
    if folder_mode and args.save_codes:
        raise CodecError("--save_codes names one file: code one file at a time to save its codes")
    pairs = plan(args.input, args.output, AUDIO_EXTENSIONS, ".wav")
    if folder_mode:
        refuse_existing(pairs, args.force)
    else:
        check_audio_output(args.output)  # before the coding, not after it
        if args.save_codes:
            _check_codes_path(args.save_codes, args.input, args.output)
    codec = load_codec(args)  # (with --cuda and --num_threads applied)
    check_n_codebooks(codec, args.n_codebooks)

    def code_file(source: Path, output: Path) -> float:
        audio = input_audio_for(codec, str(source), args.resample, args.allow_truncated)
        kept = codec.checked_codebooks(args.n_codebooks)
        # read and coded a piece at a time, decoded a block at a time as the file is written: neither the
        # input nor the decoded audio is ever whole in memory
        codes, samples = codec.encode_audio(audio)  # (a bad sample or shape is found here, before the log line)
        codes = codes[:, :kept]
        (logging.debug if folder_mode else logging.info)(
            f"coding {samples / codec.sample_rate:.2f} s, {codes.shape[0]} stream(s), "
            f"{codec.bitrate(args.n_codebooks) / 1000:.1f} kbps"
        )
        pieces = codec.decode_signal_blocks(codes, samples)
        decoded = CheckedBlocks(output, map(codec.audio_from_streams, pieces), codec.sample_rate)
        replacing = output.exists()
        outputs = {output: audio_blocks_writer(decoded, codes.shape[0] * codec.output_channels, "PCM_16")}
        if args.save_codes:  # what is transmitted: the first n_codebooks
            offsets = np.arange(codes.shape[1]).reshape(1, -1, 1) * codec.codebook_size
            flat = codes.cpu().numpy() + offsets
            stream = io.BytesIO()
            np.save(stream, flat[0] if flat.shape[0] == 1 else flat)
            outputs[Path(args.save_codes)] = stream.getvalue()
        write_outputs(outputs)  # both or neither
        if replacing:
            logging.info(f"replaced the existing {output}")
        return samples / codec.sample_rate

    if folder_mode:
        run_batch(pairs, code_file, "demoFile")
        return
    code_file(*pairs[0])
    logging.info(f"wrote {args.output}")


if __name__ == "__main__":
    run_main(main)
