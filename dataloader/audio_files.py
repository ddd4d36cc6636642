"""Finding and reading the audio files a dataset is made of (read as the codec reads them,
`utils.audio.read_audio`, with the config's sampling rate enforced)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import soundfile as sf

from utils import audio as audio_io

AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac")


def find_audio_files(root: str | os.PathLike, extensions: Iterable[str] = AUDIO_EXTENSIONS) -> list[Path]:
    """List the audio files under a folder, recursively, sorted by path.

    Args:
        root: folder to search; symbolic links to folders are followed.
        extensions: file endings to keep, compared without regard to case.

    Returns:
        The matching files, sorted so that every process sees the same order.
    """
    endings = tuple(ext.lower() for ext in extensions)
    found = []
    for folder, _, names in os.walk(root, followlinks=True):
        found.extend(Path(folder) / name for name in names if name.lower().endswith(endings))
    return sorted(found)


def read_file_list(list_file: str | os.PathLike) -> list[Path]:
    """Read a text file naming one audio file per line (blank lines ignored), sorted by path."""
    with open(list_file, encoding="utf-8") as handle:
        return sorted(Path(line.strip()) for line in handle if line.strip())


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
            f"{what}: no {'/'.join(AUDIO_EXTENSIONS)} files found in {path}; "
            "point data.path / data.subset in the config at a folder of audio files"
        )
    return files


def check_sampling_rate(path: str | os.PathLike, sampling_rate: int, expected: int | None) -> None:
    """Raise a ValueError naming the file and the fix when its rate differs from the expected one."""
    if expected is not None and sampling_rate != expected:
        raise ValueError(
            f"{path} is sampled at {sampling_rate} Hz but the config's sampling_rate is {expected} Hz; "
            f"resample the data to {expected} Hz or use a config made for {sampling_rate} Hz"
        )


def read_audio(path: str | os.PathLike, expected_sampling_rate: int | None = None) -> np.ndarray:
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


def read_header(path: str | os.PathLike, expected_sampling_rate: int | None = None) -> tuple[int, int]:
    """(samples, channels) of an audio file, from its header only (rate checked like :func:`read_audio`).

    Raises:
        ValueError: the file cannot be read as audio, or is at another rate.
    """
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as error:
        raise ValueError(f"cannot read {path} as audio ({error}): repair it or remove it from the data") from None
    check_sampling_rate(path, info.samplerate, expected_sampling_rate)
    return info.frames, info.channels


def num_frames(path: str | os.PathLike, expected_sampling_rate: int | None = None) -> int:
    """Length of an audio file in samples, read from its header only (rate checked like :func:`read_audio`)."""
    return read_header(path, expected_sampling_rate)[0]


class AudioFile:
    """An audio file decoded on demand: ``len(file)`` is its length in samples (from the header), and
    ``file[start:stop]`` decodes only those samples, as float32 ``(stop - start, C)``.

    A training crop of 0.2 s from a file of several seconds then costs a seek and the crop's frames
    instead of decoding the whole file; the samples are those :func:`read_audio` would give.

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
        audio, _ = sf.read(self.path, start=start, stop=max(start, stop), dtype="float32", always_2d=True)
        return audio
