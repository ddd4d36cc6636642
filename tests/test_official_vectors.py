"""Contract 1: the original's checkpoints load unchanged and give the original's codes and audio."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.conftest import MANIFEST, OFFICIAL, REPO, official_path
from utils.audiodec import StreamingCodec
from utils.checkpoint import load_generator
from utils.eval.metrics import snr_db


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_demo_file_matches_original(name: str, tmp_path, python: str) -> None:
    """demoFile.py run from a folder holding exp/ reproduces ref/<model>.wav and its codes."""
    entry = MANIFEST[name]
    output, codes = tmp_path / "out.wav", tmp_path / "codes.npy"
    result = subprocess.run(
        [python, os.path.join(REPO, "demoFile.py"), "--model", name, "--cuda", "-1", "--num_threads", "1",
         "-i", official_path(entry["input"]), "-o", str(output), "--save_codes", str(codes)],
        cwd=OFFICIAL, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    ours, rate = sf.read(output, always_2d=True)
    reference, ref_rate = sf.read(official_path("ref", f"{name}.wav"), always_2d=True)
    assert rate == ref_rate == entry["sample_rate"]
    assert ours.shape == reference.shape == (entry["n_samples"], 1)
    assert snr_db(reference, ours) >= 60
    np.testing.assert_array_equal(np.load(codes), np.load(official_path("ref", f"{name}_codes.npy")))


@pytest.mark.parametrize("name", ["vctk_v1", "vctk_sym", "vctk_activate_sym", "vctk_c16h320_sym"])
def test_float_output_matches_original(name: str) -> None:
    """Before PCM_16 rounding, the waveform equals the original's to >= 90 dB SNR."""
    torch.set_num_threads(1)
    entry = MANIFEST[name]
    codec = StreamingCodec.from_checkpoints(
        official_path(entry["encoder_checkpoint"]), official_path(entry["decoder_checkpoint"]), name=name
    )
    data, _ = sf.read(official_path(entry["input"]), always_2d=True)
    _, y = codec.code(codec.streams_from_audio(data))
    reference = np.load(official_path("ref", f"{name}_float.npy")).reshape(-1)
    assert snr_db(reference, y.reshape(-1).numpy()) >= 90


@pytest.mark.parametrize("name", ["vctk_v1", "vctk_sym"])
def test_streaming_in_1500_chunks_matches_original_stream(name: str) -> None:
    """Our chunked streaming equals the original's own 1500-sample streaming output."""
    entry = MANIFEST[name]
    codec = StreamingCodec.from_checkpoints(
        official_path(entry["encoder_checkpoint"]), official_path(entry["decoder_checkpoint"]), name=name
    )
    data, _ = sf.read(official_path(entry["input"]), always_2d=True)
    x = codec.streams_from_audio(data)
    codec.reset(1)
    pieces = [codec.decode(codec.encode(x[..., start:start + 1500])) for start in range(0, x.shape[-1], 1500)]
    y = torch.cat(pieces, dim=-1).reshape(-1).numpy()
    reference = np.load(official_path("ref", f"{name}_stream1500_float.npy")).reshape(-1)
    assert y.shape == reference.shape
    assert np.abs(y - reference).max() < 1e-5


def test_saved_codes_are_the_codebooks_transmitted(tmp_path, python: str) -> None:
    """--save_codes with --n_codebooks 3 stores the three codebooks sent: the original's first three."""
    entry = MANIFEST["vctk_sym"]
    codes = tmp_path / "codes.npy"
    result = subprocess.run(
        [python, os.path.join(REPO, "demoFile.py"), "--model", "vctk_sym", "--cuda", "-1", "--num_threads", "1",
         "--n_codebooks", "3", "-i", official_path(entry["input"]), "-o", str(tmp_path / "out.wav"),
         "--save_codes", str(codes)],
        cwd=OFFICIAL, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.load(codes), np.load(official_path("ref", "vctk_sym_codes.npy"))[:3])


def test_training_forward_matches_the_originals_offline_output() -> None:
    """The generator's offline (training) forward, zero history instead of the warmed-up streams, gives
    the original's ref/vctk_sym_offline outputs: its codes (per-layer indices) and waveform."""
    torch.set_num_threads(1)
    entry = MANIFEST["vctk_sym"]
    model, _ = load_generator(official_path(entry["decoder_checkpoint"]))
    data, _ = sf.read(official_path(entry["input"]), always_2d=True)
    with torch.no_grad():
        y, _, z, _, _ = model(torch.from_numpy(data.T).float().unsqueeze(0))
        codes = model.quantize(z)
    np.testing.assert_array_equal(codes[0].numpy(), np.load(official_path("ref", "vctk_sym_offline_codes.npy")))
    reference = np.load(official_path("ref", "vctk_sym_offline_float.npy")).reshape(-1)
    assert y.shape == (1, 1, reference.size)
    assert snr_db(reference, y.reshape(-1).numpy()) >= 90
