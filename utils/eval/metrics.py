"""Objective speech-quality metrics for comparing a decoded signal with its reference.

All functions take 1-D float arrays ``(T,)`` in [-1, 1]; a single-channel ``(T, 1)`` or ``(1, T)`` array is
taken as ``(T,)``. A multi-channel, integer, complex or scalar array is refused with a CodecError naming the
fix (:func:`mono_signal`). Pairs of different lengths are cut to the common length (the codec and Opus paths
are both delay-compensated, so no search for a lag is made).

- wide-band PESQ (ITU-T P.862.2), computed at 16 kHz after resampling with soxr
- STOI and extended STOI (pystoi)
- ViSQOL speech mode, only when the optional ``visqol`` package imports
- scale-invariant SDR
- log-mel distance: L1 between natural-log mel magnitudes (librosa mel filters)
"""

from __future__ import annotations

import importlib.util
import logging
import math
import warnings
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from utils.audio import AUDIO_EXTENSIONS, librosa_filters, read_mono, resample
from utils.errors import CodecError
from utils.files import atomic_output, walk_every_folder, write_failure

logger = logging.getLogger(__name__)

PESQ_SAMPLE_RATE = 16000
STOI_RATE = 10000  # pystoi's internal sample rate
METRIC_NAMES = ("pesq_wb", "stoi", "estoi", "si_sdr", "log_mel_distance")
VISQOL_NAME = "visqol"
# Columns of a score row that describe the file, not its quality: no mean is taken of them.
FILE_COLUMNS = ("file", "sample_rate", "seconds")


def mono_signal(audio: np.ndarray, label: str = "signal") -> np.ndarray:
    """`audio` as the float array ``(T,)`` the metrics score; a ``(T, 1)`` or ``(1, T)`` array is flattened.

    Anything else is a CodecError naming `label` and the fix: soxr, which changes the rates, takes a
    ``(1, T)`` array for T channels of one sample (and crashes Python on it), and integer samples would be
    scored as if 32768 times too loud.
    """
    array = np.asarray(audio)
    if np.iscomplexobj(array):
        raise CodecError(f"the {label} is complex ({array.dtype}): the metrics score real samples in [-1, 1]")
    if not np.issubdtype(array.dtype, np.floating):
        raise CodecError(f"the {label} holds {array.dtype} samples: the metrics take floats in [-1, 1], so scale "
                         "integer ones first (int16: x / 32768)")
    if array.ndim == 2 and 1 in array.shape:
        return array.reshape(-1)
    if array.ndim != 1:
        raise CodecError(f"the {label} has shape {array.shape}: the metrics score one channel, a (samples,) array; "
                         "give one channel, or the mean of the channels")
    return array


def cut_to_common_length(reference: np.ndarray, degraded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both signals as :func:`mono_signal` takes them, truncated to the shorter length."""
    reference, degraded = mono_signal(reference, "reference"), mono_signal(degraded, "degraded signal")
    length = min(len(reference), len(degraded))
    return reference[:length], degraded[:length]


def pesq_wb(reference: np.ndarray, degraded: np.ndarray, sample_rate: int) -> float:
    """Wide-band PESQ MOS-LQO (about 1.0 to 4.64); NaN when PESQ cannot score the pair (no speech
    found in the reference, a silent signal, or shorter than PESQ's minimum of about 0.25 s)."""
    from pesq import PesqError, pesq

    reference, degraded = cut_to_common_length(reference, degraded)
    reference_16k = resample(reference, sample_rate, PESQ_SAMPLE_RATE, np.float32)
    degraded_16k = resample(degraded, sample_rate, PESQ_SAMPLE_RATE, np.float32)
    if not (np.any(reference_16k) and np.any(degraded_16k)):
        return math.nan
    try:
        return float(pesq(PESQ_SAMPLE_RATE, reference_16k, degraded_16k, "wb"))
    except PesqError as error:
        logger.warning("PESQ undefined for this pair (%s): reported as NaN", type(error).__name__)
        return math.nan


def stoi(reference: np.ndarray, degraded: np.ndarray, sample_rate: int, extended: bool = False) -> float:
    """STOI (or ESTOI when ``extended``) in [0, 1] (ESTOI may dip below 0); NaN when the reference is
    silent, or the clip has fewer than 30 active 25.6 ms frames (about 0.4 s of speech after silent-frame
    removal). The signals go to pystoi at their own rate (it resamples to 10 kHz)."""
    from pystoi import stoi as pystoi_stoi

    reference, degraded = cut_to_common_length(reference, degraded)
    if not np.any(reference):
        return math.nan
    name = "ESTOI" if extended else "STOI"
    # pystoi works at 10 kHz in 256-sample frames, 128 apart: a clip too short for 30 of them, even
    # before its silent frames go, is undefined (and under one frame, pystoi fails outright).
    if reference.shape[-1] * STOI_RATE < (256 + 29 * 128) * sample_rate:
        logger.warning("%s undefined for this clip (%.3f s, under 0.4 s): reported as NaN", name,
                       reference.shape[-1] / sample_rate)
        return math.nan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score = pystoi_stoi(reference.astype(np.float64), degraded.astype(np.float64), sample_rate, extended=extended)
    # pystoi signals a too-short clip only by a warning and a placeholder score of 1e-5.
    if any("Not enough STFT frames" in str(warning.message) for warning in caught):
        logger.warning("%s undefined for this clip (too little active speech): reported as NaN", name)
        return math.nan
    return float(score)


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Signal-to-noise ratio in dB of `estimate` against `reference` (same shape, any rank): how
    closely two codings of the same signal agree; infinite where they are identical."""
    reference = np.asarray(reference, np.float64)
    noise = np.sum((reference - np.asarray(estimate, np.float64)) ** 2)
    return float("inf") if noise == 0 else float(10 * np.log10(np.sum(reference**2) / noise))


def si_sdr(reference: np.ndarray, estimate: np.ndarray, eps: float = 1e-12) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (zero-mean signals, optimal scaling); NaN when
    either signal is constant (nothing left once its mean is removed: the ratio would be set by ``eps``)."""
    reference, estimate = cut_to_common_length(reference, estimate)
    if not (reference.size and np.ptp(reference) > 0 and np.ptp(estimate) > 0):
        return math.nan
    reference = reference.astype(np.float64) - np.mean(reference)
    estimate = estimate.astype(np.float64) - np.mean(estimate)
    scale = np.dot(estimate, reference) / (np.dot(reference, reference) + eps)
    target = scale * reference
    distortion = estimate - target
    return float(10 * np.log10((np.dot(target, target) + eps) / (np.dot(distortion, distortion) + eps)))


@lru_cache(maxsize=8)
def _mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    return librosa_filters().mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=0.0, fmax=sample_rate / 2)


def log_mel_spectrogram(
    audio: np.ndarray,
    sample_rate: int,
    frame_ms: float = 40.0,
    hop_ms: float = 10.0,
    n_mels: int = 80,
    floor: float = 1e-5,
) -> np.ndarray:
    """Natural-log mel magnitude ``(n_mels, frames)`` of `audio` (as :func:`mono_signal` takes it); Hann
    window, centered frames (reflect pad)."""
    audio = mono_signal(audio, "audio")
    n_fft = int(round(frame_ms * sample_rate / 1000))
    hop_length = int(round(hop_ms * sample_rate / 1000))
    audio = np.asarray(audio, dtype=np.float64)
    padded = np.pad(audio, n_fft // 2, mode="reflect" if len(audio) > n_fft // 2 else "constant")
    if len(padded) < n_fft:
        padded = np.pad(padded, (0, n_fft - len(padded)))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length]
    magnitude = np.abs(np.fft.rfft(frames * np.hanning(n_fft + 1)[:-1], axis=1)).T
    mel = _mel_filters(sample_rate, n_fft, n_mels) @ magnitude
    return np.log(np.maximum(mel, floor)).astype(np.float32)


def log_mel_distance(reference: np.ndarray, degraded: np.ndarray, sample_rate: int) -> float:
    """Mean absolute difference of the log-mel spectrograms (0 for identical signals)."""
    reference, degraded = cut_to_common_length(reference, degraded)
    difference = log_mel_spectrogram(reference, sample_rate) - log_mel_spectrogram(degraded, sample_rate)
    return float(np.mean(np.abs(difference)))


def visqol_available() -> bool:
    """Whether the optional ``visqol`` package (PyPI ``visqol-python``) can be imported."""
    return importlib.util.find_spec("visqol") is not None


@lru_cache(maxsize=1)
def _visqol_speech_api():
    from visqol import VisqolApi

    api = VisqolApi()
    api.create(mode="speech", use_lattice_model=False)
    return api


def visqol_speech(reference: np.ndarray, degraded: np.ndarray, sample_rate: int) -> float:
    """ViSQOL MOS-LQO in speech mode (signals resampled to 16 kHz), NaN for clips too short to score.
    Needs :func:`visqol_available`."""
    reference, degraded = cut_to_common_length(reference, degraded)
    reference_16k = resample(reference, sample_rate, PESQ_SAMPLE_RATE, np.float32).astype(np.float64)
    degraded_16k = resample(degraded, sample_rate, PESQ_SAMPLE_RATE, np.float32).astype(np.float64)
    try:
        result = _visqol_speech_api().measure_from_arrays(reference_16k, degraded_16k, PESQ_SAMPLE_RATE)
    except (IndexError, ValueError, RuntimeError) as error:
        # The port fails inside its patch search on clips shorter than one analysis patch (~0.5-1 s).
        logger.warning("ViSQOL undefined for this pair (%s: %s): reported as NaN", type(error).__name__, error)
        return math.nan
    return float(result.moslqo)


def metric_names(with_visqol: bool) -> tuple[str, ...]:
    """The keys :func:`evaluate_pair` returns, in table order."""
    return METRIC_NAMES + ((VISQOL_NAME,) if with_visqol else ())


def evaluate_pair(
    reference: np.ndarray,
    degraded: np.ndarray,
    sample_rate: int,
    degraded_sample_rate: int | None = None,
    with_visqol: bool = False,
    name: str = "this pair",
) -> dict[str, float]:
    """All metrics for one (reference, degraded) pair, keyed by :func:`metric_names`.

    Both signals are 1-D float arrays (or single-channel ones, as :func:`mono_signal` takes them). The
    degraded signal is resampled to the reference rate when ``degraded_sample_rate`` differs, then both
    are cut to the common length. A silent reference leaves every metric undefined (NaN); a
    silent (or constant) decoded signal leaves PESQ-WB and SI-SDR undefined, while STOI and ESTOI score
    it as unintelligible. Each such case is logged once as a warning naming ``name`` (the file).
    """
    reference = mono_signal(reference, "reference").astype(np.float32, copy=False)
    degraded = mono_signal(degraded, "degraded signal").astype(np.float32, copy=False)
    if degraded_sample_rate is not None and degraded_sample_rate != sample_rate:
        degraded = resample(degraded, degraded_sample_rate, sample_rate)
    reference, degraded = cut_to_common_length(reference, degraded)
    if len(reference) == 0:
        raise CodecError("cannot evaluate an empty signal")
    if not np.any(reference):
        logger.warning("%s: the reference is silent: every metric is undefined, reported as NaN", name)
        return dict.fromkeys(metric_names(with_visqol), math.nan)
    if not np.any(degraded):
        logger.warning("%s: decoded signal is silent: PESQ-WB and SI-SDR are undefined, reported as NaN", name)
    elif np.ptp(degraded) == 0:
        logger.warning("%s: decoded signal is constant: SI-SDR is undefined, reported as NaN", name)
    if np.ptp(reference) == 0:
        logger.warning("%s: the reference is constant: SI-SDR is undefined, reported as NaN", name)
    scores = {
        "pesq_wb": pesq_wb(reference, degraded, sample_rate),
        "stoi": stoi(reference, degraded, sample_rate),
        "estoi": stoi(reference, degraded, sample_rate, extended=True),
        "si_sdr": si_sdr(reference, degraded),
        "log_mel_distance": log_mel_distance(reference, degraded, sample_rate),
    }
    if with_visqol:
        scores[VISQOL_NAME] = visqol_speech(reference, degraded, sample_rate)
    return scores


def match_audio_files(reference: str | Path, degraded: str | Path) -> list[tuple[str, Path, Path]]:
    """Pairs ``(relative name, reference path, degraded path)``: two files, or two folders matched by relative path.

    In folders the extension may differ (``a/b.wav`` matches ``a/b.flac``); any of
    ``utils.audio.AUDIO_EXTENSIONS`` is read. Raises :class:`CodecError` when a path is missing, a file is
    paired with a folder, a folder under either cannot be listed (its files would be left out), nothing
    matches, or one folder holds two files of one name (``x.wav`` and ``x.flac``).
    """
    reference_dir, degraded_dir = Path(reference), Path(degraded)
    if reference_dir.is_file() and degraded_dir.is_file():
        return [(reference_dir.name, reference_dir, degraded_dir)]
    labelled = (("reference", reference_dir), ("degraded", degraded_dir))
    for label, folder in labelled:
        if not folder.exists():
            raise CodecError(f"{label} {folder} not found: check the path")
    for label, folder in labelled:
        if not folder.is_dir():
            raise CodecError(f"{label} {folder} is a file and the other a folder: give two files or two folders")

    def index(label: str, folder: Path) -> dict[str, Path]:
        files: dict[str, Path] = {}
        listing = walk_every_folder(folder, f"make it readable or move it out of the {label} folder {folder}")
        for path in sorted(Path(parent) / name for parent, _, names in listing for name in names):
            if path.suffix.lower() not in AUDIO_EXTENSIONS or not path.is_file():
                continue
            name = str(path.relative_to(folder).with_suffix(""))
            if name in files:
                raise CodecError(f"{label} files {files[name]} and {path} differ only in their extension, so either "
                                 "could be the pair of the other side's file: keep one of them")
            files[name] = path
        return files

    references, degraded = index("reference", reference_dir), index("degraded", degraded_dir)
    names = sorted(references.keys() & degraded.keys())
    if not names:
        raise CodecError(
            f"no matching audio files ({'/'.join(AUDIO_EXTENSIONS)}): {len(references)} in {reference_dir}, "
            f"{len(degraded)} in {degraded_dir}, none share a relative name"
        )
    unscored = sorted(references.keys() - degraded.keys())
    if unscored:  # a mean over fewer files than the reference set must not pass for the whole set's
        shown = ", ".join(str(references[name].relative_to(reference_dir)) for name in unscored[:3])
        logger.warning(
            "%d of %d reference files have no degraded file in %s and are not scored: %s%s", len(unscored),
            len(references), degraded_dir, shown, ", ..." if len(unscored) > 3 else "")
    return [(str(references[name].relative_to(reference_dir)), references[name], degraded[name]) for name in names]


def mel_axis_ticks(sample_rate: int, n_mels: int) -> tuple[list[float], list[str]]:
    """Positions on a mel-bin axis (bin i spans [i, i + 1)) of round frequencies, and their labels in Hz."""
    centers = librosa_filters().mel_frequencies(n_mels=n_mels + 2, fmin=0.0, fmax=sample_rate / 2)[1:-1]
    round_hz = [hz for hz in (100, 250, 500, 1000, 2000, 4000, 8000, 16000, 24000) if centers[0] <= hz <= centers[-1]]
    positions = [float(np.interp(hz, centers, np.arange(n_mels))) + 0.5 for hz in round_hz]
    return positions, [str(hz) for hz in round_hz]


def save_spectrogram_figure(
    path: str | Path, spectrograms: dict[str, np.ndarray], sample_rate: int, hop_ms: float = 10.0
) -> None:
    """One PNG with the log-mel spectrograms ``(n_mels, frames)`` side by side, titled by key; frequency in Hz.
    Written whole or not at all; a failure to write it is a CodecError naming ``path`` and the system's reason."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    low = min(float(np.percentile(s, 1)) for s in spectrograms.values())
    high = max(float(s.max()) for s in spectrograms.values())
    figure, axes = plt.subplots(
        1, len(spectrograms), figsize=(4.5 * len(spectrograms), 3.5), squeeze=False, layout="constrained"
    )
    for axis, (title, spectrogram) in zip(axes[0], spectrograms.items()):
        duration = spectrogram.shape[1] * hop_ms / 1000
        extent = (0, duration, 0, spectrogram.shape[0])
        image = axis.imshow(spectrogram, origin="lower", aspect="auto", vmin=low, vmax=high, extent=extent)
        axis.set_title(title)
        axis.set_xlabel("time (s)")
        axis.set_yticks(*mel_axis_ticks(sample_rate, spectrogram.shape[0]))
        axis.set_ylabel("frequency (Hz, mel scale)")
    figure.colorbar(image, ax=axes[0].tolist(), label="log magnitude")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_figure(figure, path)


def save_figure(figure: Any, path: str | Path) -> None:
    """Write the matplotlib `figure` to the PNG `path` and close it. Through a temp file: a full disk
    leaves no half-written image and is a CodecError naming `path` and the system's reason."""
    import matplotlib.pyplot as plt

    try:
        with atomic_output(path, ".png") as temporary:
            figure.savefig(temporary, dpi=100, format="png")
    except OSError as error:
        raise write_failure(path, error) from None
    finally:
        plt.close(figure)


METRIC_LABELS = {
    "pesq_wb": "PESQ-WB",
    "stoi": "STOI",
    "estoi": "ESTOI",
    "si_sdr": "SI-SDR",
    "log_mel_distance": "LogMel",
    "visqol": "ViSQOL",
}


def evaluate_directories(
    reference_dir: str | Path,
    degraded_dir: str | Path,
    baseline: Callable[[np.ndarray, int], tuple[np.ndarray, dict[str, float]]] | None = None,
    baseline_name: str = "opus",
    with_visqol: bool = False,
    plots_dir: str | Path | None = None,
) -> list[dict[str, float | str]]:
    """Evaluate every degraded file against the reference of the same relative name (or one file against one).

    ``baseline(reference, sample_rate) -> (decoded, extra columns)`` (e.g. Opus, with its bitrates
    ``{"kbps": ..., "payload_kbps": ...}``) is run on each reference and scored too; its scores and
    extra columns go under keys prefixed ``"<baseline_name>_"``. With ``plots_dir``, one PNG of
    log-mel spectrograms per file is written there (same relative name).
    Returns one row per file: ``file``, ``sample_rate``, ``seconds`` and the metrics.
    """
    from tqdm import tqdm

    rows: list[dict[str, float | str]] = []
    for name, reference_path, degraded_path in tqdm(match_audio_files(reference_dir, degraded_dir), disable=None):
        reference, sample_rate = read_mono(reference_path)
        degraded, degraded_rate = read_mono(degraded_path)
        degraded = resample(degraded, degraded_rate, sample_rate, np.float32)
        row: dict[str, float | str] = {"file": name, "sample_rate": sample_rate}
        row["seconds"] = len(reference) / sample_rate
        row.update(evaluate_pair(reference, degraded, sample_rate, with_visqol=with_visqol, name=name))
        spectrograms = {"reference": reference, "decoded": degraded}
        if baseline is not None:
            baseline_audio, extra = baseline(reference, sample_rate)
            scores = evaluate_pair(reference, baseline_audio, sample_rate, with_visqol=with_visqol,
                                   name=f"{name} ({baseline_name})")
            row.update({f"{baseline_name}_{key}": value for key, value in {**scores, **extra}.items()})
            title = f"{baseline_name} ({extra['kbps']:.1f} kbps)" if "kbps" in extra else baseline_name
            spectrograms[title] = baseline_audio
        if plots_dir is not None:
            length = min(len(audio) for audio in spectrograms.values())
            save_spectrogram_figure(
                (Path(plots_dir) / name).with_suffix(".png"),
                {title: log_mel_spectrogram(audio[:length], sample_rate) for title, audio in spectrograms.items()},
                sample_rate,
            )
        rows.append(row)
    return rows


def metric_columns(rows: list[dict[str, float | str]]) -> list[str]:
    """The columns of score rows that are scores (not :data:`FILE_COLUMNS`), in row order."""
    return [key for key, value in rows[0].items() if key not in FILE_COLUMNS and not isinstance(value, str)]


def mean_row(rows: list[dict[str, float | str]]) -> dict[str, float | str]:
    """Column means of the score columns (:func:`metric_columns`), with ``file`` set to ``"mean"``.

    NaN entries (files a metric cannot score) are left out; :func:`scored_counts` says how many files
    each mean covers. A bitrate column (``*kbps``) is weighted by each file's ``seconds``, where rows have
    it: the total bits over the total duration.
    """
    means: dict[str, float | str] = {"file": "mean"}
    for key in metric_columns(rows):
        values = np.array([float(row[key]) for row in rows], dtype=np.float64)
        finite = np.isfinite(values)
        if not finite.any():
            means[key] = math.nan
        elif key.endswith("kbps") and "seconds" in rows[0]:
            seconds = np.array([float(row["seconds"]) for row in rows], dtype=np.float64)
            means[key] = float(np.sum(values[finite] * seconds[finite]) / np.sum(seconds[finite]))
        else:
            means[key] = float(np.mean(values[finite]))
    return means


def scored_counts(rows: list[dict[str, float | str]]) -> dict[str, int]:
    """How many rows each score column's mean covers: its finite entries."""
    return {key: sum(math.isfinite(float(row[key])) for row in rows) for key in metric_columns(rows)}


def format_table(rows: list[dict[str, float | str]], names: tuple[str, ...], baseline_name: str | None = None) -> str:
    """A text table: one line per row, one column per metric (ours, then the baseline's), each as wide as
    its widest entry and two spaces apart. Floats print with 3 decimals, integers (file counts) as they are."""
    systems = ["ours"] + ([baseline_name] if baseline_name else [])
    columns = [(name, system) for name in names for system in systems]

    def cell(row: dict[str, float | str], name: str, system: str) -> str:
        value = row[name if system == "ours" else f"{system}_{name}"]
        if isinstance(value, int):
            return str(value)
        return f"{float(value):.3f}" if math.isfinite(float(value)) else "nan"

    body = [[str(row["file"]), *(cell(row, *column) for column in columns)] for row in rows]
    widths = [max(len(line[index]) for line in body) for index in range(len(columns) + 1)]
    widths[0] = max(widths[0], len("file"))
    if baseline_name:
        widths[1:] = [max(width, len(system)) for width, (_, system) in zip(widths[1:], columns)]
    for group, name in enumerate(names):  # a metric's label spans its systems' columns
        last = (group + 1) * len(systems)
        span = sum(widths[last - len(systems) + 1:last + 1]) + 2 * (len(systems) - 1)
        widths[last] += max(0, len(METRIC_LABELS.get(name, name)) - span)

    def line(cells: list[str], cell_widths: list[int]) -> str:
        return "  ".join(text.ljust(width) for text, width in zip(cells, cell_widths)).rstrip()

    group_widths = [sum(widths[1 + group * len(systems):1 + (group + 1) * len(systems)]) + 2 * (len(systems) - 1)
                    for group in range(len(names))]
    lines = [line(["file", *(METRIC_LABELS.get(name, name) for name in names)], [widths[0], *group_widths])]
    if baseline_name:
        lines.append(line(["", *(system for _, system in columns)], widths))
    lines.extend(line(cells, widths) for cells in body)
    return "\n".join(lines)
