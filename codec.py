#!/usr/bin/env python3
"""Compress speech to `.adc` files and back (format: docs/bitstream.md).

    python codec.py encode --model vctk_v1 -i in.wav -o out.adc [--n_codebooks K] [--entropy]
    python codec.py decode -i out.adc -o out.wav [--model NAME]
    python codec.py encode --model vctk_v1 -i wavs/ -o adcs/      # a folder: recursive, tree kept
    python codec.py decode -i adcs/ -o decoded/
    python codec.py info out.adc
    python codec.py fit-entropy --model vctk_v1 -i corpus/train [-o TABLE]

The file names its model; `decode` loads it (or the one --model / --encoder --decoder give, which
must be the same weights: the file stores a fingerprint). `--n_codebooks K` keeps the first K
codebooks (K x 1.6 kbps for an 8 x 1024, hop-300, 48 kHz model). `--entropy` range-codes the codes
with the model's frequency tables (built by fit-entropy, stored beside the encoder checkpoint).

An output that exists is an error unless -f/--force. Given a folder, encode codes every audio file
under it (by extension) and decode every .adc file, into the same tree under the output folder,
loading each model once; a file that fails is reported and the rest go on (exit status 1 at the end).
"""

from __future__ import annotations

if __name__ == "__main__":  # before anything allocates: a faster malloc (utils/runtime/cpu_process.py)
    from utils.runtime.cpu_process import use_fast_malloc

    use_fast_malloc()

import argparse
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from utils.audio import AUDIO_EXTENSIONS, MAX_FILE_CHANNELS, check_audio_output, write_audio_blocks
from utils.batch import find_files, plan, refuse_existing, run_batch
from utils.bitstream.adc import StreamHeader, open_adc
from utils.bitstream.entropy import EntropyModel
from utils.cli import (
    add_input_arguments,
    add_model_arguments,
    add_runtime_arguments,
    apply_runtime_arguments,
    check_n_codebooks,
    input_audio_for,
    list_models,
    load_codec,
    run_main,
)
from utils.errors import ArgumentParser, CodecError, check_at_least
from utils.experiment_config import load_config, output_delay
from utils.files import check_output_folder
from utils.registry import MODELS, installed_root

if TYPE_CHECKING:
    from utils.audiodec import StreamingCodec

# The coding modules (utils.bitstream.codec_file, utils.audiodec) bring torch: each command imports them once
# its arguments and files are checked, so that --help, `info` and the errors before the work answer at once.


def parse_args() -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list-models", action="store_true", help="list the registered models and exit")
    commands = parser.add_subparsers(dest="command", required=True)
    encode = commands.add_parser("encode", help="audio -> .adc")
    add_model_arguments(encode)
    add_runtime_arguments(encode)
    encode.add_argument("-i", "--input", required=True, help="audio file, or a folder of them")
    encode.add_argument("-o", "--output", required=True, help=".adc file, or a folder (with a folder -i)")
    add_input_arguments(encode)
    encode.add_argument("--n_codebooks", type=int, help="keep the first K codebooks (lower bitrate)")
    encode.add_argument("--entropy", action="store_true", help="range-code the codes (lossless, smaller)")
    encode.add_argument("--entropy_table", help="entropy table (default: beside the encoder checkpoint)")
    encode.add_argument("--resample", action="store_true", help="resample input at another rate")
    decode = commands.add_parser("decode", help=".adc -> audio")
    add_model_arguments(decode)
    add_runtime_arguments(decode)
    decode.set_defaults(model=None)
    decode.add_argument("-i", "--input", required=True, help=".adc file, or a folder of them")
    decode.add_argument("-o", "--output", required=True, help="wav file, or a folder (with a folder -i)")
    decode.add_argument("-f", "--force", action="store_true", help="replace output files that exist")
    decode.add_argument("--entropy_table", help="entropy table (default: beside the encoder checkpoint)")
    info = commands.add_parser("info", help="describe an .adc file")
    info.add_argument("file")
    info.add_argument(
        "--decoder",
        help="decoder checkpoint, for a file whose model is not registered: the "
        "audio's length leaves out its output delay (default: the header's model, if installed)",
    )
    info.add_argument("--root", help="folder holding the models' exp/ (default: current folder, then the toolkit)")
    fit = commands.add_parser("fit-entropy", help="estimate a model's entropy tables from audio files")
    add_model_arguments(fit)
    add_runtime_arguments(fit)
    fit.add_argument("-i", "--input", required=True,
                     help="folder of training audio (searched recursively, the extensions folder mode codes)")
    fit.add_argument("-o", "--output", help="table file (default: beside the encoder checkpoint)")
    fit.add_argument("--max_files", type=int, default=2000)
    fit.add_argument("-f", "--force", action="store_true",
                     help="replace a table that exists (files entropy-coded with it then no longer decode)")
    return parser.parse_args()


def run_encode(args: argparse.Namespace) -> None:
    if not os.path.isdir(args.input) and args.output.lower().endswith(AUDIO_EXTENSIONS):
        raise CodecError(f"-o {args.output}: encode writes .adc files, not audio: give an .adc output name")
    pairs = plan(args.input, args.output, AUDIO_EXTENSIONS, ".adc")
    refuse_existing(pairs, args.force)
    codec = load_codec(args)
    from utils.bitstream.codec_file import encode_to_file, load_entropy_model, model_entropy_table

    check_n_codebooks(codec, args.n_codebooks)
    entropy = load_entropy_model(codec, model_entropy_table(codec, args.entropy_table)) if args.entropy else None

    headers: list[StreamHeader] = []  # what each file's header says, for the log line

    def encode(source: Path, output: Path) -> float:
        audio = input_audio_for(codec, str(source), args.resample, args.allow_truncated)
        header = encode_to_file(codec, audio, str(output), args.n_codebooks, entropy)
        headers.append(header)
        seconds = (header.n_samples - codec.output_delay) / codec.sample_rate
        size = os.path.getsize(output)
        logging.debug(f"wrote {output}: {size} bytes, {_kbps(size, seconds)}")
        return seconds

    if os.path.isdir(args.input):
        run_batch(pairs, encode, "encode")
        return
    seconds = encode(*pairs[0])
    header = headers[0]
    size = os.path.getsize(args.output)
    codes = f"codes at {header.bitrate / 1000:.2f} kbps"
    if header.entropy_coded:
        detail = f"range-coded {codes}"
    else:
        detail = f"raw {codes}" + ("; entropy coding would not make it smaller" if args.entropy else "")
    logging.info(f"wrote {args.output}: {size} bytes, {_kbps(size, seconds)} ({detail})")


def _kbps(size: int, seconds: float) -> str:
    """A file's bitrate for the log (a file of no audio has none)."""
    return f"{size * 8 / seconds / 1000:.2f} kbps" if seconds else "no audio"


CHECKPOINTS = "--encoder"  # what FileDecoder calls the model --encoder and --decoder give


def run_decode(args: argparse.Namespace) -> None:
    pairs = plan(args.input, args.output, (".adc",), ".wav")
    refuse_existing(pairs, args.force)
    if not os.path.isdir(args.input):
        check_audio_output(args.output)  # before the decoding, not after it
    from utils.bitstream.codec_file import FileDecoder

    device = apply_runtime_arguments(args)

    def load(name: str) -> StreamingCodec:
        return load_codec(argparse.Namespace(**{**vars(args), "model": None if name == CHECKPOINTS else name}), device)

    # each model loaded once, on the first file that names it
    decoder = FileDecoder(load, args.model or (CHECKPOINTS if args.encoder else None), args.entropy_table,
                          MAX_FILE_CHANNELS)

    def decode(source: Path, output: Path) -> float:
        blocks, rate, channels = decoder.decode_blocks(source)
        return write_audio_blocks(str(output), blocks, rate, channels, "PCM_16") / rate

    if os.path.isdir(args.input):
        run_batch(pairs, decode, "decode")
        return
    decode(*pairs[0])
    logging.info(f"wrote {args.output}")


def run_info(args: argparse.Namespace) -> None:
    adc = open_adc(args.file)
    header = adc.header
    if not header.entropy_coded:
        adc.codes()  # the payload's codes too; an entropy-coded one needs its table for that
    size = os.path.getsize(args.file)
    delay = _output_delay_of(header.named_model, args.decoder, args.root)
    samples = max(0, header.n_samples - (delay or 0))  # the decoder gives none before its delay
    seconds = samples / header.sample_rate
    if delay is None:
        length = (
            f"{header.n_samples} samples coded, {header.n_frames} frames; with its decoder, if it declares an "
            "output delay, the audio is that much shorter: --decoder CHECKPOINT"
        )
    elif delay:
        length = (
            f"{samples} samples; {header.n_samples} coded with the model's output delay of {delay}, "
            f"{header.n_frames} frames"
        )
    else:
        length = f"{samples} samples, {header.n_frames} frames"
    model = header.named_model or "(none: decode with --encoder and --decoder)"
    print(f"model         {model} (decoder {header.decoder_hash.hex()})")
    print(f"sample rate   {header.sample_rate} Hz, hop {header.hop}")
    print(f"channels      {header.channels}")
    print(f"duration      {seconds:.3f} s ({length})")
    print(f"codebooks     {header.n_codebooks} x {header.codebook_size} ({header.bits_per_code} bits per code)")
    print(f"entropy coded {'yes' if header.entropy_coded else 'no'}")
    whole = f"{size * 8 / seconds / 1000:.2f} kbps" if seconds else "no audio"
    print(f"bitrate       {header.bitrate / 1000:.2f} kbps (codes), {whole} (file)")


def _output_delay_of(model_name: str, decoder: str | None, root: str | None) -> int | None:
    """The output delay the decoding model declares (samples its `n_samples` counts beyond the audio),
    read from its config.yml without loading weights; None when the model is not at hand."""
    if decoder is None:
        if model_name not in MODELS:
            return None
        entry = MODELS[model_name]
        folder = installed_root(entry, root)
        if folder is None:
            return None
        decoder = os.path.join(folder, entry.decoder)
    elif not os.path.isfile(decoder):
        raise CodecError(f"decoder checkpoint {decoder} not found: check --decoder")
    return output_delay(load_config(decoder))


def run_fit_entropy(args: argparse.Namespace) -> None:
    check_at_least("max_files", args.max_files, 1)
    if not os.path.isdir(args.input):
        raise CodecError(f"-i {args.input} is not a folder: give a folder of training audio")
    files = find_files(args.input, AUDIO_EXTENSIONS)[: args.max_files]  # the audio folder mode codes
    if not files:
        raise CodecError(f"no audio files ({'/'.join(AUDIO_EXTENSIONS)}) under {args.input}: "
                         "give a folder of training audio")
    if args.output:
        check_output_folder(args.output)  # before the model is loaded and the files coded
    codec = load_codec(args)
    from utils.bitstream.codec_file import model_entropy_table

    output = args.output or model_entropy_table(codec)
    if not args.output:  # (a given -o was checked before the model was loaded)
        check_output_folder(output)
    if os.path.exists(output) and not args.force:
        raise CodecError(f"{output} exists already: pass -f/--force to replace it (files entropy-coded with it "
                         "then no longer decode), or give another -o")
    all_codes = []
    for path in tqdm(files, desc="fit-entropy", unit="file"):
        codes, _ = codec.encode_audio(input_audio_for(codec, path, allow_resample=True))
        all_codes.extend(codes.cpu().numpy())
    model = EntropyModel.fit(all_codes, codec.codebook_size)
    model.save(output)
    frames = sum(c.shape[-1] for c in all_codes)
    logging.info(f"entropy table from {len(files)} files ({frames} frames) -> {output}")


def listing_root() -> tuple[bool, str | None]:
    """Whether the line asks for --list-models (with its --root), whatever else it lacks: a command's
    required -i/-o would otherwise refuse the listing its --help offers."""
    listing = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    listing.add_argument("--list-models", action="store_true")
    listing.add_argument("--root")
    try:
        known, _ = listing.parse_known_args()
    except argparse.ArgumentError:  # (`--root` without a folder, say): the command's own parser says so
        return False, None
    return known.list_models, known.root


def main() -> None:
    wanted, root = listing_root()
    if wanted:
        list_models(root)
        return
    args = parse_args()
    {"encode": run_encode, "decode": run_decode, "info": run_info, "fit-entropy": run_fit_entropy}[args.command](args)


if __name__ == "__main__":
    run_main(main)
