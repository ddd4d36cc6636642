"""Opus reference codec: encode and decode a signal with Debian's ``opus-tools`` command-line tools.

``opusenc --bitrate 12.8 --framesize 20 --quiet in.wav out.opus`` then
``opusdec --rate 48000 --quiet out.opus out.wav``, in a temporary folder. The input is written as
16-bit PCM at its own rate (opusenc resamples to 48 kHz itself); the output is resampled back to the
input rate and aligned sample for sample with the input.

Alignment: opusdec already drops the encoder's pre-skip (312 samples at 48 kHz), but the decoded
signal still comes out :data:`OPUSDEC_LEAD_SAMPLES` samples early. Measured by cross-correlation on
speech-like harmonic signals (:func:`utils.eval.probe.speech_like_signal`, several seeds, input at 16, 24
and 48 kHz, opus-tools 0.2 / libopus 1.3): the peak is at a lead of exactly 2 samples at 48 kHz every
time (correlation 0.964 unshifted, 0.985 shifted). We delay the decoded 48 kHz signal by that amount;
:func:`estimate_lag` then reads 0 (see tests/test_opus_baseline.py).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from utils.audio import resample
from utils.errors import CodecError

OPUS_SAMPLE_RATE = 48000
OPUSDEC_LEAD_SAMPLES = 2
DEFAULT_BITRATE_KBPS = 12.8
DEFAULT_FRAMESIZE_MS = 20
BITRATE_RANGE_KBPS = (6.0, 256.0)  # opusenc's --bitrate for one channel; outside it, it picks its own


@dataclass
class OpusResult:
    """Decoded audio ``(T,)`` float32 at ``sample_rate`` (the input's rate and length) and the real
    bitrates over the input duration: ``bitrate_kbps`` from the whole Ogg Opus file (headers, tags
    and page framing included; dominates on sub-second clips), ``payload_kbps`` from the audio
    packets alone (comparable with a codec's bitstream rate)."""

    audio: np.ndarray
    sample_rate: int
    bitrate_kbps: float
    payload_kbps: float
    file_bytes: int


def check_opus_bitrate(kbps: float, option: str = "--bitrate") -> None:
    """Raise :class:`CodecError` unless opusenc codes ``kbps`` as asked (a mono signal)."""
    low, high = BITRATE_RANGE_KBPS
    if not low <= kbps <= high:
        raise CodecError(f"{option} {kbps:g}: Opus codes {low:g} to {high:g} kbps per channel; give a rate there")


def opus_available() -> bool:
    """Whether ``opusenc`` and ``opusdec`` are on PATH (Debian package ``opus-tools``)."""
    return shutil.which("opusenc") is not None and shutil.which("opusdec") is not None


def _run(command: list[str]) -> None:
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        message = completed.stderr.strip().splitlines()[-1:] or ["no message"]
        raise CodecError(f"{command[0]} failed (exit {completed.returncode}): {message[0]}")


def opus_roundtrip(
    audio: np.ndarray,
    sample_rate: int,
    bitrate_kbps: float = DEFAULT_BITRATE_KBPS,
    framesize_ms: float = DEFAULT_FRAMESIZE_MS,
) -> OpusResult:
    """Encode ``audio`` ``(T,)`` with Opus and decode it again, aligned to the input.

    Raises :class:`CodecError` when opus-tools is missing or a tool fails.
    """
    check_opus_bitrate(bitrate_kbps, "Opus bitrate")
    if not opus_available():
        raise CodecError("opusenc/opusdec not found: install the Debian package opus-tools (bash utils/system_deps.sh)")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1 or len(audio) == 0:
        raise CodecError(f"opus_roundtrip expects a non-empty mono signal (T,), got shape {audio.shape}")
    with tempfile.TemporaryDirectory(prefix="opus_baseline_") as folder:
        input_path, encoded_path, decoded_path = (Path(folder) / name for name in ("in.wav", "out.opus", "out.wav"))
        sf.write(input_path, np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16")
        _run(
            [
                "opusenc",
                "--bitrate",
                f"{bitrate_kbps:g}",
                "--framesize",
                f"{framesize_ms:g}",
                "--quiet",
                str(input_path),
                str(encoded_path),
            ]
        )
        _run(["opusdec", "--rate", str(OPUS_SAMPLE_RATE), "--quiet", str(encoded_path), str(decoded_path)])
        encoded = encoded_path.read_bytes()
        decoded, decoded_rate = sf.read(decoded_path, dtype="float32", always_2d=True)
    decoded = np.concatenate([np.zeros(OPUSDEC_LEAD_SAMPLES, np.float32), decoded.mean(axis=1)])
    decoded = resample(decoded, decoded_rate, sample_rate, np.float32)
    decoded = np.pad(decoded, (0, max(0, len(audio) - len(decoded))))[: len(audio)]
    kilobits_per_byte_second = 8 / (len(audio) / sample_rate) / 1000
    # The first two packets of an Ogg Opus stream are the OpusHead and OpusTags headers.
    payload_bytes = sum(ogg_packet_sizes(encoded)[2:])
    return OpusResult(
        audio=decoded,
        sample_rate=sample_rate,
        bitrate_kbps=len(encoded) * kilobits_per_byte_second,
        payload_kbps=payload_bytes * kilobits_per_byte_second,
        file_bytes=len(encoded),
    )


def ogg_packet_sizes(data: bytes) -> list[int]:
    """Byte sizes of the packets of a single-stream Ogg file, in order (RFC 3533 page lacing)."""
    sizes: list[int] = []
    packet = 0
    position = 0
    while position < len(data):
        if data[position : position + 4] != b"OggS" or position + 27 > len(data):
            raise CodecError(f"not an Ogg stream: no page header at byte {position}")
        n_segments = data[position + 26]
        lacing = data[position + 27 : position + 27 + n_segments]
        for segment in lacing:
            packet += segment
            if segment < 255:
                sizes.append(packet)
                packet = 0
        position += 27 + n_segments + sum(lacing)
    return sizes


def estimate_lag(reference: np.ndarray, degraded: np.ndarray, max_lag: int = 1000) -> int:
    """Samples by which ``degraded`` lags ``reference`` (negative: it leads), by cross-correlation
    over lags in ``[-max_lag, max_lag]``."""
    length = min(len(reference), len(degraded))
    reference = np.asarray(reference[:length], np.float64)
    degraded = np.asarray(degraded[:length], np.float64)
    size = 1 << int(np.ceil(np.log2(2 * length)))
    correlation = np.fft.irfft(np.fft.rfft(degraded, size) * np.conj(np.fft.rfft(reference, size)), size)
    lags = np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)])
    return int(lags[np.argmax(correlation[lags])])
