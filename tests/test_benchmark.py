"""bin/benchmark.py: runs end to end, counts FLOPs right; the bf16 path stays close to fp32."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bin.benchmark import count_conv_flops, main, random_codec
from layers.conv import CausalConv1d, CausalConvTranspose1d, Conv1d1x1, PackedConv
from layers.layout import cat_time, is_channels_last, repeat_channels
from layers.streaming import reset_streaming
from tests.conftest import REPO, SUITE_THREADS, denormals_flushed
from utils.audiodec import StreamingCodec
from utils.errors import CodecError
from utils.runtime import native_build

AUTOENCODER = os.path.join(REPO, "config", "autoencoder", "demo_48000_hop300.yaml")
VOCODER = os.path.join(REPO, "config", "vocoder", "demo_v1_48000_hop300.yaml")


def snr_db(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    return float(10 * torch.log10(reference.pow(2).sum() / (reference - estimate).pow(2).sum()))


@pytest.mark.parametrize("vocoder", [None, VOCODER], ids=["symmetric", "vocoder"])
def test_benchmark_cli_writes_json(tmp_path, vocoder: str | None) -> None:
    out = tmp_path / "bench.json"
    argv = ["--autoencoder", AUTOENCODER, "--seconds", "1", "--frame_size", "600", "--threads", "1",
            "--json", str(out)]
    if vocoder:
        argv += ["--vocoder", vocoder]
    assert main(argv) == 0
    # Timed as the original times: denormals flushed, the threads asked for (undone after the test).
    assert denormals_flushed() and torch.get_num_threads() == 1
    result = json.loads(out.read_text())
    for key in ("rtf_encode", "rtf_decode", "rtf_total", "enc_median_ms", "dec_median_ms", "enc_p95_ms",
                "dec_p95_ms", "rtf_whole_file", "rtf_whole_file_encode", "rtf_whole_file_decode",
                "machine_fraction_whole_file_decode", "gflop_per_audio_second_encode", "gemm_gflops"):
        assert np.isfinite(result[key]) and result[key] > 0, key
    assert result["rtf_whole_file"] == pytest.approx(result["rtf_whole_file_encode"] + result["rtf_whole_file_decode"])
    # what the figures are medians of: 80 chunks of 600 samples in a second at 48 kHz, after 10 untimed
    assert (result["warmup_chunks"], result["timed_chunks"], result["whole_file_runs"]) == (10, 80, 3)
    assert "rtf_live" not in result  # only with --live
    assert result["backend"] == "native"  # the default
    if native_build.available():  # the encoder, and the symmetric decoder or the HiFi-GAN
        assert result["native_sides"] == ["encoder", "decoder"]


def test_the_test_after_a_benchmark_starts_with_the_suite_s_settings() -> None:
    """tests/conftest.py's torch_process_settings undid the benchmark's settings of the tests above."""
    assert not denormals_flushed()
    assert torch.get_num_threads() == SUITE_THREADS


def test_a_wrong_config_or_option_is_a_one_line_error(tmp_path) -> None:
    (tmp_path / "broken.yaml").write_text("generator_params: [\n")
    (tmp_path / "other.yaml").write_text("batch_size: 4\n")
    cases = {
        (str(tmp_path / "missing.yaml"), None): "config .*missing.yaml not found",
        (str(tmp_path / "broken.yaml"), None): "broken.yaml is not valid YAML",
        (str(tmp_path / "other.yaml"), None): "other.yaml has no model_type: --autoencoder takes a recipe",
        (VOCODER, None): "has model_type 'HiFiGAN': --autoencoder takes .* symAudioDec or symAudioDecUniv",
        (AUTOENCODER, AUTOENCODER): "has model_type 'symAudioDec': --vocoder takes .* HiFiGAN or UnivNet",
    }
    for (autoencoder, vocoder), message in cases.items():
        with pytest.raises(CodecError, match=message):
            random_codec(autoencoder, vocoder)
    for option, value, message in (("--threads", "0", "--threads 0: give 1 or more"),
                                   ("--seconds", "-1", "--seconds -1.0: give seconds of audio above 0, at most 3600"),
                                   ("--seconds", "inf", "--seconds inf: give seconds of audio above 0"),
                                   ("--seconds", "0.01", "--seconds 0.01 holds no chunk of 600 samples at 48000 Hz: "
                                                         "give 0.0125 or more"),
                                   ("--frame_size", "450", "--frame_size 450 is not a positive multiple of the model's "
                                                           "hop \\(300\\): use e.g. 600")):
        with pytest.raises(CodecError, match=message):
            main(["--autoencoder", AUTOENCODER, "--frame_size", "600", option, value])
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(CodecError, match="is a file, not a folder: give another output path"):  # before any timing
        main(["--autoencoder", AUTOENCODER, "--json", str(tmp_path / "file" / "out.json")])
    result = subprocess.run([sys.executable, os.path.join(REPO, "bin", "benchmark.py"), "--autoencoder", VOCODER],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr


@pytest.mark.skipif(not native_build.available(), reason="a bf16 receiver runs in the native engine")
def test_benchmark_reports_what_bf16_costs(tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    argv = ["--autoencoder", AUTOENCODER, "--seconds", "1", "--frame_size", "600", "--threads", "1",
            "--no-whole-file", "--precision", "bf16", "--json", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["precision"] == "bf16" and 20 < result["snr_vs_fp32_db"] < 120
    assert "bf16 receiver against fp32, same codes: SNR" in capsys.readouterr().out
    fp32 = tmp_path / "fp32.json"
    assert main([*argv[:-4], "--json", str(fp32)]) == 0
    assert "snr_vs_fp32_db" not in json.loads(fp32.read_text())


def test_benchmark_times_the_live_pipeline(tmp_path, capsys, monkeypatch) -> None:
    """As demoStream.py --input_file --no-pace without dumps: the pipeline keeps no audio, so that its
    memory stays flat however many --seconds it is timed on."""
    from utils import live

    streamers = []

    class Recorded(live.Streamer):
        def start(self) -> None:
            streamers.append(self)
            super().start()

    monkeypatch.setattr(live, "Streamer", Recorded)
    out = tmp_path / "bench.json"
    argv = ["--autoencoder", AUTOENCODER, "--seconds", "1", "--frame_size", "600", "--threads", "2",
            "--no-whole-file", "--live", "--json", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert np.isfinite(result["rtf_live"]) and result["rtf_live"] > 0
    assert (result["live_layout"], result["live_threads"]) in (("overlap", 1), ("coder", 2))
    assert "live pipeline RTF" in capsys.readouterr().out
    [streamer] = streamers
    assert streamer.input_dump is None and streamer.received is None and streamer.output_queue.empty()
    assert torch.get_num_threads() == 2  # the workers' thread counts stay in the workers


def test_flop_count_matches_hand_count() -> None:
    conv = CausalConv1d(4, 8, kernel_size=3, dilation=2)
    x = torch.zeros(2, 4, 100)
    assert count_conv_flops(conv, lambda: conv(x)) == 2 * 8 * 4 * 3 * 100 * 2
    grouped = CausalConv1d(6, 9, kernel_size=5, stride=3, groups=3)
    assert count_conv_flops(grouped, lambda: grouped(torch.zeros(1, 6, 30))) == 2 * 9 * 2 * 5 * 10


def test_random_weights_are_trained_like() -> None:
    _, rms = random_codec(AUTOENCODER, VOCODER)
    for part, values in rms.items():
        assert min(values) > 0.05 and max(values) < 2.0, part


@pytest.mark.parametrize(
    "layer",
    [CausalConv1d(6, 5, kernel_size=7, dilation=3), CausalConv1d(6, 6, kernel_size=6, stride=3, groups=2),
     CausalConvTranspose1d(6, 4, kernel_size=10, stride=5), Conv1d1x1(6, 3)],
    ids=["dilated", "strided_grouped", "transposed", "pointwise"],
)
def test_packed_step_equals_reference_conv(layer: torch.nn.Module) -> None:
    """The oneDNN step (inference) equals the plain autograd step to float rounding."""
    torch.manual_seed(0)
    x = torch.randn(2, 6, 60)
    reset_streaming(layer, 2)
    expected = layer.step(x)  # autograd on: the plain torch convolution
    reset_streaming(layer, 2)
    with torch.inference_mode():
        fast = layer.step(x)
    torch.testing.assert_close(fast, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("time_major", [False, True], ids=["channel_major", "time_major"])
@pytest.mark.parametrize(
    "layer",
    [CausalConv1d(6, 6, kernel_size=7, dilation=3), CausalConvTranspose1d(6, 4, kernel_size=10, stride=5)],
    ids=["dilated", "transposed"],
)
def test_streams_in_either_memory_layout(layer: torch.nn.Module, time_major: bool) -> None:
    """oneDNN returns time-major (channels-last) tensors and the streaming path keeps that layout
    (state concatenation, transposed-conv interleave); chunks in either layout give the plain step's output."""
    torch.manual_seed(4)
    x = torch.randn(2, 6, 60)
    chunks = [x[..., i:i + 20] for i in (0, 20, 40)]
    reset_streaming(layer, 2)
    expected = torch.cat([layer.step(chunk) for chunk in chunks], dim=-1)  # autograd on: plain torch conv
    if time_major:
        chunks = [chunk.transpose(1, 2).contiguous().transpose(1, 2) for chunk in chunks]
        assert all(is_channels_last(chunk) for chunk in chunks)
    reset_streaming(layer, 2)
    with torch.inference_mode():
        outputs = [layer.step(chunk) for chunk in chunks]
    torch.testing.assert_close(torch.cat(outputs, dim=-1), expected, rtol=0, atol=1e-5)
    if PackedConv.applies("onednn"):  # its time-major output is passed on as such
        assert all(is_channels_last(out) for out in outputs)


def test_layout_keeping_helpers_match_torch() -> None:
    state, x = torch.randn(2, 5, 3), torch.randn(2, 7, 5).transpose(1, 2)
    for chunk in (x, x.contiguous()):
        assert torch.equal(cat_time(state, chunk), torch.cat((state, chunk), dim=-1))
        assert torch.equal(repeat_channels(chunk, 3), chunk.repeat(1, 3, 1))
    assert is_channels_last(cat_time(state, x)) and is_channels_last(repeat_channels(x, 3))
    assert not is_channels_last(cat_time(state, x.contiguous()))


@pytest.mark.parametrize("formulation", PackedConv.FORMULATIONS)
@pytest.mark.parametrize(
    "shape",
    [(6, 5, 7, 1, 3, 1, 60), (6, 6, 6, 3, 1, 2, 60), (8, 12, 11, 1, 5, 4, 1), (4, 3, 1, 1, 1, 1, 9)],
    ids=["dilated", "strided_grouped", "grouped_one_frame", "pointwise"],
)
def test_each_conv_formulation_equals_reference(formulation: str, shape: tuple) -> None:
    """onednn (prepacked weights) and conv1d (F.conv1d, where PyTorch has no oneDNN) compute the
    same convolution, from either memory layout."""
    c_in, c_out, kernel, stride, dilation, groups, frames = shape
    if not PackedConv.applies(formulation):
        pytest.skip(f"PyTorch has no {formulation} here")
    torch.manual_seed(1)
    weight, bias = torch.randn(c_out, c_in // groups, kernel), torch.randn(c_out)
    length = (frames - 1) * stride + dilation * (kernel - 1) + 1
    x = torch.randn(2, c_in, length)
    expected = F.conv1d(x, weight, bias, stride, 0, dilation, groups)
    conv = PackedConv()
    conv._refresh(weight, bias, None)
    for layout in (x, x.transpose(1, 2).contiguous().transpose(1, 2)):  # channel-major, time-major
        got = getattr(conv, "_" + formulation)(layout, stride, dilation, groups)
        assert got.shape == expected.shape == (2, c_out, frames)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "shape", [(32, 32, 1, 1, 1, 300), (64, 64, 7, 3, 1, 25), (12, 12, 3, 1, 3, 9)],
    ids=["pointwise", "dilated", "grouped"],
)
def test_fused_residual_is_bitwise_the_separate_add(shape: tuple) -> None:
    """run(..., residual=r) is r + run(...) to the bit, whichever memory layout the skip arrives in
    (oneDNN adds it to its finished output as a post-op)."""
    c_in, c_out, kernel, dilation, groups, frames = shape
    torch.manual_seed(2)
    weight, bias = torch.randn(c_out, c_in // groups, kernel), torch.randn(c_out)
    x = torch.randn(1, frames + dilation * (kernel - 1), c_in).transpose(1, 2)  # time-major, as oneDNN leaves it
    skip = torch.randn(1, c_out, frames)
    conv = PackedConv()
    with torch.inference_mode():
        separate = conv.run(x, weight, bias, 1, dilation, groups)
        for residual in (skip, skip.transpose(1, 2).contiguous().transpose(1, 2)):
            fused = conv.run(x, weight, bias, 1, dilation, groups, residual=residual)
            assert torch.equal(fused, residual + separate)


@pytest.mark.skipif(not PackedConv.applies("onednn"), reason="PyTorch built without oneDNN")
def test_onednn_weights_are_packed_per_length_in_the_layout_run_there() -> None:
    """256 -> 256 pointwise at 5, 64, 4 and 64 frames: each length gets the weights in the layout
    oneDNN reads for it, a length seen before reuses its packing, lengths whose layouts are the
    same share one copy, and every length gives conv1d's sums. (Which lengths share a layout is
    oneDNN's choice and differs between CPUs: the test reads it, it does not assume it.)"""
    torch.manual_seed(2)
    weight = torch.randn(256, 256, 1) * 0.05
    conv = PackedConv()
    outputs = {}
    with torch.inference_mode():
        x = torch.randn(1, 256, 64)
        for frames in (5, 64, 4, 64):
            outputs[frames] = conv.run(x[..., :frames], weight, None, 1, 1, 1)
            torch.testing.assert_close(outputs[frames], F.conv1d(x[..., :frames], weight), rtol=0, atol=1e-5)
    threads = torch.get_num_threads()
    keys = [(1, 5, threads), (1, 64, threads), (1, 4, threads)]
    assert set(conv.packings) == set(keys)
    layouts = {key: bytes(torch.ops.mkldnn._get_mkldnn_serialized_md(conv.packings[key]).tolist()) for key in keys}
    for a in keys:
        for b in keys:
            assert (conv.packings[a] is conv.packings[b]) == (layouts[a] == layouts[b])  # one copy per layout
    assert len(conv.layouts) == len(set(layouts.values()))
    with torch.no_grad():
        weight.mul_(2)  # new weights: every layout is packed anew
    with torch.inference_mode():
        conv.run(x[..., :5], weight, None, 1, 1, 1)
    assert set(conv.packings) == {(1, 5, threads)} and len(conv.layouts) == 1


def test_the_torch_backend_gives_the_same_bits_every_time() -> None:
    """One formulation per convolution, chosen by nothing measured: coding a signal twice from a
    fresh state gives the same codes and the same waveform bit for bit (the receiver too)."""
    codec, _ = random_codec(AUTOENCODER, backend="torch")
    x = torch.from_numpy(np.sin(np.arange(6000) * 0.03).astype(np.float32)).view(1, 1, -1) * 0.3
    first, second = codec.code(x), codec.code(x)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_reset_with_frame_size_prepares_without_changing_the_output() -> None:
    codec, _ = random_codec(AUTOENCODER)
    x = torch.from_numpy(np.sin(np.arange(3000) * 0.03).astype(np.float32)).view(1, 1, -1) * 0.3
    codec.reset(1)
    plain = [codec.decode(codec.encode(chunk)) for chunk in x.split(600, dim=-1)]
    codec.reset(1, frame_size=600)
    prepared = [codec.decode(codec.encode(chunk)) for chunk in x.split(600, dim=-1)]
    torch.testing.assert_close(torch.cat(prepared, -1), torch.cat(plain, -1), rtol=0, atol=1e-5)
    with pytest.raises(CodecError, match="multiple of the hop"):
        codec.reset(1, frame_size=450)


@pytest.mark.skipif(not native_build.available(), reason="a bf16 receiver runs in the native engine")
def test_bf16_codec_is_close_to_fp32() -> None:
    codec, _ = random_codec(AUTOENCODER, VOCODER)
    x = torch.from_numpy(np.sin(np.arange(9600) * 0.05).astype(np.float32)).view(1, 1, -1) * 0.3
    codes32, y32 = codec.code(x)
    bf16 = StreamingCodec(codec.encoder, codec.decoder, codec.sample_rate, precision="bf16")
    codes16, y16 = bf16.code(x)
    torch.testing.assert_close(codes16, codes32, rtol=0, atol=0)  # the transmitter stays fp32
    assert snr_db(y32, y16) > 20


def test_bf16_outside_the_engine_is_an_error_that_names_the_fix() -> None:
    codec, _ = random_codec(AUTOENCODER)
    with pytest.raises(CodecError, match=r"bf16 runs in the native engine.*not selected.*use precision fp32"):
        StreamingCodec(codec.encoder, codec.decoder, codec.sample_rate, precision="bf16", backend="torch")


def test_unknown_precision_is_an_error() -> None:
    codec, _ = random_codec(AUTOENCODER)
    with pytest.raises(CodecError, match="precision"):
        StreamingCodec(codec.encoder, codec.decoder, codec.sample_rate, precision="int4")
