"""Bad input to demoFile.py: one-line error naming the problem, non-zero exit, no traceback, no output."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from models.autoencoder.AudioDec import Generator
from tests.conftest import MANIFEST, OFFICIAL, REPO, official_path
from utils.checkpoint import atomic_torch_save, generator_state_dict


def run_demo(python: str, *args: str, cwd: str = OFFICIAL) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python, os.path.join(REPO, "demoFile.py"), "--cuda", "-1", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )


def assert_clean_failure(result: subprocess.CompletedProcess, output: str, words: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert words in lines[0]
    assert not os.path.exists(output)
    assert not [name for name in os.listdir(os.path.dirname(output)) if name.startswith(".tmp-")]


def test_missing_file(tmp_path, python: str) -> None:
    out = str(tmp_path / "out.wav")
    result = run_demo(python, "--model", "vctk_sym", "-i", str(tmp_path / "nope.wav"), "-o", out)
    assert_clean_failure(result, out, "does not exist")


def test_empty_file(tmp_path, python: str) -> None:
    (tmp_path / "empty.wav").write_bytes(b"")
    out = str(tmp_path / "out.wav")
    result = run_demo(python, "--model", "vctk_sym", "-i", str(tmp_path / "empty.wav"), "-o", out)
    assert_clean_failure(result, out, "empty")


def test_non_audio_file(tmp_path, python: str) -> None:
    (tmp_path / "notes.wav").write_text("this is not audio\n" * 20)
    out = str(tmp_path / "out.wav")
    result = run_demo(python, "--model", "vctk_sym", "-i", str(tmp_path / "notes.wav"), "-o", out)
    assert_clean_failure(result, out, "cannot read")


def test_wrong_sample_rate(tmp_path, python: str) -> None:
    out = str(tmp_path / "out.wav")
    result = run_demo(python, "--model", "vctk_sym", "-i", official_path("input", "test_24k.wav"), "-o", out)
    assert_clean_failure(result, out, "--resample")


def test_wrong_sample_rate_resampled_on_request(tmp_path, python: str) -> None:
    out = tmp_path / "out.wav"
    result = run_demo(python, "--model", "vctk_sym", "--resample", "-i", official_path("input", "test_24k.wav"),
                      "-o", str(out))
    assert result.returncode == 0, result.stderr
    data, rate = sf.read(out)
    assert rate == 48000 and abs(len(data) - 2 * 48000) <= 1
    # the audio is that of the input resampled (soxr, high quality), then coded
    from utils.audio import read_audio, resample
    from utils.audiodec import StreamingCodec

    codec = StreamingCodec.from_name("vctk_sym", root=OFFICIAL)
    _, expected = codec.code(codec.streams_from_audio(resample(read_audio(official_path("input", "test_24k.wav"))[0],
                                                                24000, 48000)))
    assert np.abs(data - expected.reshape(-1).numpy()).max() <= 2 / 32768


def test_unknown_model(tmp_path, python: str) -> None:
    out = str(tmp_path / "out.wav")
    result = run_demo(python, "--model", "vctk_v9", "-i", official_path("input", "test_48k.wav"), "-o", out)
    assert_clean_failure(result, out, "unknown model 'vctk_v9'")


def test_model_not_installed(tmp_path, python: str) -> None:
    out = str(tmp_path / "out.wav")
    result = run_demo(python, "--model", "vctk_sym", "--root", str(tmp_path),
                      "-i", official_path("input", "test_48k.wav"), "-o", out)
    assert_clean_failure(result, out, "not installed")


def test_checkpoint_without_config(tmp_path, python: str) -> None:
    folder = tmp_path / "exp" / "autoencoder" / "symAD_vctk_48000_hop300"
    folder.mkdir(parents=True)
    for steps in (200000, 700000):
        name = f"checkpoint-{steps}steps.pkl"
        shutil.copy(official_path("exp", "autoencoder", "symAD_vctk_48000_hop300", name), folder / name)
    out = str(tmp_path / "out.wav")
    result = run_demo(python, "--model", "vctk_sym", "-i", official_path("input", "test_48k.wav"), "-o", out,
                      cwd=str(tmp_path))
    assert_clean_failure(result, out, "no config.yml")


def test_a_checkpoint_that_is_not_there(tmp_path, python: str) -> None:
    out = str(tmp_path / "out.wav")
    missing = str(tmp_path / "exp" / "checkpoint-1steps.pkl")
    result = run_demo(python, "--encoder", missing, "--decoder", missing, "-i", official_path("input", "test_48k.wav"),
                      "-o", out)
    assert_clean_failure(result, out, f"checkpoint {missing} not found: check the path")


def test_an_encoder_and_a_decoder_of_different_rates(tmp_path, python: str) -> None:
    out = str(tmp_path / "out.wav")
    encoder = official_path("exp", "autoencoder", "symAD_vctk_48000_hop300", "checkpoint-200000steps.pkl")
    decoder = official_path("exp", "autoencoder", "symAD_libritts_24000_hop300", "checkpoint-500000steps.pkl")
    result = run_demo(python, "--encoder", encoder, "--decoder", decoder, "-i", official_path("input", "test_48k.wav"),
                      "-o", out)
    assert_clean_failure(result, out, "the encoder codes 48000 Hz audio but the decoder makes 24000 Hz")


def rewritten_checkpoint(folder, change=None, **config_changes: object) -> str:
    """A copy of the official vctk_sym decoder checkpoint whose loaded state `change` rewrites in place
    before it is saved again (a file torch.load(weights_only=True) reads), its config.yml beside it with
    `config_changes`."""
    source = official_path("exp", "autoencoder", "symAD_vctk_48000_hop300")
    folder.mkdir(parents=True)
    config = yaml.safe_load(open(os.path.join(source, "config.yml")))
    (folder / "config.yml").write_text(yaml.safe_dump({**config, **config_changes}))
    state = torch.load(os.path.join(source, "checkpoint-700000steps.pkl"), map_location="cpu", weights_only=True)
    if change is not None:
        change(state)
    path = str(folder / "checkpoint-1steps.pkl")
    torch.save(state, path)
    return path


@pytest.mark.parametrize("name, value", [
    ("decoder.conv1.conv.weight", float("nan")),  # decoded as a full-scale constant
    ("quantizer.codebook.layers.0.embed", float("inf")),  # every frame coded as code 0
])
def test_a_checkpoint_with_non_finite_weights_is_refused(tmp_path, python: str, name: str, value: float) -> None:
    def poison(state: dict) -> None:
        state["model"]["generator"][name][0] = value

    checkpoint = rewritten_checkpoint(tmp_path / "exp", poison)
    out = str(tmp_path / "out.wav")
    result = run_demo(python, "--encoder", checkpoint, "--decoder", checkpoint,
                      "-i", official_path("input", "test_48k.wav"), "-o", out)
    assert_clean_failure(result, out, f"checkpoint {checkpoint} has non-finite weights ({value} in {name}): "
                         "its training diverged or the file is damaged; use an earlier checkpoint")


def _generator_list(state: dict) -> None:
    state["model"]["generator"] = [1, 2, 3]


@pytest.mark.parametrize("change, config_changes, options, words", [
    (_generator_list, {}, [], "checkpoint-1steps.pkl: model.generator is not a state dict (list): it is not an "
                              "AudioDec checkpoint"),
    (None, {"model_type": ["x"]}, [], "config.yml: unknown model_type ['x']"),
    (None, {"sampling_rate": 0}, ["--resample"], "config.yml: sampling_rate 0 is not a positive whole number of Hz"),
    (None, {"sampling_rate": -48000}, [], "config.yml: sampling_rate -48000 is not a positive whole number of Hz"),
    (None, {"output_delay": 10**11}, [], "config.yml: output_delay 100000000000 is more than 480000 samples"),
])
def test_a_checkpoint_or_config_of_the_wrong_type_is_one_line(
    tmp_path, python: str, change, config_changes: dict, options: list[str], words: str
) -> None:
    checkpoint = rewritten_checkpoint(tmp_path / "exp", change, **config_changes)
    out = str(tmp_path / "out.wav")
    result = run_demo(python, "--encoder", checkpoint, "--decoder", checkpoint, *options,
                      "-i", official_path("input", "test_48k.wav"), "-o", out)
    assert_clean_failure(result, out, f"{tmp_path / 'exp'}{os.sep}{words}")


def _mimo_model(folder) -> str:
    """A tiny 2-channel-in / 2-channel-out (MIMO) AudioDec saved in the original format."""
    params = {"input_channels": 2, "output_channels": 2, "encode_channels": 4, "decode_channels": 4,
              "code_dim": 8, "codebook_size": 16, "codebook_num": 2}
    model = Generator(**params)
    folder.mkdir(parents=True)
    yaml.safe_dump({"model_type": "symAudioDec", "sampling_rate": 48000, "generator_params": params},
                   open(folder / "config.yml", "w"))
    path = str(folder / "checkpoint-1steps.pkl")
    atomic_torch_save({"model": {"generator": generator_state_dict(model)}, "steps": 1}, path)
    return path


def test_more_channels_than_the_model_takes(tmp_path, python: str) -> None:
    checkpoint = _mimo_model(tmp_path / "mimo")
    sf.write(tmp_path / "three.wav", 0.1 * np.random.default_rng(0).standard_normal((4800, 3)), 48000)
    out = str(tmp_path / "out.wav")
    result = run_demo(python, "--encoder", checkpoint, "--decoder", checkpoint,
                      "-i", str(tmp_path / "three.wav"), "-o", out)
    assert_clean_failure(result, out, "takes 2")


def test_mimo_model_codes_its_channels(tmp_path, python: str) -> None:
    checkpoint = _mimo_model(tmp_path / "mimo")
    sf.write(tmp_path / "two.wav", 0.1 * np.random.default_rng(0).standard_normal((4500, 2)), 48000)
    out = tmp_path / "out.wav"
    result = run_demo(python, "--encoder", checkpoint, "--decoder", checkpoint,
                      "-i", str(tmp_path / "two.wav"), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert sf.read(out)[0].shape == (4500, 2)


def test_stereo_file_with_mono_model_codes_each_channel(tmp_path, python: str) -> None:
    """A mono model codes each channel as its own stream; each equals the mono result."""
    mono, _ = sf.read(official_path("input", "test_48k.wav"))
    stereo = np.stack([mono, 0.5 * mono[::-1]], axis=1)
    sf.write(tmp_path / "stereo.wav", stereo, 48000, "PCM_16")
    out = tmp_path / "out.wav"
    result = run_demo(python, "--model", "vctk_sym", "-i", str(tmp_path / "stereo.wav"), "-o", str(out))
    assert result.returncode == 0, result.stderr
    coded, _ = sf.read(out)
    reference, _ = sf.read(official_path("ref", "vctk_sym.wav"))
    assert coded.shape == stereo.shape
    assert np.abs(coded[:, 0] - reference).max() <= 2 / 32768


def test_list_models(python: str) -> None:
    result = run_demo(python, "--list-models")
    assert result.returncode == 0
    names = {line.split()[0] for line in result.stdout.splitlines()}
    assert {"vctk_v1", "libritts_sym", "vctk_c16h320_sym", "vctk_denoise"} <= names


def test_unpadded_length_is_kept(tmp_path, python: str) -> None:
    """A file whose length is not a multiple of the hop comes back at its own length."""
    torch.manual_seed(0)
    sf.write(tmp_path / "odd.wav", 0.1 * np.random.default_rng(1).standard_normal(12345), 48000)
    out = tmp_path / "out.wav"
    result = run_demo(python, "--model", "vctk_v1", "-i", str(tmp_path / "odd.wav"), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert sf.read(out)[0].shape == (12345,)


def test_an_output_folder_in_the_way_stops_before_the_coding(tmp_path, python: str) -> None:
    (tmp_path / "file").write_text("x")
    out = str(tmp_path / "file" / "out.wav")
    result = run_demo(python, "--model", "vctk_sym", "-i", official_path("input", "test_48k.wav"), "-o", out)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: cannot write {out}: {tmp_path / 'file'} is a file, not a folder: give another output path"]


def test_an_output_name_of_no_audio_format_stops_before_the_coding(tmp_path, python: str) -> None:
    out = str(tmp_path / "out.mp4")
    result = run_demo(python, "--model", "vctk_sym", "-i", official_path("input", "test_48k.wav"), "-o", out)
    assert_clean_failure(result, out, "(a .mp4 file does not hold PCM_16 samples): give a .wav or .flac output name")
    assert "coding " not in result.stderr  # refused before the model ran


def test_save_codes_naming_the_input_or_the_output_is_refused_before_the_coding(tmp_path, python: str) -> None:
    source = tmp_path / "in.wav"
    shutil.copy(official_path("input", "test_48k.wav"), source)
    kept = source.read_bytes()
    os.symlink(source, tmp_path / "link.wav")
    out = str(tmp_path / "out.wav")
    for codes in (str(source), f"{tmp_path}/./in.wav", str(tmp_path / "link.wav")):
        result = run_demo(python, "--model", "vctk_sym", "-i", str(source), "-o", out, "--save_codes", codes)
        assert_clean_failure(result, out, f"--save_codes {codes} is the input file: give another name")
        assert "coding " not in result.stderr
    result = run_demo(python, "--model", "vctk_sym", "-i", str(source), "-o", out,
                      "--save_codes", f"{tmp_path}/./out.wav")
    assert_clean_failure(result, out, "is the -o file too: give the codes a name of their own")
    assert source.read_bytes() == kept and sorted(os.listdir(tmp_path)) == ["in.wav", "link.wav"]


def test_a_pipe_as_input_is_named_as_such(tmp_path, python: str) -> None:
    out = str(tmp_path / "out.wav")
    result = subprocess.run([python, os.path.join(REPO, "demoFile.py"), "--cuda", "-1", "--model", "vctk_sym",
                             "-i", "/dev/stdin", "-o", out], cwd=OFFICIAL, capture_output=True, timeout=120,
                            input=open(official_path("input", "test_48k.wav"), "rb").read())  # noqa: SIM115
    result.stderr = result.stderr.decode()
    assert_clean_failure(result, out, "is not a regular file (a pipe or a device?): give an audio file's path")


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc, a folder that takes no files")
def test_an_output_folder_that_takes_no_files_stops_before_the_coding(python: str) -> None:
    result = run_demo(python, "--model", "vctk_sym", "-i", official_path("input", "test_48k.wav"), "-o", "/proc/o.wav")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cannot write /proc/o.wav (") and lines[0].endswith("give another output path")


def test_a_model_name_beside_checkpoints_is_refused(tmp_path, python: str) -> None:
    entry = MANIFEST["vctk_sym"]
    out = str(tmp_path / "out.wav")
    result = run_demo(python, "--model", "vctk_v1", "--encoder", entry["encoder_checkpoint"], "--decoder",
                      entry["decoder_checkpoint"], "-i", official_path("input", "test_48k.wav"), "-o", out)
    assert_clean_failure(result, out, "--model vctk_v1 and --encoder/--decoder both name the model: give one of them")


def test_a_mimo_model_takes_the_file_channels_in_order(tmp_path, python: str) -> None:
    """Files (a, 0) and (0, a) code differently, each as StreamingCodec.code codes that (1, 2, T) tensor."""
    from utils.audiodec import StreamingCodec

    torch.manual_seed(0)
    checkpoint = _mimo_model(tmp_path / "mimo")
    state = torch.load(checkpoint, weights_only=True)
    for key, tensor in state["model"]["generator"].items():
        if key.endswith(".embed"):  # codes near the untrained latents, so that the codes follow the input
            tensor.mul_(0.1)
    atomic_torch_save(state, checkpoint)
    a = 0.5 * np.random.default_rng(0).standard_normal(4500).clip(-1.9, 1.9)
    silence = np.zeros_like(a)
    (tmp_path / "in").mkdir()
    for name, channels in (("a0", (a, silence)), ("0a", (silence, a))):
        sf.write(tmp_path / "in" / f"{name}.wav", np.stack(channels, axis=1), 48000, "PCM_16")
    result = run_demo(python, "--encoder", checkpoint, "--decoder", checkpoint,
                      "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    codec = StreamingCodec.from_checkpoints(checkpoint, checkpoint)
    coded = {}
    for name in ("a0", "0a"):
        data, _ = sf.read(tmp_path / "in" / f"{name}.wav", always_2d=True)
        _, expected = codec.code(torch.from_numpy(data.T).float().unsqueeze(0))
        coded[name], _ = sf.read(tmp_path / "out" / f"{name}.wav", always_2d=True)
        assert coded[name].shape == (4500, 2)
        assert np.abs(coded[name] - expected[0].numpy().T).max() <= 2 / 32768, name
    assert np.abs(coded["a0"] - coded["0a"]).max() > 1e-3
