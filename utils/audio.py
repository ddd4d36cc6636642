"""Audio file input and output with clear errors and atomic writes."""

from __future__ import annotations

import os

import numpy as np
import soundfile as sf
import soxr

from utils.errors import CodecError
from utils.files import atomic_output


def read_audio(path: str) -> tuple[np.ndarray, int]:
    """Read an audio file as float64 (T, C) in [-1, 1] and its sample rate."""
    if not os.path.isfile(path):
        raise CodecError(f"input file {path} does not exist: check the path")
    if os.path.getsize(path) == 0:
        raise CodecError(f"input file {path} is empty: give a wav/flac/ogg file with audio in it")
    try:
        data, rate = sf.read(path, always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as error:
        reason = str(error).splitlines()[0]
        raise CodecError(f"cannot read {path} as audio ({reason}): give a wav/flac/ogg file") from None
    if data.shape[0] == 0:
        raise CodecError(f"input file {path} holds no samples: give a file with audio in it")
    return data, rate


def resample(data: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample (T, C) audio with soxr (high quality)."""
    if rate_in == rate_out:
        return data
    return soxr.resample(data, rate_in, rate_out, quality="HQ")


def write_audio(path: str, data: np.ndarray, rate: int, subtype: str = "PCM_16") -> None:
    """Write (T, C) audio to a temp file beside `path`, then rename: never a half-written file."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(folder):
        raise CodecError(f"output folder {folder} does not exist: create it first")
    suffix = os.path.splitext(path)[1] or ".wav"
    try:
        with atomic_output(path, suffix) as tmp:
            sf.write(tmp, data, rate, subtype)
    except (sf.LibsndfileError, ValueError, TypeError) as error:
        raise CodecError(f"cannot write {path} ({error}): use a .wav or .flac output name") from None
