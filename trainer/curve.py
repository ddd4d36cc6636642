"""Learning curves while training: a fixed dev subset scored every N steps.

Config (absent from the original recipes, so off there)::

    learning_curve:
        interval_steps: 500   # score every 500 steps (and at the last step)
        subset: dev           # a folder under data.path, or a path
        files: 48             # a fixed subset: that many files evenly spaced in the sorted list

Each point codes and decodes every file of the subset with the generator in eval mode (its full
forward pass, all codebooks; an ``output_delay`` of D samples is taken off the front of its output, the
input padded with D zeros) and records the means of PESQ-WB, STOI, ESTOI, SI-SDR and log-mel
distance (:mod:`utils.eval.metrics`; a metric undefined on some files, such as PESQ of a silent
decoding, is the mean of the others, and ``<metric>_scored`` gives their count), the codes of the
first codebook used on the subset, and the codes in
use / entropy per codebook from the EMA cluster sizes. Beside the step it records the training
CPU seconds (the process's CPU time in training steps, scoring excluded) and wall seconds. Rank 0
writes ``<expdir>/curve.json`` (one row per point; a resumed run keeps the earlier rows),
``<expdir>/curve.png`` and TensorBoard scalars under ``curve/``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from utils.audio import AUDIO_EXTENSIONS, read_mono
from utils.errors import CodecError
from utils.eval.metrics import METRIC_NAMES, evaluate_pair, save_figure
from utils.files import write_text_atomic

logger = logging.getLogger(__name__)

# Metrics plotted, with their axis labels.
PLOTTED = {
    "pesq_wb": "PESQ-WB",
    "stoi": "STOI",
    "si_sdr": "SI-SDR (dB)",
    "log_mel_distance": "log-mel distance",
    "dev_codes_used_0": "codes used, codebook 1 (dev)",
}


def points_to_json(rows: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Curve points with NaN as None (JSON has no NaN)."""
    return [{name: None if isinstance(value, float) and not math.isfinite(value) else value
             for name, value in row.items()} for row in rows]


def points_from_json(rows: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Curve points read back: None as NaN."""
    return [{name: math.nan if value is None else value for name, value in row.items()} for row in rows]


def curve_files(folder: str | Path, count: int) -> list[Path]:
    """``count`` files evenly spaced in the sorted audio files under ``folder`` (all if fewer)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CodecError(f"learning_curve.subset {folder} is not a folder: fix the config or build the corpus")
    files = sorted(path for path in folder.rglob("*") if path.suffix.lower() in AUDIO_EXTENSIONS and path.is_file())
    if not files:
        raise CodecError(f"learning_curve.subset {folder} holds no {'/'.join(AUDIO_EXTENSIONS)} files")
    if count <= 0 or count >= len(files):
        return files
    if count == 1:
        return files[:1]
    return [files[round(index * (len(files) - 1) / (count - 1))] for index in range(count)]


def _codes(generator: torch.nn.Module, audio: torch.Tensor) -> torch.Tensor | None:
    """Codes (K, T') of an autoencoder generator for ``audio`` (1, 1, T); None for other generators."""
    parts = [getattr(generator, name, None) for name in ("encoder", "projector", "quantizer")]
    if any(part is None for part in parts) or not hasattr(parts[2], "encode"):
        return None
    encoder, projector, quantizer = parts
    return quantizer.encode(projector(encoder(audio)))[0]


class LearningCurve:
    """Scores a fixed dev subset (see the module docstring); call :meth:`due` after each step."""

    def __init__(self, params: Mapping[str, Any], data_root: str | Path, sample_rate: int, hop: int,
                 expdir: str | Path, delay: int = 0) -> None:
        if not isinstance(params, Mapping):
            raise CodecError(f"learning_curve is {params!r}, not a mapping (interval_steps, subset, files): "
                             "fix the config")
        for key, default in (("interval_steps", 500), ("files", 48)):
            value = params.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise CodecError(f"learning_curve.{key} {value!r}: give a whole number above 0")
        self.interval = int(params.get("interval_steps", 500))
        subset = Path(params.get("subset", "dev"))
        folder = subset if subset.is_absolute() or subset.exists() else Path(data_root) / subset
        self.files = curve_files(folder, int(params.get("files", 48)))
        self.sample_rate = sample_rate
        self.hop = max(int(hop), 1)
        self.delay = delay  # the generator's output_delay: its output is scored from that sample on
        self.expdir = Path(expdir)
        self.audio = [self._read(path) for path in self.files]
        self.rows: list[dict[str, float]] = self._earlier_rows()

    def _read(self, path: Path) -> np.ndarray:
        audio, rate = read_mono(path)
        if rate != self.sample_rate:
            raise CodecError(f"{path} is {rate} Hz, the recipe {self.sample_rate} Hz: "
                             "give learning_curve.subset a folder at the recipe's rate")
        return audio

    def _earlier_rows(self) -> list[dict[str, float]]:
        path = self.expdir / "curve.json"
        if not path.is_file():
            return []
        try:
            return points_from_json(json.loads(path.read_text())["points"])
        except (ValueError, KeyError, TypeError):
            logger.warning("%s is unreadable: the learning curve starts again", path)
            return []

    def due(self, steps: int) -> bool:
        return steps % self.interval == 0 and not self.scored(steps)

    def scored(self, steps: int) -> bool:
        return any(row["steps"] == steps for row in self.rows)

    @torch.no_grad()
    def score(self, reconstruct: Callable[[torch.Tensor], torch.Tensor], generator: torch.nn.Module,
              usage: Mapping[str, float], steps: int, cpu_seconds: float, wall_seconds: float) -> dict[str, float]:
        """One point: ``reconstruct`` maps audio (1, 1, T) to audio (1, 1, T') on the generator's device."""
        device = next(generator.parameters()).device
        scores: dict[str, list[float]] = {name: [] for name in METRIC_NAMES}
        used: dict[int, set[int]] = {}
        for path, audio in zip(self.files, self.audio):
            padded = np.pad(audio, (0, self.delay + -(len(audio) + self.delay) % self.hop))
            signal = torch.from_numpy(padded).to(device).view(1, 1, -1)
            decoded = reconstruct(signal).float().cpu().numpy().reshape(-1)[self.delay : self.delay + len(audio)]
            for name, value in evaluate_pair(audio, decoded, self.sample_rate, name=str(path)).items():
                scores[name].append(value)
            codes = _codes(generator, signal)
            if codes is not None:
                for index, row in enumerate(codes.cpu().numpy()):
                    used.setdefault(index, set()).update(int(code) for code in row)
        point: dict[str, float] = {"steps": steps, "train_cpu_seconds": round(cpu_seconds, 3),
                                   "wall_seconds": round(wall_seconds, 3)}
        for name, values in scores.items():
            finite = [value for value in values if math.isfinite(value)]
            point[name] = float(np.mean(finite)) if finite else math.nan
            if len(finite) < len(values):  # a mean over fewer files than the subset says so
                point[f"{name}_scored"] = len(finite)
        for index, codes in sorted(used.items()):
            point[f"dev_codes_used_{index}"] = len(codes)
        point.update({name.split("/", 1)[-1]: value for name, value in usage.items()})
        self.rows = [row for row in self.rows if row["steps"] < steps] + [point]
        return point

    def write(self, title: str) -> None:
        """``curve.json`` and ``curve.png`` in the experiment folder."""
        self.expdir.mkdir(parents=True, exist_ok=True)
        document = {"files": [str(path) for path in self.files], "points": points_to_json(self.rows)}
        write_text_atomic(self.expdir / "curve.json", json.dumps(document, indent=1) + "\n")
        plot_curves({title: self.rows}, self.expdir / "curve.png")


def plot_curves(runs: Mapping[str, list[Mapping[str, float]]], path: str | Path, x: str = "steps") -> None:
    """One panel per plotted metric, one line per run, against ``x`` (``steps`` or ``train_cpu_seconds``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name in PLOTTED if any(name in row for rows in runs.values() for row in rows)]
    figure, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.2), squeeze=False)
    scale, label = (1 / 60, "training CPU minutes") if x == "train_cpu_seconds" else (1, "steps")
    for axis, name in zip(axes[0], names):
        for run, rows in runs.items():
            points = [(row[x] * scale, row[name]) for row in rows if name in row and math.isfinite(row[name])]
            if points:
                axis.plot(*zip(*points), marker=".", label=run)
        axis.set_title(PLOTTED[name], fontsize=9)
        axis.set_xlabel(label, fontsize=8)
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    save_figure(figure, path)
