#!/usr/bin/env python3
"""Stream live audio through a codec: microphone -> encoder -> decoder -> speaker (the original's demo).

    python demoStream.py --model vctk_v1 --tx_cuda -1 --rx_cuda -1 --input_device 1 --output_device 4
    python demoStream.py --model vctk_sym --input_file in.wav --no-pace -o out.wav   # headless
    python demoStream.py --model vctk_sym --receive 5004 [-o out.wav]                # receiver process
    python demoStream.py --model vctk_sym --send 127.0.0.1:5004 [--input_file in.wav] # sender process
    python demoStream.py --list-devices

Every mode stops on Return, Ctrl-C (or SIGTERM), after --duration seconds, or at the end of
--input_file, then writes its dumps, prints the encoder and decoder time per frame, the latency from
capture to decoded output, and frame drops, and exits 0. -i / -o dump the captured input and the
decoded output as float wav, frame by frame in input order (a dropped frame is silence there), the
output aligned with the input (a model's output delay taken off its front; a file is followed by
that many zeros so that the output holds all of it). With --input_file (or --receive) the output
goes to a speaker only when -o is not given or --output_device is. A receiver that got no packets,
or whose first packets come from a sender with another model or stream format, says so and exits 1
without writing anything.
"""

if __name__ == "__main__":  # before anything allocates: a faster malloc (utils/runtime/cpu_process.py)
    from utils.runtime.cpu_process import use_fast_malloc

    use_fast_malloc()

import argparse
import logging
import math
import os
from collections.abc import Callable

import numpy as np

from utils import live as stream
from utils.audio import check_audio_output, read_audio, warn_if_input_beyond_full_scale, write_audio
from utils.cli import (
    add_model_arguments,
    default_num_threads,
    list_models,
    load_codec,
    pick_device,
    run_main,
    set_num_threads,
)
from utils.errors import ArgumentParser, CodecError, check_at_least
from utils.files import same_path
from utils.runtime.cpu_process import in_passing_thread

DUMP_SUBTYPE = "FLOAT"  # the dumps keep the samples as computed


def parse_args() -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser, default_model="libritts_sym")
    parser.add_argument("-i", "--input", help="dump the captured input to this wav file")
    parser.add_argument("-o", "--output", help="dump the decoded output to this wav file")
    parser.add_argument("--tx_cuda", type=int, default=-1, help="GPU of the transmitter; -1 = CPU")
    parser.add_argument("--rx_cuda", type=int, default=-1, help="GPU of the receiver; -1 = CPU")
    parser.add_argument("--input_device", help="capture device index or name (default: the system's)")
    parser.add_argument("--output_device", help="playback device index or name (default: the system's)")
    parser.add_argument("--list-devices", action="store_true", help="list the audio devices and exit")
    parser.add_argument("--frame_size", type=int, default=1200, help="samples per frame, a multiple of the hop")
    parser.add_argument("--num_threads", type=int, help="CPU threads (default: 4, at most the cores available)")
    parser.add_argument("--worker_threads", default="auto",
                        help="threads of each of the encoder and decoder threads: a count, or 'auto' (when the "
                             "two sides cost about the same, they overlap with half of --num_threads each; else "
                             "one thread encodes and decodes each frame with all of them)")
    parser.add_argument("--max_latency", type=float, default=0.1,
                        help="seconds a frame may take from capture to output before frames are dropped; a "
                             "receiver's audio waiting for the speaker beyond it is dropped too (0 = never)")
    parser.add_argument("--duration", type=float, help="stop after this many seconds (any mode)")
    parser.add_argument("--input_file", help="stream this audio file instead of the microphone")
    parser.add_argument("--no-pace", dest="pace", action="store_false",
                        help="with --input_file: as fast as possible instead of in real time")
    parser.add_argument("--send", metavar="HOST:PORT", help="be the transmitter: send codes over UDP")
    parser.add_argument("--receive", metavar="PORT", type=int, help="be the receiver: decode codes from UDP")
    parser.add_argument("--bind", default="127.0.0.1", help="address the receiver listens on")
    parser.add_argument("--expect_frames", type=int, help="receiver: stop after this many frames (packets)")
    parser.add_argument("--idle_timeout", type=float, help="receiver: stop after this many seconds without packets")
    parser.add_argument("--drop_rate", type=float, default=0.0,
                        help="--send: leave out this fraction of packets at random, to try the receiver's "
                             "loss concealment (default 0)")
    parser.add_argument("--drop_seed", type=int, help="--send: seed of --drop_rate's draws (default: a fresh one)")
    return parser.parse_args()


def _check_args(args: argparse.Namespace) -> None:
    if args.num_threads is None:
        args.num_threads = default_num_threads()
    check_at_least("num_threads", args.num_threads, 1)
    if args.worker_threads != "auto":
        if not args.worker_threads.isdigit() or int(args.worker_threads) < 1:
            raise CodecError(f"--worker_threads {args.worker_threads}: give 'auto' or a count of 1 or more")
        args.worker_threads = int(args.worker_threads)
    if args.send and args.receive is not None:
        raise CodecError("give --send or --receive, not both (run two processes)")
    if args.receive is not None and not 0 < args.receive < 65536:
        raise CodecError(f"--receive {args.receive}: give a port in 1..65535")
    if not 0 <= args.max_latency < math.inf:  # also NaN
        raise CodecError(f"--max_latency {args.max_latency}: give seconds, 0 or more (0: never drop frames)")
    for option in ("duration", "idle_timeout"):
        value = getattr(args, option)
        if value is not None and not value > 0:
            raise CodecError(f"--{option} {value}: give a number of seconds above 0")
    check_at_least("expect_frames", args.expect_frames, 1)
    if not 0 <= args.drop_rate < 1:
        raise CodecError(f"--drop_rate {args.drop_rate}: give a value in [0, 1)")
    if args.receive is not None and args.input_file:
        raise CodecError("--input_file is for the sender (or the one-process demo), not --receive")
    if args.input_file is None and not args.pace:
        raise CodecError("--no-pace needs --input_file (a microphone keeps its own time)")
    dumps = [(option, path) for option, path in (("-i", args.input), ("-o", args.output)) if path]
    for option, path in dumps:  # written at the end: a path that cannot take them fails now
        check_audio_output(path, DUMP_SUBTYPE)
        if args.input_file and os.path.exists(args.input_file) and same_path(path, args.input_file):
            raise CodecError(f"{option} {path} is the --input_file: give the dump another name (the recording "
                             "would be lost)")
    if len(dumps) == 2 and same_path(args.input, args.output):
        raise CodecError(f"-i and -o both name {args.output}: give each dump a file of its own")


def _read_input_file(args: argparse.Namespace, sample_rate: int) -> np.ndarray:
    """The --input_file's samples (T, C), read whole as float32: what the stream codes and the -i dump writes."""
    data, rate = read_audio(args.input_file, dtype="float32")
    warn_if_input_beyond_full_scale(args.input_file, data)
    if rate != sample_rate:
        raise CodecError(f"{args.input_file} is at {rate} Hz but the model codes {sample_rate} Hz: convert it first")
    return data


def _dump(path: str | None, audio: Callable[[], np.ndarray], rate: int) -> None:
    """Write `audio()` to `path` when a dump was asked for (the stream kept its blocks only then)."""
    if path:
        write_audio(path, audio(), rate, DUMP_SUBTYPE)
        logging.info(f"wrote {path}")


def run_receiver(args: argparse.Namespace) -> None:
    codec = load_codec(args, pick_device(args.rx_cuda))
    device = stream.parse_device(args.output_device)
    play = args.output_device is not None or not args.output
    if play:
        stream.check_device("output", device, codec.output_channels, codec.sample_rate)
    sock = stream.bind_udp(args.bind, args.receive)
    receiver = stream.Receiver(codec, sock, args.expect_frames, args.idle_timeout, duration=args.duration,
                               keep_output=bool(args.output))
    logging.info(f"listening on {args.bind}:{args.receive}")
    stream.receive(receiver, device, play, args.max_latency)
    if receiver.session is None:
        raise CodecError(f"no stream packets arrived on {args.bind}:{args.receive}, nothing was written: check that "
                         f"the sender's --send names this address and that it is running")
    _dump(args.output, receiver.output_audio, codec.sample_rate)
    print(receiver.report())


def run_sender(args: argparse.Namespace) -> None:
    codec = in_passing_thread(load_codec, args, pick_device(args.tx_cuda))
    address = stream.parse_address(args.send)
    if args.input_file:
        data = _read_input_file(args, codec.sample_rate)
        sender = stream.Sender(codec, args.frame_size, data.shape[1], address, args.max_latency,
                               args.drop_rate, args.drop_seed, keep_input=False)
        logging.info(f"sending {args.input_file} to {address[0]}:{address[1]} [press Return or Ctrl-C to stop]")
        sent = stream.send_file(sender, data, args.pace, args.duration)
        _dump(args.input, lambda: data[:sent], codec.sample_rate)  # what the stream captured: the file's start
    else:
        device = stream.parse_device(args.input_device)
        stream.check_device("input", device, codec.input_channels, codec.sample_rate)
        sender = stream.Sender(codec, args.frame_size, codec.input_channels, address, args.max_latency,
                               args.drop_rate, args.drop_seed, keep_input=bool(args.input))
        stream.send_device(sender, device, args.duration)
        _dump(args.input, sender.input_audio, codec.sample_rate)
    print(sender.stats.report())


def run_local(args: argparse.Namespace) -> None:
    tx_device, rx_device = pick_device(args.tx_cuda), pick_device(args.rx_cuda)
    # Loaded in a thread that ends, as the pipeline's set-up: worker threads code, and an OpenMP pool
    # left here would slow theirs down where the runtime cannot release it (utils/runtime/cpu_process.py).
    tx = in_passing_thread(load_codec, args, tx_device)
    rx = tx if rx_device == tx_device else in_passing_thread(load_codec, args, rx_device)
    input_device = stream.parse_device(args.input_device)
    output_device = stream.parse_device(args.output_device)
    if args.input_file:
        data = _read_input_file(args, tx.sample_rate)
        streamer = stream.Streamer(tx, rx, args.frame_size, data.shape[1], args.max_latency, args.worker_threads,
                                   keep_input=False, keep_output=bool(args.output))
        to_device = args.output_device is not None or not args.output
        if to_device:
            stream.check_device("output", output_device, streamer.output_channels, tx.sample_rate)
        logging.info(f"### streaming {args.input_file} [press Return or Ctrl-C to stop] ###")
        if to_device:
            n_samples = stream.run_file_to_device(streamer, data, output_device, args.duration)
        else:
            n_samples = stream.run_file(streamer, data, args.pace, args.duration)
    else:
        streamer = stream.Streamer(tx, rx, args.frame_size, tx.input_channels, args.max_latency,
                                   args.worker_threads, keep_input=bool(args.input), keep_output=bool(args.output))
        stream.check_device("input", input_device, tx.input_channels, tx.sample_rate)
        stream.check_device("output", output_device, streamer.output_channels, tx.sample_rate)
        stream.run_devices(streamer, input_device, output_device, args.duration)
        n_samples = None
    captured = (lambda: data[:n_samples]) if args.input_file else streamer.input_audio
    _dump(args.input, captured, tx.sample_rate)
    _dump(args.output, lambda: streamer.output_audio(n_samples), rx.sample_rate)
    print(streamer.stats.report())


def main() -> None:
    args = parse_args()
    if args.list_models:
        list_models(args.root)
        return
    if args.list_devices:
        print(stream.list_devices())
        return
    _check_args(args)
    set_num_threads(args.num_threads)
    if args.receive is not None:
        run_receiver(args)
    elif args.send:
        run_sender(args)
    else:
        run_local(args)


if __name__ == "__main__":
    run_main(main)
