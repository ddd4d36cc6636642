"""bin/export_generator.py and utils.checkpoint.compact_generator_state: a generator-only checkpoint
in fewer bytes that still loads as the original format, with consistent codebook statistics."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import yaml

from bin.export_generator import main
from tests.conftest import OFFICIAL, REPO
from utils.audiodec import StreamingCodec
from utils.checkpoint import compact_generator_state, load_generator, read_checkpoint, state_hash
from utils.errors import CodecError
from utils.eval.probe import speech_like_signal
from utils.registry import get_entry, resolve

SOURCE = resolve(get_entry("vctk_sym"), OFFICIAL)[0]  # official-format weights, with a discriminator


def export(tmp_path, *options: str) -> str:
    output = str(tmp_path / "model" / "checkpoint-1steps.pkl")
    assert main([SOURCE, output, *options]) == 0
    return output


def codebooks(model: torch.nn.Module) -> list:
    return list(model.quantizer.codebook.layers)


def test_fp32_export_keeps_the_generator_bit_for_bit_and_nothing_else(tmp_path) -> None:
    output = export(tmp_path)
    state = read_checkpoint(output)
    assert set(state["model"]) == {"generator"}
    assert set(state["model"]["generator"]) == set(read_checkpoint(SOURCE)["model"]["generator"])
    assert state_hash(load_generator(output)[0]) == state_hash(load_generator(SOURCE)[0])
    assert (tmp_path / "model" / "config.yml").read_bytes() == open(os.path.join(os.path.dirname(SOURCE),
                                                                                 "config.yml"), "rb").read()


@pytest.mark.parametrize("dtype, stored", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_half_export_loads_as_float32_and_codes_like_the_source(tmp_path, dtype, stored) -> None:
    output = export(tmp_path, "--dtype", dtype, "--reset_codebook_statistics")
    generator = read_checkpoint(output)["model"]["generator"]
    assert {tensor.dtype for tensor in generator.values() if tensor.is_floating_point()} == {stored}
    assert os.path.getsize(output) < 0.5 * os.path.getsize(SOURCE)
    model = load_generator(output)[0]
    assert all(tensor.dtype == torch.float32 for tensor in model.state_dict().values() if tensor.is_floating_point())
    probe = torch.from_numpy(speech_like_signal(1.0, 48000)).view(1, 1, -1)
    codes_source, y_source = StreamingCodec.from_checkpoints(SOURCE, SOURCE).code(probe)
    codes_export, y_export = StreamingCodec.from_checkpoints(output, output).code(probe)
    assert (codes_source[:, 0] == codes_export[:, 0]).double().mean() > 0.9  # rounding flips a few near-ties
    snr = 10 * torch.log10(y_source.pow(2).sum() / (y_source - y_export).pow(2).sum())
    assert snr > 15


def test_reset_codebook_statistics_are_a_consistent_ema_state() -> None:
    state = read_checkpoint(SOURCE)["model"]["generator"]
    compact = compact_generator_state(state, torch.float32, reset_codebook_statistics=True)
    names = [name[: -len("embed")] for name in state if name.endswith(".embed")]
    assert names
    for prefix in names:
        assert compact[f"{prefix}embed_avg"].data_ptr() == compact[f"{prefix}embed"].data_ptr()  # stored once
        assert torch.equal(compact[f"{prefix}cluster_size"], torch.ones_like(state[f"{prefix}cluster_size"]))
        assert torch.equal(compact[f"{prefix}embed"], state[f"{prefix}embed"])  # the codes themselves untouched
    model = load_generator(SOURCE, inference=False)[0]
    model.load_state_dict(compact)
    for layer in codebooks(model):
        # The EMA update's own relation: embed = embed_avg / smoothed count, so training resumes from it.
        torch.testing.assert_close(layer.embed_avg / layer.smoothed_cluster_size().unsqueeze(0), layer.embed)
        assert layer.usage()[0] == layer.codebook_size


def test_a_config_of_another_model_in_the_output_folder_is_refused_and_nothing_is_written(tmp_path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    config = yaml.safe_load(open(os.path.join(os.path.dirname(SOURCE), "config.yml")))
    config["generator_params"]["codebook_num"] += 1
    (folder / "config.yml").write_text(yaml.safe_dump(config))
    with pytest.raises(CodecError, match="generator_params differ"):
        main([SOURCE, str(folder / "checkpoint-1steps.pkl")])
    assert sorted(os.listdir(folder)) == ["config.yml"]


def test_a_config_of_the_same_model_in_the_output_folder_is_kept(tmp_path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    config = yaml.safe_load(open(os.path.join(os.path.dirname(SOURCE), "config.yml")))
    config["generator_optimizer_params"] = {"lr": 1.0e-5}  # training settings may differ
    text = "# the recipe, with its comments\n" + yaml.safe_dump(config)
    (folder / "config.yml").write_text(text)
    output = export(tmp_path)
    assert (folder / "config.yml").read_text() == text
    assert state_hash(load_generator(output)[0]) == state_hash(load_generator(SOURCE)[0])


def test_cli_error_is_one_line(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "bin", "export_generator.py"), str(tmp_path / "missing.pkl"),
         str(tmp_path / "out.pkl")], capture_output=True, text=True, cwd=REPO,
    )
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "out.pkl")


def test_an_existing_output_and_the_source_itself_are_refused(tmp_path) -> None:
    output = export(tmp_path)
    written = os.path.getmtime(output)
    with pytest.raises(CodecError, match="checkpoint-1steps.pkl exists already: pass -f/--force to replace it"):
        main([SOURCE, output])
    assert os.path.getmtime(output) == written
    assert main([SOURCE, output, "--force"]) == 0
    with pytest.raises(CodecError, match="is the source checkpoint itself: export to another file"):
        main([output, output, "--force"])  # even forced: the source would lose what the export leaves out
    (tmp_path / "file").write_text("x")
    with pytest.raises(CodecError, match=r"output .*file/x.pkl: .*file is a file"):
        main([SOURCE, str(tmp_path / "file" / "x.pkl")])
    with pytest.raises(CodecError, match=r"cannot write .*: it names a folder: give a file name"):
        main([SOURCE, str(tmp_path), "--force"])
