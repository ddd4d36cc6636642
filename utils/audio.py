"""Audio file input and output with clear errors and atomic writes, and resampling: the one
reader and resampler of the codec CLIs, the evaluation and the datasets."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import struct
import threading
from collections.abc import Iterable, Iterator
from types import ModuleType
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from utils.errors import CodecError
from utils.files import Writer, check_input_exists, check_output_folder, check_readable, write_outputs

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".mp3")
MIN_AUDIO_RATE, MAX_AUDIO_RATE = 1000, 768_000  # Hz: the rates read_audio takes
MAX_FILE_CHANNELS = 1024  # libsndfile's limit: no audio file it reads or writes has more
BLOCK_SAMPLES = 1 << 18  # samples (frames x channels) per block when audio is scanned or written

logger = logging.getLogger(__name__)


def wav_frames(path: str) -> tuple[int, int] | None:
    """(frames the header declares, frames the file holds) of a RIFF WAV file; None for other files.

    libsndfile reads a cut WAV without complaint (it counts what is there), so the data chunk's
    declared size is compared with the bytes after it here. Sizes 0 and 0xFFFFFFFF mean "unknown"
    (a recorder that never finished its header) and are not checked.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        head = handle.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align = 0
        while True:
            header = handle.read(8)
            if len(header) < 8:
                return None
            chunk, length = header[:4], struct.unpack("<I", header[4:])[0]
            if chunk == b"fmt ":
                body = handle.read(length)
                if len(body) < 14:
                    return None
                block_align = struct.unpack("<H", body[12:14])[0]
                handle.seek(length % 2, os.SEEK_CUR)
            elif chunk == b"data":
                if not block_align or length in (0, 0xFFFFFFFF):
                    return None
                available = size - handle.tell()
                return length // block_align, min(length, available) // block_align
            else:
                handle.seek(length + length % 2, os.SEEK_CUR)
                if handle.tell() > size:
                    return None


def read_audio(
    path: str | os.PathLike, allow_truncated: bool = False, dtype: str = "float64"
) -> tuple[np.ndarray, int]:
    """Read an audio file as (T, C) samples of `dtype` (integer formats scaled to [-1, 1); float ones as
    stored, which may pass full scale) and its sample rate.

    Refused with a CodecError: a missing, empty or unreadable file; a rate outside [MIN_AUDIO_RATE,
    MAX_AUDIO_RATE]; a WAV shorter than its header says (unless `allow_truncated`: then what is there,
    with a warning); NaN or infinite samples.
    """
    _check_input_file(path)
    with _read_as_audio(path):
        data, rate = sf.read(os.fsencode(path), dtype=dtype, always_2d=True)  # bytes: any name the system takes
    _check_audio_rate(path, rate)
    if data.shape[0] == 0:
        raise CodecError(f"input file {path} holds no samples: give a file with audio in it")
    _check_truncation(path, allow_truncated)
    _check_finite_input(path, data, rate)
    return data, rate


class AudioInput:
    """An audio file read as `read_audio` reads it, but a block of `block_frames` frames (n, C) at a time as
    the blocks are asked for, so that a long file is coded without all of it in memory. Its header is
    checked now (`rate`, `channels`, `frames` as the header counts them); each block's samples as it is
    read (a NaN is named where it lies); a file of no samples is refused once the blocks are read; the
    samples beyond full scale are warned about then, once, as `warn_if_input_beyond_full_scale` does."""

    def __init__(self, path: str | os.PathLike, block_frames: int, allow_truncated: bool = False,
                 dtype: str = "float64") -> None:
        _check_input_file(path)
        with _read_as_audio(path):
            info = sf.info(os.fsencode(path))
        _check_audio_rate(path, info.samplerate)
        _check_truncation(path, allow_truncated)
        self.path, self.block_frames, self.dtype = path, block_frames, dtype
        self.rate, self.channels, self.frames = info.samplerate, info.channels, info.frames

    def __iter__(self) -> Iterator[np.ndarray]:
        read, peak, beyond = 0, 0.0, 0
        with _read_as_audio(self.path), sf.SoundFile(os.fsencode(self.path)) as audio:
            for block in audio.blocks(blocksize=self.block_frames, dtype=self.dtype, always_2d=True):
                _check_finite_input(self.path, block, self.rate, read)
                found = _beyond_full_scale(block)
                if found is not None:
                    peak, beyond = max(peak, found[0]), beyond + found[1]
                read += block.shape[0]
                yield block
        if read == 0:
            raise CodecError(f"input file {self.path} holds no samples: give a file with audio in it")
        if beyond:
            _warn_beyond_full_scale(str(self.path), peak, beyond)


def _check_input_file(path: str | os.PathLike) -> None:
    """A regular file that holds bytes, else a CodecError saying what `path` is instead."""
    check_input_exists(path)
    if not os.path.isfile(path):
        what = "a folder" if os.path.isdir(path) else "not a regular file (a pipe or a device?)"
        raise CodecError(f"input {path} is {what}: give an audio file's path")
    if os.path.getsize(path) == 0:
        raise CodecError(f"input file {path} is empty: give a wav/flac/ogg file with audio in it")


@contextlib.contextmanager
def _read_as_audio(path: str | os.PathLike) -> Iterator[None]:
    """libsndfile's failures in the block as one CodecError naming `path` and the reason."""
    try:
        yield
    except (sf.LibsndfileError, RuntimeError, ValueError) as error:
        check_readable(path)  # libsndfile says "System error" for a file the user may not read
        reason = str(error).splitlines()[0]
        raise CodecError(f"cannot read {path} as audio ({reason}): give a wav/flac/ogg file") from None


def _check_audio_rate(path: str | os.PathLike, rate: int) -> None:
    if not MIN_AUDIO_RATE <= rate <= MAX_AUDIO_RATE:  # resampling 1 Hz to 48 kHz would ask for 48000 x the samples
        raise CodecError(f"{path} declares {rate} Hz, not an audio rate: fix its header")


def _check_truncation(path: str | os.PathLike, allow_truncated: bool) -> None:
    """A WAV shorter than its header says is an error, unless `allow_truncated` (then a warning)."""
    frames = wav_frames(path)
    if frames is not None and frames[1] < frames[0]:
        declared, present = frames
        if not allow_truncated:
            raise CodecError(
                f"{path} is truncated: header says {declared} frames, file has {present}; re-transfer it, "
                "or pass --allow-truncated to code what is there"
            )
        logger.warning(f"{path} is truncated: coding the {present} of {declared} frames it holds")


def _check_finite_input(path: str | os.PathLike, data: np.ndarray, rate: int, offset: int = 0) -> None:
    """NaN or infinite samples in `data` (T, C), the file's frames from `offset` on, are an error naming the first."""
    finite = np.isfinite(data)
    if not finite.all():
        frame, channel = np.argwhere(~finite)[0]
        value = data[frame, channel]
        frame += offset
        raise CodecError(
            f"{path} has a non-finite sample ({value}) at {frame / rate:.6f} s (frame {frame}, channel {channel}): "
            "repair or re-export the file"
        )


def check_file_samples(data: object) -> None:
    """Raise CodecError unless `data` is file samples as the coders take them: a float NumPy array
    (samples, channels). Integer samples (a WAV read as int16, say) would be coded 32768 times too loud."""
    if not isinstance(data, np.ndarray) or data.ndim != 2:
        got = f"shape {data.shape}" if isinstance(data, np.ndarray) else f"a {type(data).__name__}"
        raise CodecError(f"file samples are a NumPy array (samples, channels), got {got}: "
                         "read with soundfile.read(path, always_2d=True), or reshape mono to (-1, 1)")
    if not np.issubdtype(data.dtype, np.floating):
        raise integer_samples_error(data.dtype)


def integer_samples_error(dtype: object) -> CodecError:
    """The error for samples of a non-float `dtype` (NumPy's or torch's), which would be coded unscaled."""
    return CodecError(f"samples are floats in [-1, 1], got {dtype}: scale integer ones (int16: x / 32768)")


def read_mono(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read an audio file as float32 mono (T,) (channels averaged) and its sample rate."""
    data, rate = read_audio(path, dtype="float32")
    return data.mean(axis=1), rate


def resample(data: np.ndarray, rate_in: int, rate_out: int, dtype: type | None = None) -> np.ndarray:
    """Resample (T,) or (T, C) audio with soxr (high quality), computed in `dtype` (default: the
    input's; soxr returns the dtype it is given)."""
    if dtype is not None:
        data = np.asarray(data, dtype=dtype)
    if rate_in == rate_out:
        return data
    return soxr.resample(data, rate_in, rate_out, quality="HQ")


def _format_of(path: str | os.PathLike) -> str:
    """The soundfile format an output name's extension names (``WAV`` for ``x.wav``), or ''."""
    return os.path.splitext(str(path))[1][1:].upper()


def check_audio_output(path: str | os.PathLike, subtype: str = "PCM_16") -> None:
    """Raise a CodecError when `path` cannot be written as `subtype` audio: its folder cannot take it,
    or its extension names no format that holds such samples (call it before the work)."""
    check_output_folder(path)
    extension = _format_of(path)
    if extension in sf.available_formats() and sf.check_format(extension, subtype):
        return
    what = f"a .{extension.lower()} file does not hold {subtype} samples" if extension else "it has no extension"
    fix = "a .wav or .flac" if sf.check_format("FLAC", subtype) else "a .wav"
    raise CodecError(f"cannot write {path} ({what}): give {fix} output name")


def _row_blocks(data: np.ndarray) -> Iterator[np.ndarray]:
    """`data` (T, C) (or (T,)) as views of consecutive rows, about BLOCK_SAMPLES samples each: a scan's
    temporaries (abs, isfinite) then take a block's memory, not the whole signal's."""
    channels = data.shape[1] if data.ndim == 2 else 1
    rows = max(1, BLOCK_SAMPLES // max(1, channels))
    for start in range(0, data.shape[0], rows):
        yield data[start : start + rows]


def check_finite_output(path: str | os.PathLike, data: np.ndarray) -> None:
    """Raise CodecError where audio to be written to `path` holds NaN or infinite samples (a decoder with
    such weights): stored as integers they would be a full-scale constant, not a decoding."""
    bad = sum(block.size - int(np.count_nonzero(np.isfinite(block))) for block in _row_blocks(data))
    if bad:
        raise CodecError(
            f"{path}: {bad} of its {data.size} decoded samples are NaN or "
            "infinite (a damaged or diverged model): decode with a sound checkpoint"
        )


class _KeptWriteErrors:
    """The binary stream libsndfile writes through (soundfile's virtual I/O), keeping the OSError of a
    failing write or seek (a full disk) for the caller: raised inside libsndfile's callback, it would be
    lost, and libsndfile would only say 'System error.'."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        if self.error is not None:
            return 0
        try:
            return self.stream.write(data)
        except OSError as error:
            self.error = error
            return 0

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        try:
            return self.stream.seek(offset, whence)
        except OSError as error:  # a buffered stream writes what it holds before it seeks
            self.error = self.error or error
            return -1

    def tell(self) -> int:
        return self.stream.tell()


@contextlib.contextmanager
def _stops_held() -> Iterator[None]:
    """Holds Ctrl-C and SIGTERM (where Python handles them) until the block ends, then delivers them:
    raised in libsndfile's write callbacks, a stop would be printed and dropped by cffi, and the
    command would go on as if a file had failed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {}
    for number in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(number)
        if callable(handler):  # (SIG_DFL's SIGTERM ends the process in the kernel: nothing is lost)
            previous[number] = handler
            signal.signal(number, lambda caught, _frame: held.append(caught))
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for number in dict.fromkeys(held):
            signal.raise_signal(number)


def audio_writer(path: str | os.PathLike, data: np.ndarray, rate: int, subtype: str = "PCM_16") -> Writer:
    """A function that writes (T, C) audio to an open binary stream as a file of the format `path`'s
    extension names, a block at a time (no copy of the file in memory), for `write_outputs`. NaN or
    infinite samples are refused now, before any file is made (:func:`check_finite_output`); a failing
    write raises the system's OSError (a full disk), which `write_outputs` names."""
    check_finite_output(path, data)
    return _blocks_writer(path, _row_blocks(data), rate, data.shape[1] if data.ndim == 2 else 1, subtype)


def _blocks_writer(path: str | os.PathLike, blocks: Iterable[np.ndarray], rate: int, channels: int,
                   subtype: str) -> Writer:
    """`audio_writer` of audio that comes as (n, channels) blocks. Stops are held while libsndfile
    writes (`_stops_held`), not while the next block is made: a long decoding stays stoppable."""

    def write(stream: BinaryIO) -> None:
        kept = _KeptWriteErrors(stream)
        sound = None
        try:
            with _write_errors_named(path, kept), _stops_held():  # (the header is written here)
                sound = sf.SoundFile(kept, "w", rate, channels, subtype, format=_format_of(path))
            for block in blocks:
                with _write_errors_named(path, kept), _stops_held():
                    sound.write(block)
        except BaseException:
            if sound is not None:  # closed while its stream is open (a later close would write to a closed one)
                with contextlib.suppress(Exception), _stops_held():
                    sound.close()
            raise
        with _write_errors_named(path, kept), _stops_held():
            sound.close()
        if kept.error is not None:
            raise kept.error

    return write


@contextlib.contextmanager
def _write_errors_named(path: str | os.PathLike, kept: _KeptWriteErrors) -> Iterator[None]:
    """libsndfile's failures as the stream's OSError (a full disk), or as a CodecError naming `path`."""
    try:
        yield
    except Exception as error:
        if kept.error is not None:  # libsndfile's failure (a short write, soundfile's assertion) is the stream's
            raise kept.error from None
        if isinstance(error, (sf.LibsndfileError, ValueError, TypeError)):
            raise CodecError(f"cannot write {path} ({error}): use a .wav or .flac output name") from None
        raise


def write_audio(path: str, data: np.ndarray, rate: int, subtype: str = "PCM_16") -> None:
    """Write (T, C) audio straight to a temp file beside `path`, a block at a time, then rename: never a
    half-written file, nor the whole file held in memory; a failure to write it (a full disk) is named
    as such, and leaves no temp file.

    Integer formats cut samples beyond full scale; that is logged as a warning with the peak.
    """
    check_audio_output(path, subtype)
    write_outputs({path: audio_writer(path, data, rate, subtype)})
    if subtype.startswith("PCM"):
        warn_if_clipping(path, data)


def write_audio_blocks(path: str, blocks: Iterable[np.ndarray], rate: int, channels: int,
                       subtype: str = "PCM_16") -> int:
    """`write_audio` of audio made a block at a time ((n, channels) arrays, a decoding's pieces), each
    written as it comes: the file is never whole in memory. Returns the frames written.

    A block with NaN or infinite samples, or any error raised while the blocks are made, stops the
    writing and leaves no file (as `write_audio`'s failures do); samples beyond full scale are
    counted over all blocks and logged once at the end.
    """
    check_audio_output(path, subtype)
    checked = CheckedBlocks(path, blocks, rate)
    write_outputs({path: audio_blocks_writer(checked, channels, subtype)})
    return checked.frames


class CheckedBlocks:
    """Decoded audio blocks (n, channels) for the file `path`, checked as they pass: one with NaN or
    infinite samples raises a CodecError naming where it starts (stored as integers they would be a
    full-scale constant), and the samples beyond full scale are counted for `log_clipping`."""

    def __init__(self, path: str | os.PathLike, blocks: Iterable[np.ndarray], rate: int) -> None:
        self.path, self.blocks, self.rate = path, blocks, rate
        self.frames, self.peak, self.clipped = 0, 0.0, 0

    def __iter__(self) -> Iterator[np.ndarray]:
        for block in self.blocks:
            if not np.all(np.isfinite(block)):
                raise CodecError(f"{self.path}: the decoded audio holds NaN or infinite samples from "
                                 f"{self.frames / self.rate:.2f} s on (a damaged or diverged model): decode with a "
                                 "sound checkpoint")
            beyond = _beyond_full_scale(block)
            if beyond is not None:
                self.peak, self.clipped = max(self.peak, beyond[0]), self.clipped + beyond[1]
            self.frames += block.shape[0]
            yield block

    def log_clipping(self) -> None:
        """The warning of `warn_if_clipping`, over every block that passed."""
        if self.clipped:
            _log_clipping(self.path, self.peak, self.clipped)


def audio_blocks_writer(blocks: CheckedBlocks, channels: int, subtype: str = "PCM_16") -> Writer:
    """`audio_writer` of audio that comes as checked blocks, for `write_outputs`; where the format
    stores integers, the clipping is logged once the last block is written."""
    write = _blocks_writer(blocks.path, blocks, blocks.rate, channels, subtype)

    def write_and_tell(stream: BinaryIO) -> None:
        write(stream)
        if subtype.startswith("PCM"):
            blocks.log_clipping()

    return write_and_tell


def _beyond_full_scale(data: np.ndarray) -> tuple[float, int] | None:
    """The peak of `data` and how many samples lie beyond full scale (|x| > 1), or None where none do
    (a NaN anywhere makes the peak NaN, which is not <= 1)."""
    peaks, beyond = [0.0], 0
    for block in _row_blocks(data):
        magnitude = np.abs(block)
        if magnitude.size:
            peaks.append(float(np.max(magnitude)))
            beyond += int(np.count_nonzero(magnitude > 1.0))
    peak = float(np.max(peaks))  # NaN where any block's is
    if peak <= 1.0:
        return None
    return peak, beyond


def warn_if_clipping(path: str, data: np.ndarray) -> None:
    """Log a warning when samples of `data` (T, C) lie beyond full scale (they are cut when stored as integers);
    NaN or infinite samples are refused (:func:`check_finite_output`), as they have no peak to name."""
    beyond = _beyond_full_scale(data)
    if beyond is None:
        return
    peak, clipped = beyond
    if not math.isfinite(peak):  # the writers checked already; only then is the whole array scanned again
        check_finite_output(path, data)
    _log_clipping(path, peak, clipped)


def _log_clipping(path: str | os.PathLike, peak: float, clipped: int) -> None:
    logger.warning(
        f"{path}: the decoded audio clips: peak {peak:.3f} ({20 * math.log10(peak):+.1f} dBFS), {clipped} samples "
        f"cut to full scale; code the input about {20 * math.log10(peak):.1f} dB quieter to keep them"
    )


def warn_if_input_beyond_full_scale(path: str, data: np.ndarray) -> None:
    """Log a warning when a float file's samples (T, C) go beyond [-1, 1]: the models learnt audio
    within full scale, and the decoding of louder input clips when written as integers."""
    beyond = _beyond_full_scale(data)
    if beyond is not None:
        _warn_beyond_full_scale(path, *beyond)


def _warn_beyond_full_scale(path: str, peak: float, count: int) -> None:
    logger.warning(
        f"{path}: {count} samples lie beyond full scale (peak {peak:.3f}, {20 * math.log10(peak):+.1f} dBFS); "
        f"the codec is made for [-1, 1]: scale the file about {20 * math.log10(peak):.1f} dB down for a faithful coding"
    )


def declared_rate(path: str | os.PathLike) -> int | None:
    """The sample rate `path`'s header declares, or None where it cannot be read (read_audio then says why)."""
    try:
        return sf.info(os.fsencode(path)).samplerate
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError):
        return None


def librosa_filters() -> ModuleType:
    """`librosa.filters`, whose import sets up librosa's caches: numba's compiled functions (beside
    librosa, else under the home folder) and its data folder (under the home folder). For a user whose
    home folder is missing or read-only that fails with a RuntimeError deep in numba or platformdirs:
    a CodecError here, naming the variables that put the caches elsewhere."""
    try:
        import librosa.filters
    except RuntimeError as error:
        reason = (str(error).strip().splitlines() or ["no reason given"])[0]
        raise CodecError(f"librosa cannot set up its caches ({reason}): this user's home folder is missing or "
                         "read-only; set XDG_CACHE_HOME and NUMBA_CACHE_DIR to a folder you can write") from None
    return librosa.filters
