"""bin/model_report.py: per-codebook table, entropy-coded bitrate with identical codes, JSON and markdown."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from bin.model_report import main
from tests.conftest import OFFICIAL, REPO, official_path
from utils.audiodec import StreamingCodec
from utils.bitstream.entropy import EntropyModel
from utils.errors import CodecError
from utils.registry import get_entry, resolve
from utils.runtime import native_build


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> SimpleNamespace:
    """vctk_sym (bundled official-format weights) plus an entropy table fitted on one file's codes."""
    encoder, decoder = resolve(get_entry("vctk_sym"), OFFICIAL)
    codec = StreamingCodec.from_checkpoints(encoder, decoder)
    audio, _ = sf.read(official_path("input", "test_48k.wav"), dtype="float32")
    codes, _ = codec.code(codec.streams_from_audio(audio[:, None]))
    table = tmp_path_factory.mktemp("table") / "model.entropy"
    EntropyModel.fit([codes[0].numpy()], codec.codebook_size).save(table)
    args = ["--encoder", encoder, "--decoder", decoder, "--entropy_table", str(table), "--cuda", "-1",
            "--num_threads", "1"]
    return SimpleNamespace(args=args, codec=codec)


@pytest.fixture(scope="module")
def test_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("test")
    audio, rate = sf.read(official_path("input", "test_48k.wav"), dtype="float32")
    sf.write(folder / "a.wav", audio[: rate], rate, "PCM_16")
    (folder / "sub").mkdir()
    sf.write(folder / "sub" / "b.wav", audio[rate: 2 * rate + 150], rate, "PCM_16")
    return folder


def test_report_lists_every_codebook_count_with_entropy_bitrate(model, test_dir, tmp_path) -> None:
    out = tmp_path / "report"
    codebooks = f"{model.codec.n_codebooks},2"
    assert main([*model.args, "--test", str(test_dir), "--codebooks", codebooks, "--entropy", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["files"] == 2 and report["settings"]["codebooks"] == [model.codec.n_codebooks, 2]
    assert [row["file"] for row in report["files"]] == ["a.wav", "sub/b.wav"]
    summary = {line["system"]: line for line in report["summary"]}
    codec = model.codec
    k = codec.n_codebooks
    full, two = summary[f"custom K={k}"], summary["custom K=2"]
    assert full["kbps"] == pytest.approx(codec.bitrate() / 1000)
    assert two["kbps"] == pytest.approx(codec.bitrate(2) / 1000)
    seconds = report["settings"]["seconds"]
    bits_per_frame = k * math.ceil(math.log2(codec.codebook_size))
    frames = [math.ceil(row["seconds"] * codec.sample_rate / codec.hop_length) for row in report["files"]]
    expected_raw = sum(math.ceil(f * bits_per_frame / 8) * 8 for f in frames) / seconds / 1000
    assert full["raw_payload_kbps"] == pytest.approx(expected_raw)
    # The table was fitted on these very codes: coding them costs less than the raw 10 bits each.
    assert 0 < full["entropy_kbps"] < full["raw_payload_kbps"]
    for line in (full, two):
        assert 1.0 <= line["pesq_wb"] <= 4.7 and -1 <= line["stoi"] <= 1 and np.isfinite(line["log_mel_distance"])
    table = (out / "report.md").read_text()
    assert f"| custom K={k} | {codec.bitrate() / 1000:.3f} | {expected_raw:.3f} | {full['entropy_kbps']:.3f} |" in table
    assert "| system | kbps | raw kbps | entropy-coded kbps |" in table
    used = [set() for _ in range(k)]
    for name in ("a.wav", "sub/b.wav"):
        audio, _ = sf.read(test_dir / name, dtype="float32", always_2d=True)
        codes, _ = codec.code(codec.streams_from_audio(audio.mean(axis=1)[:, None]))
        for index, row in enumerate(codes[0].numpy()):
            used[index].update(row.tolist())
    assert report["settings"]["codes_used"] == [len(codes) for codes in used]
    assert f"per codebook (of {codec.codebook_size}): {', '.join(str(len(codes)) for codes in used)}" in table


def test_unquantized_output_is_what_more_codebooks_approach(model, test_dir, tmp_path) -> None:
    codec = model.codec
    audio, _ = sf.read(official_path("input", "test_48k.wav"), dtype="float32")
    x = codec.streams_from_audio(audio[:, None])
    codes, coded = codec.code(x)
    ceiling = codec.code_unquantized(x)
    assert ceiling.shape == coded.shape and torch.isfinite(ceiling).all()

    def snr(k: int) -> float:
        error = (ceiling - codec.code(x, k)[1]).pow(2).sum()
        return float(10 * torch.log10(ceiling.pow(2).sum() / error))

    # Each more codebook brings the coded output nearer the unquantized one (vctk_sym: 2.8, 4.1, 12.1 dB).
    assert snr(1) < snr(2) < snr(codec.n_codebooks)
    assert torch.equal(codec.code(x)[0], codes)  # the coding steps are untouched by the unquantized pass

    out = tmp_path / "unquantized"
    assert main([*model.args, "--test", str(test_dir), "--codebooks", "1", "--unquantized", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["unquantized"] is True
    line = next(line for line in report["summary"] if line["system"] == "custom unquantized")
    assert line["kbps"] is None and 1.0 <= line["pesq_wb"] <= 4.7 and np.isfinite(line["log_mel_distance"])
    assert "| custom unquantized |  |" in (out / "report.md").read_text()


@pytest.mark.skipif(not native_build.available(), reason="a bf16 receiver runs in the native engine")
def test_bf16_receiver_is_labelled(model, test_dir, tmp_path) -> None:
    out = tmp_path / "bf16"
    assert main([*model.args, "--test", str(test_dir), "--max_files", "1", "--precision", "bf16",
                 "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["files"] == 1 and report["summary"][0]["system"] == "custom bf16 K=8"


@pytest.mark.parametrize(
    "extra, message",
    [(["--codebooks", "99"], "has 1.."), (["--codebooks", "x"], "comma-separated"),
     (["--test", "/nonexistent"], "not found"), (["--opus", "12.8,-3"], "--opus -3: Opus codes 6 to 256 kbps"),
     (["--codebooks", "3,3"], "--codebooks '3,3' names a value twice: give each once"),
     (["--max_files", "-1"], r"--max_files -1: give 0 or more \(0: all\)")],
)
def test_bad_arguments_are_one_line_errors(model, test_dir, tmp_path, extra, message) -> None:
    argv = [*model.args, "--test", str(test_dir), "--out", str(tmp_path / "r"), *extra]
    with pytest.raises(CodecError, match=message):
        main(argv)
    assert not (tmp_path / "r" / "report.json").exists()


def test_an_out_path_in_the_way_stops_the_report_before_the_scoring(model, test_dir, tmp_path, monkeypatch) -> None:
    import bin.model_report as report

    monkeypatch.setattr(report, "score_file", lambda *_: pytest.fail("scored before --out was checked"))
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(CodecError, match=r"--out .*/file/r: cannot create it \(.*/file is a file\): give another"):
        main([*model.args, "--test", str(test_dir), "--out", str(tmp_path / "file" / "r")])


def test_learning_curve_has_one_row_per_checkpoint_in_step_order(test_dir, tmp_path) -> None:
    from bin.learning_curve import main as curve_main

    folder = official_path("exp", "autoencoder", "symAD_c16_vctk_48000_hop320")
    late, early = f"{folder}/checkpoint-1000000steps.pkl", f"{folder}/checkpoint-500000steps.pkl"
    out = tmp_path / "curve"
    assert curve_main([late, early, "--test", str(test_dir), "--max_files", "1", "--offset", "10",
                       "--num_threads", "1", "--out", str(out)]) == 0
    rows = json.loads((out / "curve.json").read_text())
    assert [row["steps"] for row in rows] == [500010, 1000010]
    assert all(row["files"] == 1 and 1.0 <= row["pesq_wb"] <= 4.7 for row in rows)
    assert "| 500010 |" in (out / "curve.md").read_text()
    with pytest.raises(CodecError, match="checkpoint-<N>steps.pkl"):
        curve_main([str(test_dir / "a.wav"), "--test", str(test_dir), "--out", str(out)])
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(CodecError, match="is a file"):  # before the first checkpoint is scored
        curve_main([late, "--test", str(test_dir), "--out", str(tmp_path / "file" / "curve")])


def test_bf16_without_the_engine_is_one_error_line(model, test_dir, tmp_path) -> None:
    """Without a C compiler (so no native engine, where a bf16 receiver runs): one `error:` line
    naming the cause and the fix, no traceback, no report written."""
    out = tmp_path / "bf16"
    no_engine = {"CC": str(tmp_path / "no-such-compiler"), "AUDIODEC_NATIVE_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "bin", "model_report.py"), *model.args, "--test", str(test_dir),
         "--max_files", "1", "--precision", "bf16", "--out", str(out)],
        capture_output=True, text=True, env={**os.environ, **no_engine}, timeout=300,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error:") and "no-such-compiler" in lines[-1] and "use precision fp32" in lines[-1]
    assert "Traceback" not in result.stderr and not (out / "report.json").exists()


def test_entropy_bits_are_what_codec_py_stores_and_every_mean_says_how_many_files_it_covers(model, tmp_path) -> None:
    """A table fitted on one code makes range coding every other code dearer than the raw codes, which
    `codec.py encode --entropy` then stores; a silent reference leaves every metric undefined there."""
    codec = model.codec
    table = tmp_path / "skewed.entropy"
    EntropyModel.fit([np.zeros((codec.n_codebooks, 1000), np.int64)], codec.codebook_size).save(table)
    folder = tmp_path / "test"
    folder.mkdir()
    audio, rate = sf.read(official_path("input", "test_48k.wav"), dtype="float32")
    sf.write(folder / "a.wav", audio[:rate], rate, "PCM_16")
    sf.write(folder / "quiet.wav", np.zeros(rate, np.float32), rate, "PCM_16")
    args = [arg if arg != model.args[model.args.index("--entropy_table") + 1] else str(table) for arg in model.args]
    out = tmp_path / "report"
    assert main([*args, "--test", str(folder), "--codebooks", "2", "--entropy", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    for row in report["files"]:
        assert row["K2_entropy_payload_bits"] == row["K2_raw_payload_bits"]
    (line,) = report["summary"]
    assert line["entropy_kbps"] == pytest.approx(line["raw_payload_kbps"])
    assert line["files"] == dict.fromkeys(("pesq_wb", "stoi", "estoi", "si_sdr", "log_mel_distance"), 1)
    assert "Means over fewer than the 2 files" in (out / "report.md").read_text()
    assert "PESQ-WB 1, STOI 1, ESTOI 1, SI-SDR 1, LogMel 1 (every system)" in (out / "report.md").read_text()
    assert {key: report["settings"][key] for key in ("every", "max_files")} == {"every": 1, "max_files": 0}


def test_opus_kbps_is_total_bits_over_total_seconds_as_the_codecs() -> None:
    from bin.model_report import summarize

    rows = [{"seconds": 1.0, "opus12.8_payload_kbps": 20.0}, {"seconds": 3.0, "opus12.8_payload_kbps": 12.0}]
    (line,) = summarize(rows, SimpleNamespace(name="m"), [], [12.8], entropy=False)
    assert line["system"] == "Opus 12.8 kbps" and line["kbps"] == pytest.approx((20.0 + 36.0) / 4.0)  # not 16.0


def test_learning_curve_reuses_only_reports_made_with_the_same_settings(test_dir, tmp_path, monkeypatch) -> None:
    import bin.learning_curve as curve

    folder = official_path("exp", "autoencoder", "symAD_c16_vctk_48000_hop320")
    late, early = f"{folder}/checkpoint-1000000steps.pkl", f"{folder}/checkpoint-500000steps.pkl"
    out = tmp_path / "curve"
    common = ["--test", str(test_dir), "--num_threads", "1", "--out", str(out)]
    assert curve.main([early, *common, "--max_files", "1"]) == 0
    assert curve.main([early, late, *common, "--max_files", "2", "--reuse"]) == 0
    rows = json.loads((out / "curve.json").read_text())
    assert [row["files"] for row in rows] == [2, 2]  # the 1-file report was scored again, not mixed in
    monkeypatch.setattr(curve.model_report, "main", lambda *_: pytest.fail("a matching report was scored again"))
    assert curve.main([early, late, *common, "--max_files", "2", "--reuse"]) == 0
