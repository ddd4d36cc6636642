"""Shared pieces of the command-line tools: one-line errors, device choice, model loading.

Imports no torch: a command's --help and the errors in its arguments and files answer before torch
loads (seconds); the functions that need it import it when called.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from utils.audio import AudioInput, declared_rate, read_audio, resample, warn_if_input_beyond_full_scale
from utils.errors import CodecError, check_at_least, shown
from utils.experiment_config import load_config
from utils.files import remove_unfilled_folders
from utils.registry import MODELS, get_entry, install_hint, installed_root, resolve
from utils.runtime.names import BACKENDS, DEFAULT_BACKEND, PRECISION_NAMES

if TYPE_CHECKING:
    from utils.audiodec import StreamingCodec

OLDEST_TORCH = "2.5"  # the oldest release the whole test suite passes on (docs/training.md)


def installed_torch_version() -> str | None:
    """The installed torch's version, read from its package metadata without importing it; None for a
    torch installed with no metadata (a source tree on the path)."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        if importlib.util.find_spec("torch") is None:
            raise CodecError("torch is not installed: python -m utils.install_requirements") from None
        return None


def check_torch_version(version: str | None = None) -> None:
    """Raise CodecError where the installed torch (or ``version``) is older than :data:`OLDEST_TORCH`:
    an older one fails inside the models (e.g. torch 2.4 lacks nn.Module.register_state_dict_post_hook)."""
    version = version or installed_torch_version()
    if version is None:
        return
    installed = _release(version)
    if installed < _release(OLDEST_TORCH):
        raise CodecError(f"torch {version} is older than {OLDEST_TORCH}, the oldest this toolkit runs on: "
                         f"python -m utils.install_requirements (torch 2.13.0), or a torch {OLDEST_TORCH} or newer "
                         "built for your CUDA")


def _release(version: str) -> tuple[int, ...]:
    """A version's release numbers: '2.5.1+cu124' -> (2, 5, 1)."""
    found = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(part) for part in found.group().split(".")) if found else ()


class Terminated(KeyboardInterrupt):
    """SIGTERM (a job's time limit, `kill`, `scancel`), raised in the main thread: a command stops
    as on Ctrl-C, through every clean-up on the way out (a live stream's graceful stop included)."""


def _raise_terminated(*_: object) -> None:
    raise Terminated


class _ShownFormatter(logging.Formatter):
    """A log line with the file names in it printed as `shown` prints them (`caf\\xe9.wav`)."""

    def format(self, record: logging.LogRecord) -> str:
        return shown(super().format(record))


def configure_logging(level: int = logging.INFO, format: str = "%(message)s", force: bool = False) -> None:
    """Log to stderr (as `logging.basicConfig`), every line through `shown`."""
    handler = logging.StreamHandler()
    handler.setFormatter(_ShownFormatter(format))
    logging.basicConfig(level=level, handlers=[handler], force=force)


class StandardOutputError(CodecError):
    """Standard output takes no more text for a reason other than a broken pipe (a full disk, /dev/full)."""


@contextlib.contextmanager
def _reported_as_stdout_failure() -> Iterator[None]:
    """An OSError in the block, but a broken pipe (its own quiet stop), as StandardOutputError."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as error:
        raise StandardOutputError(f"cannot write to standard output ({error.strerror or error}): free space, or "
                                  "redirect it elsewhere") from None


class _CheckedOutput:
    """Stands in for sys.stdout while a command runs: a write or flush that fails raises
    StandardOutputError (one line), not an OSError traceback; all else is the stream's own."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        with _reported_as_stdout_failure():
            return self._stream.write(text)

    def flush(self) -> None:
        with _reported_as_stdout_failure():
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _checked_stdout() -> Iterator[None]:
    """sys.stdout as `_CheckedOutput` in the block, flushed at its end (an exit, as argparse's --help,
    included): what the body printed fails here, as StandardOutputError, not in the interpreter's exit."""
    stream = sys.stdout
    if stream is None:  # started with stdout closed: print() does nothing
        yield
        return
    sys.stdout = _CheckedOutput(stream)
    try:
        yield
        sys.stdout.flush()
    except SystemExit:
        sys.stdout.flush()
        raise
    finally:
        sys.stdout = stream


def _discard_stdout() -> None:
    """Point stdout's file at the null device: what its buffer holds can go nowhere, and the exit's
    flush would fail on it again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):  # a stream with no file (a test's)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def run_main(main: Callable[[], int | None]) -> None:
    """Run a CLI body: a CodecError (or Ctrl-C, or SIGTERM) becomes one line on stderr and a non-zero
    exit; a body that fails leaves none of the output folders it made behind empty, nor a temp file.
    Standard output that cannot be written is one line and exit status 1 (a closed pipe: a quiet
    stop). File names in its log and error lines are printed escaped where they are no text (`shown`)."""
    configure_logging()
    signal.signal(signal.SIGTERM, _raise_terminated)
    status: int | str | None = 1  # until the body returns or exits
    try:
        check_torch_version()
        with _checked_stdout():
            status = main() or 0
    except SystemExit as stop:
        status = stop.code
        raise
    except StandardOutputError as error:
        print(f"error: {error}", file=sys.stderr)
        _discard_stdout()
        status = 1
    except CodecError as error:
        print(f"error: {shown(str(error))}", file=sys.stderr)
        status = 1
    except Terminated:
        print("terminated", file=sys.stderr)
        status = 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = 130
    except BrokenPipeError:  # stdout's reader went away (`| head`): stop quietly, as other tools do
        _discard_stdout()
        status = 128 + signal.SIGPIPE
    finally:
        if status:
            remove_unfilled_folders()
    sys.exit(status)


def pick_device(cuda: int | None) -> str:
    """The device `--cuda` names: None -> GPU 0 if there is one, else the CPU (quietly); -1 -> the CPU;
    N -> GPU N, or the CPU with a notice when this machine has no CUDA."""
    import torch

    if cuda is None:
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if cuda < 0:
        return "cpu"
    if not torch.cuda.is_available():
        logging.info(f"--cuda {cuda}: CUDA is not available, running on the CPU")
        return "cpu"
    if cuda >= torch.cuda.device_count():
        raise CodecError(f"--cuda {cuda}: this machine has {torch.cuda.device_count()} GPU(s); use 0..N-1 or -1")
    return f"cuda:{cuda}"


def usable_cores() -> int:
    """The cores this process may run on (all of them where the system has no affinity)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # macOS and Windows have no affinity call: all cores


def default_num_threads() -> int:
    """`usable_cores()`, at most 4 (more rarely pays for one stream)."""
    return min(4, usable_cores())


def add_model_arguments(parser: argparse.ArgumentParser, default_model: str | None = "libritts_v1") -> None:
    """--model / --encoder / --decoder / --root / --list-models. --model is None unless given (so that
    giving it beside --encoder/--decoder is refused); `load_codec` falls back to `default_model`."""
    parser.add_argument("--model", help=f"registered model name (see --list-models; default: {default_model})"
                        if default_model else "registered model name (see --list-models)")
    parser.set_defaults(default_model=default_model)
    parser.add_argument("--encoder", help="encoder checkpoint (instead of --model)")
    parser.add_argument("--decoder", help="decoder checkpoint (instead of --model)")
    parser.add_argument("--root", help="folder holding the models' exp/ (default: current folder, then the toolkit)")
    parser.add_argument("--list-models", action="store_true", help="list the registered models and exit")
    parser.add_argument(
        "--backend", choices=BACKENDS, default=DEFAULT_BACKEND,
        help="native (default: every released model's encoder and decoder in the compiled engine, anything "
        "else as torch), torch (each chunk size's steps as TorchScript graphs), or eager "
        "(op by op). docs/performance.md",
    )
    parser.add_argument(
        "--precision", choices=PRECISION_NAMES, default="fp32",
        help="the receiver's convolution weights in the native engine: fp32 (default), bf16 (half the bytes), or "
        "int8 (a quarter, with a scale per output channel); sums stay float32 and the codes do not change. "
        "docs/performance.md",
    )


def list_models(root: str | None = None) -> None:
    """One line per registered model: name, rate, where it is installed (or how to get it), description."""
    for entry in MODELS.values():
        folder = installed_root(entry, root)
        if folder is not None:
            where = f"installed in {folder}"
        elif entry.released:
            where = f"not installed: python -m utils.download {entry.name}"
        else:
            where = f"not installed: {install_hint(entry)}"
        print(f"{entry.name:20s} {entry.sample_rate:6d} Hz  {where}  ({entry.description})")


def load_codec(args: argparse.Namespace, device: str | None = None) -> StreamingCodec:
    """The codec that --model or --encoder/--decoder name, on `device` (default: --cuda's, with
    --num_threads applied: `apply_runtime_arguments`). Its checkpoints are found and their config.yml
    checked before torch loads: a model that is not installed or a bad config is named at once."""
    if bool(args.encoder) != bool(args.decoder):
        raise CodecError("give both --encoder and --decoder, or neither (and --model)")
    if args.encoder and args.model:
        raise CodecError(f"--model {args.model} and --encoder/--decoder both name the model: give one of them")
    name = None if args.encoder else args.model or getattr(args, "default_model", None)
    if not args.encoder and not name:
        raise CodecError("no model: give --model NAME, or --encoder and --decoder")
    with _named_as_the_default(args):
        for checkpoint in (args.encoder, args.decoder) if args.encoder else resolve(get_entry(name), args.root):
            load_config(checkpoint)
    device = device or apply_runtime_arguments(args)
    backend, precision = getattr(args, "backend", DEFAULT_BACKEND), getattr(args, "precision", "fp32")
    from utils.audiodec import StreamingCodec

    if args.encoder:
        return StreamingCodec.from_checkpoints(
            args.encoder, args.decoder, device=device, precision=precision, backend=backend
        )
    with _named_as_the_default(args):
        return StreamingCodec.from_name(name, root=args.root, device=device, precision=precision, backend=backend)


@contextlib.contextmanager
def _named_as_the_default(args: argparse.Namespace) -> Iterator[None]:
    """A CodecError in the block, where the user named no model, says that the model is the default one
    and how to name another."""
    try:
        yield
    except CodecError as error:
        if args.encoder or args.model:
            raise
        raise CodecError(f"no --model given, so the default, {error}; or name another with --model "
                         "(--list-models)") from None


def read_input_for(
    codec: StreamingCodec, path: str, allow_resample: bool, allow_truncated: bool = False
) -> np.ndarray:
    """Samples (T, C) of `path` at the codec's rate: a different rate is an error unless resampling, and so
    is a file too short to leave a sample at the codec's rate."""
    data, rate = read_audio(path, allow_truncated, _reading_dtype(path, codec.sample_rate))
    warn_if_input_beyond_full_scale(path, data)
    if rate != codec.sample_rate:
        if not allow_resample:
            raise CodecError(
                f"{path} is at {rate} Hz but model '{codec.name}' codes {codec.sample_rate} Hz: "
                "convert it, or pass --resample"
            )
        logging.info(f"resampling {rate} Hz -> {codec.sample_rate} Hz")
        frames = data.shape[0]
        data = resample(data, rate, codec.sample_rate)
        if data.shape[0] == 0:
            raise CodecError(f"{path} is too short to code at the model's rate: its {frames} sample(s) at {rate} Hz "
                             f"resample to none at {codec.sample_rate} Hz; give a longer file")
    return data


def input_audio_for(
    codec: StreamingCodec, path: str, allow_resample: bool, allow_truncated: bool = False
) -> Iterable[np.ndarray]:
    """`read_input_for`'s samples as blocks: a file at the codec's rate read a piece of
    `codec.signal_block_samples` at a time as it is coded (`AudioInput`); one at another rate
    resampled whole first, as `read_input_for` does."""
    if declared_rate(path) != codec.sample_rate:  # (or no rate: read_input_for says why)
        return [read_input_for(codec, path, allow_resample, allow_truncated)]
    return AudioInput(path, codec.signal_block_samples, allow_truncated, dtype="float32")


def _reading_dtype(path: str, rate: int) -> str:
    """float32 for a file at `rate`: the codec codes float32, to which float64 samples would be rounded
    anyway (the same values, in half the memory of a long file); float64 for one to resample first."""
    return "float32" if declared_rate(path) == rate else "float64"


def check_n_codebooks(codec: StreamingCodec, n_codebooks: int | None) -> None:
    codec.checked_codebooks(n_codebooks, "--n_codebooks")


def file_count(text: str) -> int:
    """``--subset_num``'s value: the first N files of a subset, or -1 for all of them."""
    value = int(text)  # not a number: argparse says "invalid file_count value"
    if value == 0 or value < -1:
        raise argparse.ArgumentTypeError(f"{value} files: give 1 or more, or -1 for all")
    return value


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """--cuda / --num_threads, as the original's demos."""
    parser.add_argument("--cuda", type=int, help="GPU index; -1 = CPU (default: GPU 0 if there is one, else CPU)")
    parser.add_argument("--num_threads", type=int, help="CPU threads (default: the cores available, at most 4)")


def apply_runtime_arguments(args: argparse.Namespace) -> str:
    """Set the thread count; return the device to run on."""
    if args.num_threads is None:
        args.num_threads = default_num_threads()
    set_num_threads(args.num_threads)
    return pick_device(args.cuda)


def set_num_threads(count: int) -> None:
    """torch's CPU threads (`--num_threads`), `count` >= 1."""
    check_at_least("num_threads", count, 1)
    import torch

    torch.set_num_threads(count)


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """--allow-truncated / -f --force: what an input or output may be."""
    parser.add_argument("--allow-truncated", action="store_true",
                        help="code the part of a WAV file shorter than its header says instead of failing")
    parser.add_argument("-f", "--force", action="store_true", help="replace output files that exist")
