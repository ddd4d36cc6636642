"""Finding and reading the audio files a dataset is made of (read as the codec reads them,
`utils.audio.read_audio`, with the config's sampling rate enforced)."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import soundfile as sf

from utils import audio as audio_io
from utils.errors import CodecError
from utils.files import walk_every_folder

TRAINING_EXTENSIONS: tuple[str, ...] = (".wav", ".flac")

logger = logging.getLogger(__name__)


class DataError(CodecError, ValueError):
    """A file of the data cannot be used as it is: the message names it and the fix."""


def find_audio_files(root: str | os.PathLike, extensions: Iterable[str] = TRAINING_EXTENSIONS) -> list[Path]:
    """List the audio files under a folder, recursively, sorted by path.

    Symbolic links to folders are followed, each folder once: a link back to a folder already searched,
    or to one holding ``root`` (a loop, which would pull the whole tree in again), is skipped with a
    warning. Audio files of other types are counted in one log line (they would be silently unused).

    Args:
        root: folder to search.
        extensions: file endings to keep, compared without regard to case.

    Returns:
        The matching files, sorted so that every process sees the same order.

    Raises:
        DataError: a folder under ``root`` cannot be listed (its files would be silently missing).
    """
    endings = tuple(ext.lower() for ext in extensions)
    other_audio = tuple(ext for ext in audio_io.AUDIO_EXTENSIONS if ext not in endings)
    top = os.path.realpath(root)
    searched = {top}
    found: list[Path] = []
    unused = 0

    listing = walk_every_folder(root, "make it readable or remove it from the data", DataError, followlinks=True)
    for folder, subfolders, names in listing:
        kept = []
        for name in subfolders:
            real = os.path.realpath(os.path.join(folder, name))
            if real in searched or top.startswith(real.rstrip(os.sep) + os.sep):
                logger.warning("%s: skipped, a link to %s, which is searched already (a loop or a second link)",
                               os.path.join(folder, name), real)
                continue
            searched.add(real)
            kept.append(name)
        subfolders[:] = sorted(kept)
        found.extend(Path(folder) / name for name in names if name.lower().endswith(endings))
        unused += sum(name.lower().endswith(other_audio) for name in names)
    if unused:
        logger.warning("%s: %d audio files left out, only %s files are read: convert the others to one of these",
                       root, unused, "/".join(endings))
    return sorted(found)


def read_file_list(list_file: str | os.PathLike) -> list[Path]:
    """Read a text file naming one audio file per line (blank lines ignored), sorted by path. A relative
    path is read from the current folder, as the original's lists are.

    Raises:
        DataError: the file is not UTF-8 text (an audio file given as the list, say).
    """
    try:
        with open(list_file, encoding="utf-8") as handle:
            return sorted(Path(line.strip()) for line in handle if line.strip())
    except UnicodeDecodeError as error:
        what = ("an audio file, not a list of them" if str(list_file).lower().endswith(audio_io.AUDIO_EXTENSIONS)
                else f"not UTF-8 text (byte {error.object[error.start]:#04x} at {error.start})")
        raise DataError(f"{list_file} is {what}: give a folder of audio files, or a UTF-8 text file naming one "
                        "audio file per line") from None


def collect_audio_files(source: str | os.PathLike, what: str = "audio files") -> list[Path]:
    """Resolve a dataset source into its audio files.

    Args:
        source: a folder searched recursively for wav/flac files, or a text file listing audio files
            (the form the original project's list-based configs use).
        what: how the source is named in error messages, e.g. ``"data.subset.train"``.

    Returns:
        The sorted audio files.

    Raises:
        FileNotFoundError: the source does not exist.
        ValueError: the source holds no audio file.
    """
    path = Path(source)
    if path.is_dir():
        files = find_audio_files(path)
    elif path.is_file():
        files = read_file_list(path)
    else:
        raise FileNotFoundError(f"{what}: {path} does not exist; check data.path and data.subset in the config")
    if not files:
        raise ValueError(
            f"{what}: no {'/'.join(TRAINING_EXTENSIONS)} files found in {path}; "
            "point data.path / data.subset in the config at a folder of audio files"
        )
    return files


def check_sampling_rate(path: str | os.PathLike, sampling_rate: int, expected: int | None) -> None:
    """Raise a DataError naming the file and the fix when its rate differs from the expected one."""
    if expected is not None and sampling_rate != expected:
        raise DataError(
            f"{path} is sampled at {sampling_rate} Hz but the config's sampling_rate is {expected} Hz; "
            f"resample the data to {expected} Hz or use a config made for {sampling_rate} Hz"
        )


def read_training_audio(path: str | os.PathLike, expected_sampling_rate: int | None = None) -> np.ndarray:
    """Read an audio file as float32 samples in [-1, 1].

    Args:
        path: wav or flac file.
        expected_sampling_rate: when given, a file at another rate is an error.

    Returns:
        Samples of shape ``(T, C)``, float32 (a WAV shorter than its header is read as far as it
        goes, with a warning).
    """
    audio, sampling_rate = audio_io.read_audio(path, allow_truncated=True, dtype="float32")
    check_sampling_rate(path, sampling_rate, expected_sampling_rate)
    return audio


def _unreadable(path: str | os.PathLike, error: Exception) -> DataError:
    """The error of a data file that cannot be read, with the reason libsndfile hides ("System error")."""
    if os.path.islink(path) and not os.path.exists(path):
        reason = f"a link to {os.readlink(path)}, which does not exist"
    elif not os.path.exists(path):
        relative = "" if os.path.isabs(path) else f", read from the current folder {os.getcwd()}"
        reason = f"it does not exist{relative}"
    elif not os.access(path, os.R_OK):
        reason = os.strerror(errno.EACCES).lower()
    else:
        reason = str(error).splitlines()[0]
    return DataError(f"cannot read {path} as audio ({reason}): repair it or remove it from the data")


def read_header(path: str | os.PathLike, expected_sampling_rate: int | None = None) -> tuple[int, int]:
    """(samples, channels) of an audio file, from its header only (rate checked like :func:`read_training_audio`).

    Raises:
        DataError: the file cannot be read as audio, or is at another rate.
    """
    try:
        info = sf.info(os.fsencode(path))  # bytes: soundfile cannot encode a name that is not UTF-8
    except (sf.LibsndfileError, RuntimeError, OSError) as error:
        raise _unreadable(path, error) from None
    check_sampling_rate(path, info.samplerate, expected_sampling_rate)
    frames = audio_io.wav_frames(path)
    if frames is not None and frames[1] < frames[0]:  # libsndfile counts what is there: train on that
        logger.warning("%s is truncated: its header says %d frames, the file holds %d; re-transfer it", path,
                       *frames)
    return info.frames, info.channels


def num_frames(path: str | os.PathLike, expected_sampling_rate: int | None = None) -> int:
    """Length of an audio file in samples, read from its header only (rate checked like :func:`read_training_audio`)."""
    return read_header(path, expected_sampling_rate)[0]


class AudioFile:
    """An audio file decoded on demand: ``len(file)`` is its length in samples (from the header), and
    ``file[start:stop]`` decodes only those samples, as float32 ``(stop - start, C)``.

    A training crop of 0.2 s from a file of several seconds then costs a seek and the crop's frames
    instead of decoding the whole file; the samples are those :func:`read_training_audio` would give.

    Args:
        path: wav or flac file.
        frames: its length, when already known (skips the header read).
        expected_sampling_rate: when given (and ``frames`` is not), a file at another rate is an error.
    """

    def __init__(
        self, path: str | os.PathLike, frames: int | None = None, expected_sampling_rate: int | None = None
    ) -> None:
        self.path = Path(path)
        self.frames = num_frames(path, expected_sampling_rate) if frames is None else int(frames)

    def __len__(self) -> int:
        return self.frames

    def __getitem__(self, index: slice) -> np.ndarray:
        if not isinstance(index, slice):
            raise TypeError(f"AudioFile takes a slice of samples, not {type(index).__name__}")
        start, stop, step = index.indices(self.frames)
        if step != 1:
            raise ValueError("AudioFile reads contiguous samples only (step 1)")
        stop = max(start, stop)
        try:
            audio, rate = sf.read(os.fsencode(self.path), start=start, stop=stop, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, OSError) as error:
            raise _unreadable(self.path, error) from None
        check_finite(self.path, audio, rate, start)
        return audio


def check_finite(path: str | os.PathLike, audio: np.ndarray, rate: int, first_frame: int = 0) -> None:
    """Raise a DataError naming the file and the time of the first NaN or infinite sample in ``audio``
    (frames ``first_frame`` on of the file), where a model would learn from it."""
    finite = np.isfinite(audio)
    if finite.all():
        return
    frame, channel = np.argwhere(~finite)[0]
    value, frame = audio[frame, channel], frame + first_frame
    raise DataError(f"{path} has a non-finite sample ({value}) at {frame / rate:.6f} s (frame {frame}, channel "
                    f"{channel}): repair or re-export the file, or remove it from the data")
