"""The test stage: code every file of a subset with an encoder and a decoder checkpoint, offline, as the
original's ``codecTest.py``; optionally score the outputs with the objective metrics."""

from __future__ import annotations

import csv
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from tqdm import tqdm

from dataloader import build_dataset
from models.registry import AUTOENCODER_TYPES
from trainer.analysis import quantized_latent
from utils.audio import check_file_samples
from utils.checkpoint import check_codec_pair, load_autoencoder, load_generator
from utils.errors import CodecError
from utils.experiment_config import output_delay
from utils.files import case_twins, ignores_case, make_output_folder

logger = logging.getLogger(__name__)


def _steps_of(checkpoint: str) -> str:
    return Path(checkpoint).name.split("steps")[0].split("-")[-1]


def output_folder(
    encoder_checkpoint: str, decoder_checkpoint: str, encoder_config: Mapping[str, Any], subset: str,
    output_dir: str, specific_folder: bool = False,
) -> Path:
    """Where the outputs go: ``output_dir`` itself, or (the original's layout)
    ``<output_dir>/<encoder folder>-<decoder folder>_<encoder steps>-<decoder steps>/<subset folder>``."""
    if specific_folder:
        return Path(output_dir)
    encoder_name = Path(encoder_checkpoint).resolve().parent.name
    decoder_name = Path(decoder_checkpoint).resolve().parent.name
    run = f"{encoder_name}-{decoder_name}_{_steps_of(encoder_checkpoint)}-{_steps_of(decoder_checkpoint)}"
    return Path(output_dir) / run / str(encoder_config["data"]["subset"][subset])


class OfflineCodec:
    """Encoder checkpoint + decoder checkpoint (AudioDec decoder or vocoder), whole-file passes.

    The original's test stage runs the models' offline `forward` (any mode, causal or not), not
    the warmed-up streaming step of `utils.audiodec.StreamingCodec`; their outputs differ (the
    offline transposed convolutions pad by repeating the first frame), so the test stage keeps
    its own pass to give the original's samples. The original codes the file as it is (its last
    frame covers the partial hop) and writes the whole output, up to a hop longer than the input;
    this writes the first T samples of the same output, its input's length. A model trained with an
    output delay is coded with the delay (zeros) appended and padded to whole hops instead.
    """

    def __init__(self, encoder_checkpoint: str, decoder_checkpoint: str, device: str | torch.device = "cpu") -> None:
        self.encoder, self.encoder_config = load_autoencoder(encoder_checkpoint)
        self.decoder, self.decoder_config = load_generator(decoder_checkpoint)
        check_codec_pair(encoder_checkpoint, self.encoder_config, decoder_checkpoint, self.decoder_config,
                         hops=(self.encoder.hop_length, self.decoder.hop_length))
        self.device = torch.device(device)
        self.encoder.to(self.device)
        self.decoder.to(self.device)
        is_autoencoder = self.decoder_config["model_type"] in AUTOENCODER_TYPES
        self.synthesize = self.decoder.decoder if is_autoencoder else self.decoder
        self.hop_length = self.encoder.hop_length
        self.sample_rate = int(self.decoder_config["sampling_rate"])
        # A model trained with output_delay: D lags its input by D samples: coded with D more, taken off
        # the front, as the coders do (0 for the original's models, whose outputs this keeps).
        self.delay = output_delay(self.decoder_config)

    @torch.no_grad()
    def code(self, audio: np.ndarray) -> np.ndarray:
        """Samples (T, C) -> coded samples (T, C_out): the output cut back to T (from the output delay on,
        for a delayed model, whose input is zero-padded by the delay and then to a multiple of the hop).

        A mono model codes each channel on its own (channels as the batch), as the original.
        """
        check_file_samples(audio)
        signal = torch.from_numpy(np.ascontiguousarray(audio.T)).float().to(self.device)
        signal = signal.unsqueeze(0) if self.encoder.input_channels > 1 else signal.unsqueeze(1)
        length = signal.shape[-1]
        if self.delay:
            coded = length + self.delay
            signal = F.pad(signal, (0, coded - length + -coded % self.hop_length))
        output = self.synthesize(quantized_latent(self.encoder, signal))[..., self.delay:self.delay + length]
        return output.reshape(-1, length).T.cpu().numpy()


def _reference_subset(config: Mapping[str, Any], subset: str) -> str:
    """The subset the outputs of ``subset`` are scored against: its clean counterpart for a noisy subset
    (``noisy_test`` -> ``clean_test``), else the subset itself.

    Raises:
        CodecError: a noisy subset without its clean counterpart (scoring against the noisy input would
            reward keeping the noise).
    """
    if not subset.startswith("noisy_"):
        return subset
    clean = f"clean_{subset[6:]}"
    if clean not in config["data"]["subset"]:
        raise CodecError(f"--metrics on data.subset.{subset}: the encoder's config has no data.subset.{clean} to "
                         f"score against: add {clean} (the clean files of the same relative paths) or leave out "
                         "--metrics")
    return clean


def relative_names(source: Path, files: list[Path], what: str) -> list[str]:
    """Each file's path relative to the subset's folder, without its extension (``de/x`` for
    ``<subset>/de/x.wav``): the outputs mirror it, and references are matched by it. The files a list
    file names are taken relative to the deepest folder that holds them all (their own folder when they
    share one: then the names are the files' stems).

    Raises:
        CodecError: two files get one name (``x.wav`` beside ``x.flac``, or a file listed twice): one output
            would overwrite the other.
    """
    if source.is_dir():
        relative = [path.relative_to(source) for path in files]
    else:
        absolute = [Path(os.path.abspath(path)) for path in files]
        root = Path(os.path.commonpath([path.parent for path in absolute]))
        relative = [path.relative_to(root) for path in absolute]
    names: dict[str, Path] = {}
    for path, name in zip(files, (path.with_suffix("").as_posix() for path in relative)):
        if name in names:
            raise CodecError(f"{what}: {names[name]} and {path} would both be written as {name}_output.wav: "
                             "rename or remove one of them")
        names[name] = path
    return list(names)


def refuse_case_twins(names: list[str], files: list[Path], outdir: Path, what: str) -> None:
    """Two names that differ only in letter case (``X.wav`` beside ``x.flac``) are one output file where
    ``outdir``'s disk ignores case (macOS's and Windows' by default): refused there, before any file is
    coded, as the second output would replace the first. ``files[i]`` is the file named ``names[i]``."""
    twins = case_twins(names)
    if twins is not None and ignores_case(outdir):
        first, second = twins
        raise CodecError(f"{what}: {files[first]} and {files[second]} would both be written as "
                         f"{names[second]}_output.wav ({outdir} ignores letter case in names): rename or remove "
                         "one of them")


def pair_with_references(names: list[str], references: dict[str, Path], what: str) -> dict[str, Path]:
    """The reference of each output name that ``references`` has (checked before any file is coded); the
    names left without a reference are named in a warning (the mean is then not the whole subset's).

    Raises:
        CodecError: no name has a reference.
    """
    pairs = {name: references[name] for name in names if name in references}
    if not pairs:
        raise CodecError(f"no reference files matched the outputs of {what}: the clean subset must hold the same "
                         "relative paths")
    unscored = [name for name in names if name not in references]
    if unscored:
        logger.warning("%d of %d outputs have no reference file of the same relative name and are not scored: %s%s",
                       len(unscored), len(names), ", ".join(unscored[:3]), ", ..." if len(unscored) > 3 else "")
    return pairs


def score_outputs(pairs: list[tuple[str, Path, Path]]) -> list[dict[str, Any]]:
    """Metrics of each (name, reference, output) pair (first channels), with ``utils.eval.metrics.evaluate_pair``."""
    from utils.eval.metrics import evaluate_pair

    rows = []
    for name, reference_path, output_path in tqdm(pairs, desc="[metrics]"):
        reference, reference_rate = sf.read(reference_path, dtype="float32", always_2d=True)
        output, output_rate = sf.read(output_path, dtype="float32", always_2d=True)
        scores = evaluate_pair(reference[:, 0], output[:, 0], reference_rate, degraded_sample_rate=output_rate,
                               name=str(reference_path))
        rows.append({"file": name, **scores})
    return rows


def write_scores(rows: list[dict[str, Any]], path: Path) -> None:
    """CSV: one row per file, then the mean of each metric (NaN entries left out) and the ``scored`` row:
    how many files each mean covers."""
    from utils.eval.metrics import mean_row, scored_counts

    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        writer.writerow(mean_row(rows))
        writer.writerow({"file": "scored", **scored_counts(rows)})


def run_test(
    encoder_checkpoint: str,
    decoder_checkpoint: str,
    output_dir: str,
    subset: str = "clean_test",
    subset_num: int = -1,
    specific_folder: bool = False,
    metrics: bool = False,
    device: str | torch.device = "cpu",
) -> tuple[Path, list[dict[str, Any]] | None]:
    """Code every file of the encoder config's ``data.subset.<subset>``; write ``<name>_output.wav`` (PCM 16),
    ``<name>`` the file's path relative to the subset's folder without its extension (:func:`relative_names`:
    a file in a subfolder gets its output in the same subfolder).

    Returns:
        The output folder, and the per-file metrics (``metrics``; each output against the file of the same
        relative name in the reference subset) else None; they also go to ``metrics.csv`` in the output folder.
    """
    codec = OfflineCodec(encoder_checkpoint, decoder_checkpoint, device)
    config = codec.encoder_config
    try:
        # Every header is read before the first output is written: a file that cannot be coded is named
        # up front instead of stopping the run halfway with its outputs written.
        dataset = build_dataset(config, subset, subset_num=subset_num)
        names = relative_names(dataset.source, dataset.files, f"data.subset.{subset}")
        dataset.read_headers()
        empty = next((path for path in dataset.files if dataset.lengths[path] == 0), None)
        if empty is not None:
            raise ValueError(f"{empty} holds no samples: remove it from data.subset.{subset}")
        if codec.encoder.input_channels > 1:  # a mono model codes each channel on its own
            dataset.check_channels(codec.encoder.input_channels, "the encoder (generator_params.input_channels)")
        reference_of: dict[str, Path] | None = None
        if metrics:
            reference_subset = _reference_subset(config, subset)
            references = build_dataset(config, reference_subset)
            reference_by_name = dict(zip(
                relative_names(references.source, references.files, f"data.subset.{reference_subset}"),
                references.files,
            ))
            references.read_headers()
            reference_of = pair_with_references(names, reference_by_name, f"data.subset.{subset}")
    except (FileNotFoundError, ValueError) as error:
        raise CodecError(str(error)) from None
    outdir = output_folder(encoder_checkpoint, decoder_checkpoint, config, subset, output_dir, specific_folder)
    make_output_folder(outdir, "--output_dir", given=output_dir)
    refuse_case_twins(names, dataset.files, outdir, f"data.subset.{subset}")
    logger.info("The number of utterances = %d; writing to %s", len(dataset), outdir)
    written = []
    total_rtf = 0.0
    with tqdm(zip(names, dataset), desc="[test]", total=len(names)) as progress:
        for name, audio in progress:
            start = time.time()
            output = codec.code(audio)
            rtf = (time.time() - start) / (len(output) / codec.sample_rate)
            total_rtf += rtf
            progress.set_postfix({"RTF": rtf})
            path = outdir / f"{name}_output.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, output, codec.sample_rate, "PCM_16")
            written.append((name, path))
    logger.info("Finished generation of %d utterances (RTF = %.03f).", len(written), total_rtf / len(written))
    if reference_of is None:
        return outdir, None
    rows = score_outputs([(name, reference_of[name], path) for name, path in written if name in reference_of])
    write_scores(rows, outdir / "metrics.csv")
    return outdir, rows
