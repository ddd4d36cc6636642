"""The native engine (csrc/engine.c): Contract 2 by construction, the torch backend's results to float
rounding, batches, state hand-over, weight changes, and the fall-backs."""

from __future__ import annotations

import os
import platform
import re
import signal
import threading

import numpy as np
import pytest
import torch

from layers.streaming import StreamingState, export_states, import_states
from models.autoencoder.AudioDec import Generator
from models.vocoder.HiFiGAN import Generator as HiFiGAN
from tests.conftest import MANIFEST, OFFICIAL, REPO, official_path
from utils.audiodec import StreamingCodec
from utils.errors import CodecError
from utils.runtime import native, native_build
from utils.runtime.backends import precision_problem
from utils.runtime.native import NativeStep
from utils.runtime.torchscript import TracedStep

pytestmark = pytest.mark.skipif(
    not native_build.available(), reason=f"native engine unavailable: {native_build.unavailable_reason()}"
)


def load(name: str, backend: str = "native", **kwargs) -> StreamingCodec:
    entry = MANIFEST[name]
    return StreamingCodec.from_checkpoints(
        official_path(entry["encoder_checkpoint"]), official_path(entry["decoder_checkpoint"]), backend=backend,
        **kwargs,
    )


def speech(batch: int = 1, samples: int = 300 * 64, seed: int = 3) -> torch.Tensor:
    """Noise shaped by a slow envelope: loud and quiet stretches, like speech."""
    generator = torch.Generator().manual_seed(seed)
    envelope = torch.sin(torch.linspace(0, 12, samples)).abs() + 0.05
    return 0.3 * envelope * torch.randn(batch, 1, samples, generator=generator)


def stream(codec: StreamingCodec, x: torch.Tensor, cuts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes and waveform of x fed in the pieces between `cuts`, from a fresh warmed-up state."""
    codec.reset(x.shape[0])
    codes = [codec.encode(x[..., start:end]) for start, end in zip(cuts, cuts[1:])]
    codec.reset(x.shape[0])
    waves = [codec.decode(piece) for piece in codes]
    return torch.cat(codes, dim=-1), torch.cat(waves, dim=-1)


@pytest.mark.parametrize(
    "name",
    ["vctk_sym", "vctk_v0", "vctk_v1", "vctk_v2", "vctk_univ", "libritts_v1", "vctk_c16h320_sym", "vctk_activate_sym"],
)
def test_the_released_codecs_run_both_sides_natively(name: str) -> None:
    """(The shipped small v1 vocoders have groups of 8 channels: padded to whole vectors.)"""
    codec = load(name)
    assert codec.native_sides == ["encoder", "decoder"]
    assert isinstance(codec._encode_chunk, NativeStep) and isinstance(codec._decode_codes, NativeStep)


@pytest.mark.parametrize("name", ["vctk_sym", "vctk_activate_sym", "vctk_v0"])
def test_codes_and_waveform_do_not_depend_on_the_cuts(name: str) -> None:
    """Contract 2 by construction: whole signal, 300-sample chunks, and chunk sizes changing
    mid-stream give the same codes and, here, the same waveform bit for bit (every value is summed
    in one order whatever the chunk length)."""
    codec = load(name)
    x = speech()
    length = x.shape[-1]
    whole_codes, whole_wave = stream(codec, x, [0, length])
    for cuts in (list(range(0, length + 1, 300)), [0, 300, 1800, 2100, 6900, 7200, 12000, 12300, length]):
        codes, wave = stream(codec, x, cuts)
        assert torch.equal(codes, whole_codes)
        assert torch.equal(wave, whole_wave)


# (vctk_activate_sym: activations around both sides; vctk_v0: multi-receptive-field blocks)
@pytest.mark.parametrize("name", ["vctk_sym", "vctk_activate_sym", "vctk_v0"])
def test_results_equal_the_torch_backend_to_float_rounding(name: str) -> None:
    """Same codes as the TorchScript backend (no VQ near-tie in this signal), waveform >= 100 dB."""
    x = speech(samples=300 * 40)
    cuts = list(range(0, x.shape[-1] + 1, 1500))
    native_codes, native_wave = stream(load(name), x, cuts)
    torch_codes, torch_wave = stream(load(name, backend="torch"), x, cuts)
    assert torch.equal(native_codes, torch_codes)
    noise = (native_wave - torch_wave).pow(2).sum()
    assert 10 * torch.log10(torch_wave.pow(2).sum() / noise) >= 100


def test_a_batch_of_streams_equals_each_stream_alone() -> None:
    codec = load("vctk_sym")
    x = torch.cat([speech(seed=1), speech(seed=2)])
    cuts = list(range(0, x.shape[-1] + 1, 600))
    codes, wave = stream(codec, x, cuts)
    for index in range(2):
        alone_codes, alone_wave = stream(codec, x[index:index + 1], cuts)
        assert torch.equal(codes[index:index + 1], alone_codes)
        assert torch.equal(wave[index:index + 1], alone_wave)


@pytest.mark.parametrize("name", ["vctk_sym", "vctk_v0"])  # (v0's branches share one input buffer)
def test_states_are_handed_to_and_from_the_torch_layers(name: str) -> None:
    """After native steps every layer holds its state as the torch backend would (same shape, to
    float rounding); a state replaced from outside (here: the torch backend's) is read back in."""
    x = speech(samples=300 * 12)
    native, reference = load(name), load(name, backend="torch")
    for codec in (native, reference):
        codec.reset(1)
        for start in range(0, x.shape[-1], 300):
            codec.decode(codec.encode(x[..., start:start + 300]))

    def states(codec: StreamingCodec) -> list[torch.Tensor]:
        return [
            m._state for part in (codec.encoder, codec.decoder) for m in part.modules()
            if isinstance(m, StreamingState) and m._state is not None
        ]

    for ours, theirs in zip(states(native), states(reference), strict=True):
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    # hand the torch backend's states to the native layers: the next chunk then codes alike
    with torch.inference_mode():  # (the states are inference tensors)
        for ours, theirs in zip(states(native), states(reference)):
            ours.copy_(theirs)
    chunk = speech(samples=300, seed=9)
    native_codes, reference_codes = native.encode(chunk), reference.encode(chunk)
    assert torch.equal(native_codes, reference_codes)
    torch.testing.assert_close(native.decode(native_codes), reference.decode(reference_codes), rtol=0, atol=1e-5)


def test_changed_weights_are_repacked() -> None:
    """Doubling the last convolution's weights (no bias) doubles the output exactly."""
    codec = load("vctk_sym")
    codes = codec.encode(speech(samples=1500))
    codec.reset(1)
    before = codec.decode(codes)
    with torch.no_grad():
        codec.decoder.decoder.conv2.conv.weight.mul_(2)
    codec.reset(1)
    after = codec.decode(codes)
    assert torch.equal(after, 2 * before)


def tiny_codec(backend: str, codebook_size: int) -> StreamingCodec:
    """A small random AudioDec whose sizes are not multiples of the engine's 16-float vectors."""
    torch.manual_seed(5)
    generator = Generator(
        encode_channels=6, decode_channels=6, code_dim=10, codebook_num=3, codebook_size=codebook_size,
        enc_ratios=(2, 3), dec_ratios=(3, 2), enc_strides=(2, 3), dec_strides=(3, 2),
    ).eval()
    return StreamingCodec(generator, generator, 48000, backend=backend)


def test_sizes_off_the_vector_width() -> None:
    """6, 12 and 18 channels, 10-dimensional codes and 20 codes per codebook: the native codes
    equal the eager backend's, and no padded code is ever chosen."""
    x = speech(samples=6 * 500)
    cuts = list(range(0, x.shape[-1] + 1, 60))
    native = tiny_codec("native", 20)
    assert native.native_sides == ["encoder", "decoder"]
    native_codes, native_wave = stream(native, x, cuts)
    eager_codes, eager_wave = stream(tiny_codec("eager", 20), x, cuts)
    assert torch.equal(native_codes, eager_codes) and int(native_codes.max()) < 20
    torch.testing.assert_close(native_wave, eager_wave, rtol=0, atol=1e-5)


def test_in_place_activations_run_as_torch() -> None:
    """The residual units add the activated input where the activation works in place (the model's own
    arithmetic, which the engine, adding the input, did not reproduce): such a side runs as torch."""
    torch.manual_seed(0)
    generator = Generator(
        encode_channels=4, decode_channels=4, code_dim=8, codebook_num=2, codebook_size=16, enc_ratios=(2, 4),
        dec_ratios=(4, 2), enc_strides=(2, 3), dec_strides=(3, 2), nonlinear_activation="ELU",
        nonlinear_activation_params={"alpha": 1.0, "inplace": True},
    ).eval()
    assert native.why_not_native(generator, "encoder") == "in-place activations do not run natively"
    x = speech(samples=6 * 40)
    results = {}
    for backend in ("native", "eager"):
        codec = StreamingCodec(generator, generator, 24000, backend=backend)
        results[backend] = stream(codec, x, list(range(0, x.shape[-1] + 1, 6)))
        assert codec.native_sides == []
    assert torch.equal(results["native"][0], results["eager"][0])
    torch.testing.assert_close(results["native"][1], results["eager"][1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("backend", ["native", "torch", "eager"])
def test_one_generator_as_both_sides_holds_a_batch(backend: str) -> None:
    """Its layers were expanded to a batch twice (once as encoder, once as decoder): B * B streams."""
    codec = tiny_codec(backend, 20)
    alone = [tiny_codec(backend, 20) for _ in range(2)]
    x = speech(samples=6 * 50).repeat(2, 1, 1) * torch.tensor([1.0, 0.5])[:, None, None]
    codec.reset(2)
    codes = codec.encode(x)
    audio = codec.decode(codes)
    for index, single in enumerate(alone):
        single.reset(1)
        assert torch.equal(single.encode(x[index : index + 1]), codes[index : index + 1])
        torch.testing.assert_close(single.decode(codes[index : index + 1]), audio[index : index + 1], rtol=0,
                                   atol=1e-6)


@pytest.mark.parametrize("backend", ["native", "torch", "eager"])
def test_a_codec_made_in_inference_mode_codes_as_any_other(backend: str) -> None:
    """Inference-mode tensors keep no version counter, which the caches of packed weights and codebook
    terms read; a HiFi-GAN left with weight norm computes its weights as such tensors too."""
    entry = MANIFEST["vctk_v1"]
    paths = official_path(entry["encoder_checkpoint"]), official_path(entry["decoder_checkpoint"])
    x = speech(samples=3000)
    expected = StreamingCodec.from_checkpoints(*paths, backend=backend).code(x)
    with torch.inference_mode():
        codec = StreamingCodec.from_checkpoints(*paths, backend=backend)
    codes, audio = codec.code(x)
    assert torch.equal(codes, expected[0]) and torch.equal(audio, expected[1])
    torch.manual_seed(0)
    vocoder = HiFiGAN(in_channels=10, out_channels=1, channels=16, kernel_size=7, upsample_scales=(2, 3),
                      upsample_kernel_sizes=(4, 6), resblock_kernel_sizes=(3,), resblock_dilations=((1, 3),),
                      groups=2, stats="unused", load_stats=False).eval()  # weight norm on
    codec = StreamingCodec(tiny_codec(backend, 20).encoder, vocoder, 48000, backend=backend)
    codec.reset(1)
    assert codec.decode(codec.encode(x[..., :60])).shape == (1, 1, 60)


def test_a_non_causal_model_is_refused_in_one_line() -> None:
    generator = Generator(encode_channels=4, decode_channels=4, code_dim=8, codebook_num=2, codebook_size=16,
                          enc_ratios=(2, 4), dec_ratios=(4, 2), enc_strides=(2, 3), dec_strides=(3, 2),
                          mode="noncausal")
    with pytest.raises(CodecError, match=r"the encoder is non-causal \(mode: noncausal\): streaming needs a causal"):
        StreamingCodec(generator, generator, 24000)


def tiny_vocoder_codec(backend: str) -> StreamingCodec:
    """The tiny AudioDec's encoder with a small grouped HiFi-GAN (v1's structure, normalized input)."""
    encoder = tiny_codec(backend, 20).encoder
    torch.manual_seed(6)
    vocoder = HiFiGAN(
        in_channels=10, channels=64, upsample_scales=(2, 3), upsample_kernel_sizes=(4, 6),
        resblock_kernel_sizes=(5,), resblock_dilations=((1, 3, 5),), groups=3, use_weight_norm=False,
        stats="unused", load_stats=False,
    ).eval()
    with torch.no_grad():
        vocoder.mean.copy_(0.1 * torch.randn(10))
        vocoder.scale.copy_(0.5 + torch.rand(10))
    return StreamingCodec(encoder, vocoder, 48000, backend=backend)


def test_the_grouped_hifigan_vocoder() -> None:
    """A v1-like vocoder (grouped blocks, LeakyReLU, tanh, input normalization) runs natively: same
    waveform as the eager backend to float rounding, and bit for bit whatever the cuts."""
    x = speech(samples=6 * 400)
    native = tiny_vocoder_codec("native")
    assert native.native_sides == ["encoder", "decoder"]
    cuts = list(range(0, x.shape[-1] + 1, 60))
    native_codes, native_wave = stream(native, x, cuts)
    eager_codes, eager_wave = stream(tiny_vocoder_codec("eager"), x, cuts)
    assert torch.equal(native_codes, eager_codes)
    torch.testing.assert_close(native_wave, eager_wave, rtol=0, atol=2e-6)
    whole_codes, whole_wave = stream(native, x, [0, 1200, x.shape[-1]])
    assert torch.equal(whole_codes, native_codes) and torch.equal(whole_wave, native_wave)


def test_plans_beyond_the_memory_cap_are_dropped_oldest_first() -> None:
    codec = load("vctk_sym")
    codec.reset(1)
    step = codec._encode_chunk
    sizes = {}
    for length in (300, 600, 900):
        codec.encode(speech(samples=length))
        key = next(key for key in step.built if key[0][-1] == length)
        sizes[length] = step.built[key].nbytes
    assert len(step.built) == 3
    step.MAX_PLAN_BYTES = sum(sizes.values())  # (sizes grow with the length: room for 600 and 1200)
    codec.encode(speech(samples=600))  # (used again: now the newest)
    codec.encode(speech(samples=1200))
    assert sorted(key[0][-1] for key in step.built) == [600, 1200]


def test_codes_out_of_range_are_refused() -> None:
    codec = load("vctk_sym")
    codes = codec.encode(speech(samples=1500)).clone()  # (an inference tensor otherwise)
    size = codec.codebook_size
    codes[0, 3, 2] = size
    with pytest.raises(CodecError, match=rf"codes must lie in \[0, {size}\)"):
        codec.decode(codes)
    codes[0, 3, 2] = -1
    with pytest.raises(CodecError, match="not this model's codes"):
        codec.decode(codes)


def unsupported_receiver(**kwargs) -> StreamingCodec:
    """vctk_v0 with a GELU in one branch of its first block: a receiver the engine does not run."""
    v0 = load("vctk_v0", backend="torch")
    v0.decoder.blocks[0].blocks[1].activation = torch.nn.GELU()
    return StreamingCodec(v0.encoder, v0.decoder, v0.sample_rate, **kwargs)


def test_what_the_engine_cannot_run_falls_back_to_torch() -> None:
    codec = unsupported_receiver()
    assert codec.native_sides == ["encoder"] and not isinstance(codec._decode_codes, NativeStep)
    assert isinstance(codec._decode_latent, TracedStep)
    assert "branches with different activations" in native.why_not_native(codec.decoder, "decoder")
    for branch in codec.decoder.blocks[0].blocks:
        branch.activation = torch.nn.GELU()
    assert "GELU activations do not run natively" in native.why_not_native(codec.decoder, "decoder")
    activate = load("vctk_activate_sym").decoder  # runs natively, but not with another output or activation
    activate.decoder.activation_output = torch.nn.Identity()
    assert native.why_not_native(activate, "decoder") == "only a tanh output runs natively"
    activate.decoder.conv_blocks[-1] = torch.nn.GELU()
    assert "GELU activations do not run natively" in native.why_not_native(activate, "decoder")
    decoder = load("vctk_sym").decoder
    assert native.why_not_native(decoder, "decoder") == ""


def round_weights_to_bf16(module: torch.nn.Module) -> None:
    """Every convolution weight rounded to bf16 (biases stay float32, as in a bf16 receiver)."""
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name.endswith("weight") and parameter.dim() == 3:
                parameter.copy_(parameter.to(torch.bfloat16).float())


@pytest.mark.parametrize("name", ["vctk_sym", "vctk_v1"])
def test_a_bf16_receiver_runs_natively_on_any_cpu(name: str) -> None:
    """bf16 weights, float32 sums: the fp32 engine's waveform on weights rounded to bf16 first, bit
    for bit, whatever the cuts; the transmitter's codes unchanged; close to the fp32 receiver."""
    bf16 = load(name, precision="bf16")
    assert bf16.native_sides == ["encoder", "decoder"] and bf16.precision == "bf16"
    x = speech(samples=300 * 24)
    codes, wave = stream(bf16, x, list(range(0, x.shape[-1] + 1, 300)))
    rounded = load(name)
    round_weights_to_bf16(rounded.decoder)  # (the codebooks stay: the receiver's lookup is float32)
    rounded_codes, rounded_wave = stream(rounded, x, [0, x.shape[-1]])
    assert torch.equal(codes, rounded_codes) and torch.equal(wave, rounded_wave)
    fp32_codes, fp32_wave = stream(load(name), x, [0, x.shape[-1]])
    assert torch.equal(codes, fp32_codes)
    assert 10 * torch.log10(fp32_wave.pow(2).sum() / (wave - fp32_wave).pow(2).sum()) > 25


@pytest.mark.parametrize("name", ["vctk_sym", "vctk_v1", "vctk_v0"])
def test_an_int8_receiver_runs_natively_on_any_cpu(name: str) -> None:
    """int8 weights with a scale per output channel, float32 sums: the same waveform whatever the
    cuts, bit for bit; the transmitter's codes unchanged; close to the fp32 receiver."""
    int8 = load(name, precision="int8")
    assert int8.native_sides == ["encoder", "decoder"] and int8.precision == "int8"
    x = speech(samples=300 * 24)
    codes, wave = stream(int8, x, list(range(0, x.shape[-1] + 1, 300)))
    whole_codes, whole_wave = stream(load(name, precision="int8"), x, [0, x.shape[-1]])
    assert torch.equal(codes, whole_codes) and torch.equal(wave, whole_wave)
    fp32_codes, fp32_wave = stream(load(name), x, [0, x.shape[-1]])
    assert torch.equal(codes, fp32_codes)
    snr = 10 * torch.log10(fp32_wave.pow(2).sum() / (wave - fp32_wave).pow(2).sum())
    assert 25 < snr < 120  # (not the fp32 waveform itself: the weights did change)


def test_int8_weights_keep_each_column_within_half_a_step() -> None:
    w = torch.randn(2, 3, 5, 8)  # packed (blocks, k, C_in, width)
    w[1, :, :, 6] = 0.0  # a column of zeros (as padding is)
    q, scale = native._int8_columns(w)
    assert q.dtype == torch.int8 and q.shape == w.shape and scale.shape == (16,)
    dequantized = q.float() * scale.reshape(2, 1, 1, 8)
    assert torch.all((dequantized - w).abs() <= scale.reshape(2, 1, 1, 8) / 2 + 1e-7)
    assert torch.equal(q.abs().amax(dim=(1, 2)).flatten()[[0, 5, 13]], torch.tensor([127, 127, 127], dtype=torch.int8))
    assert scale[14] == 1.0 and torch.all(q[1, :, :, 6] == 0)


def test_a_bf16_receiver_outside_the_engine_names_the_fix() -> None:
    with pytest.raises(CodecError, match=r"does not run this receiver \(the native backend is not selected\)"):
        load("vctk_sym", backend="torch", precision="bf16")
    with pytest.raises(CodecError, match=r"does not run this receiver \(multi-receptive-field branches .* fp32"):
        unsupported_receiver(precision="bf16")
    decoder = load("vctk_sym").decoder
    assert re.fullmatch(r"precision bf16 is for a CPU receiver .* use precision fp32 on cuda:0",
                        precision_problem("bf16", torch.device("cuda:0"), decoder, ["encoder", "decoder"]))
    with pytest.raises(CodecError, match=r"^precision int8 runs in the native engine, which does not run this"):
        load("vctk_sym", backend="eager", precision="int8")
    with pytest.raises(ValueError, match="the engine stores"):
        NativeStep(load("vctk_sym").decoder, lambda x: x, "decoder", load("vctk_sym").encoder.quantizer.codebook,
                   torch.float16)


def test_without_a_compiler_the_codec_runs_torch(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("AUDIODEC_NATIVE_CACHE", str(tmp_path / "cache"))
    native_build._library.cache_clear()
    try:
        assert not native_build.available()
        assert "no-such-compiler" in native_build.unavailable_reason()
        codec = load("vctk_sym")
        assert codec.native_sides == []
        x = speech(samples=3000)
        codes, wave = stream(codec, x, [0, 1500, 3000])
        assert codes.shape == (1, 8, 10) and wave.shape == (1, 1, 3000)
    finally:
        monkeypatch.undo()
        native_build._library.cache_clear()
    assert native_build.available()


def test_the_library_is_built_once_per_source(monkeypatch, tmp_path) -> None:
    """A fresh cache folder gets one library; loading again reuses it."""
    monkeypatch.setenv("AUDIODEC_NATIVE_CACHE", str(tmp_path))
    native_build._library.cache_clear()
    try:
        assert native_build.available()
        built = list(tmp_path.glob("engine-*.so"))
        assert len(built) == 1
        stamp = built[0].stat().st_mtime_ns
        native_build._library.cache_clear()
        assert native_build.available()
        assert sorted(tmp_path.glob("*")) == [built[0], built[0].with_name(built[0].name + ".sha256")]
        assert built[0].stat().st_mtime_ns == stamp
    finally:
        monkeypatch.undo()
        native_build._library.cache_clear()


def test_a_damaged_cached_library_is_built_again(monkeypatch, tmp_path) -> None:
    """A cached library cut short (which would crash the process that loads it) is built again."""
    monkeypatch.setenv("AUDIODEC_NATIVE_CACHE", str(tmp_path))
    native_build._library.cache_clear()
    try:
        assert native_build.available()
        (library,) = tmp_path.glob("engine-*.so")
        whole = library.read_bytes()
        for damaged in (whole[: len(whole) // 3], whole[:-1] + bytes([whole[-1] ^ 1])):  # cut; one bit
            (tmp_path / "damaged").write_bytes(damaged)  # a new file: this process has the old one mapped
            os.replace(tmp_path / "damaged", library)
            native_build._library.cache_clear()
            assert native_build.available(), native_build.unavailable_reason()
            assert library.read_bytes() == whole  # the same build again
        codes, _ = stream(load("vctk_sym"), speech(samples=1500), [0, 1500])
        assert codes.shape == (1, 8, 5)
    finally:
        monkeypatch.undo()
        native_build._library.cache_clear()


def test_a_build_that_dies_on_this_cpu_is_neither_used_nor_cached(monkeypatch, tmp_path) -> None:
    """A build for instructions the CPU lacks dies in the probe's child process (here made to, as it
    does with AUDIODEC_NATIVE_MARCH=x86-64-v4 on an AVX2 CPU), not in the codec: TorchScript runs."""
    monkeypatch.setenv("AUDIODEC_NATIVE_CACHE", str(tmp_path))
    monkeypatch.setattr(native_build, "PROBE", "import os, signal\nos.kill(os.getpid(), signal.SIGILL)\n")
    native_build._library.cache_clear()
    try:
        assert not native_build.available()
        assert native_build.unavailable_reason() == (  # (utils/as_avx2.sh names a -march)
            f"the engine built for -march={native_build.march()} stops with SIGILL on this CPU (an instruction it "
            "lacks): set AUDIODEC_NATIVE_MARCH to a target this CPU has, or unset it")
        assert list(tmp_path.iterdir()) == []  # nothing cached, no temp file left
        assert load("vctk_sym").native_sides == []
    finally:
        monkeypatch.undo()
        native_build._library.cache_clear()


def test_thousands_of_threads_take_their_scratch_from_the_heap() -> None:
    """The VQ's scratch grows with the threads beyond the frames; past 256 KB it is not on the stack,
    which a thousand threads overflowed (a thread of 512 KB of stack here). Same codes as on one."""
    codec = load("vctk_sym")
    x = speech(samples=300 * 80)
    codec.reset(1)
    one = codec.encode(x)
    many: dict[str, torch.Tensor] = {}

    def encode() -> None:  # its OpenMP team of 1000 threads ends with it
        torch.set_num_threads(1000)
        codec.reset(1)
        many["codes"] = codec.encode(x)

    size = threading.stack_size(512 * 1024)
    try:
        worker = threading.Thread(target=encode)
        worker.start()
        worker.join()
    finally:
        threading.stack_size(size)
    assert torch.equal(many["codes"], one)


def test_a_reduced_precision_receiver_without_the_engine_says_so_in_one_line(tmp_path, python: str) -> None:
    import subprocess

    source = official_path("input", "test_48k.wav")
    env = {**os.environ, "CC": str(tmp_path / "no-such-compiler"), "AUDIODEC_NATIVE_CACHE": str(tmp_path / "cache")}
    result = subprocess.run([python, os.path.join(REPO, "demoFile.py"), "--model", "vctk_sym", "--cuda", "-1",
                             "--precision", "int8", "-i", source, "-o", str(tmp_path / "out.wav")],
                            cwd=OFFICIAL, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: precision int8 runs in the native engine, which does not run this "
                                    f"receiver (C compiler {tmp_path / 'no-such-compiler'} does not run")
    assert not (tmp_path / "out.wav").exists()


@pytest.mark.parametrize("threads", [2, 3])
def test_a_compiler_without_openmp_builds_the_engine_on_posix_threads(openmp_less_compiler, threads: int) -> None:
    """A compiler that refuses -fopenmp (Apple's clang) builds the engine with -pthread instead, once:
    its own teams of POSIX threads give the OpenMP build's codes and waveform bit for bit, whole
    chunks and one-frame chunks (whose VQ search is split across the threads) alike."""
    x = speech(samples=300 * 16)
    cuts = [0, 300, 600, 2400, 2700, 4800]  # one-frame chunks and longer ones
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        if native_build.build().threads != "openmp":
            pytest.skip("no OpenMP build here to compare with")
        codes, wave = stream(load("vctk_sym"), x, cuts)
        calls = openmp_less_compiler()
        assert native_build.build().threads == "pthreads"
        compiles = [line.split() for line in calls.read_text().splitlines() if "engine.c" in line]
        assert len(compiles) == 2 and "-fopenmp" in compiles[0]
        assert "-pthread" in compiles[1] and "-fopenmp" not in compiles[1]
        posix = load("vctk_sym")
        assert posix.native_sides == ["encoder", "decoder"]
        posix_codes, posix_wave = stream(posix, x, cuts)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(posix_codes, codes) and torch.equal(posix_wave, wave)
    native_build._library.cache_clear()
    assert native_build.build().threads == "pthreads"  # from the cache: not compiled again
    assert sum("engine.c" in line for line in calls.read_text().splitlines()) == 2


def test_posix_thread_teams_serve_concurrent_streams_and_a_forked_child(openmp_less_compiler) -> None:
    """Each calling thread leads a team of its own: two streams coded at once in two threads give what
    each gives alone. A child forked after a team ran starts a team of its own (its parent's workers
    are gone)."""
    openmp_less_compiler()
    inputs = [speech(samples=300 * 12, seed=seed) for seed in (1, 2)]
    cuts = list(range(0, 300 * 12 + 1, 600))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        codecs = [load("vctk_sym"), load("vctk_sym")]
        alone = [stream(codec, x, cuts) for codec, x in zip(codecs, inputs)]
        together: list = [None, None]

        def code(i: int) -> None:
            together[i] = stream(codecs[i], inputs[i], cuts)

        workers = [threading.Thread(target=code, args=(i,)) for i in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
        assert not any(worker.is_alive() for worker in workers)
    finally:
        torch.set_num_threads(before)
    for (codes, wave), (expected_codes, expected_wave) in zip(together, alone):
        assert torch.equal(codes, expected_codes) and torch.equal(wave, expected_wave)

    # torch's own thread pools do not survive a fork: the child calls the engine alone, on numpy arrays.
    x = np.random.default_rng(0).standard_normal((4, 20000), dtype=np.float32)

    def leaky_relu_on_two_threads() -> np.ndarray:
        out = np.empty_like(x)
        native_build.build().library.engine_activation(
            x.ctypes.data, x.shape[1], out.ctypes.data, out.shape[1], 0, x.shape[0], x.shape[1], 0.25,
            native.ACT_LEAKY, 0, 2)  # fmt: skip
        return out

    expected = np.where(x > 0, x, x * np.float32(0.25))
    assert np.array_equal(leaky_relu_on_two_threads(), expected)  # this thread's team now exists
    pid = os.fork()
    if pid == 0:  # exit 0 when it computes as the parent did; the alarm kills it if it hangs
        signal.alarm(30)
        os._exit(0 if np.array_equal(leaky_relu_on_two_threads(), expected) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


NEOVERSE_N1 = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
CPU revision\t: 1

"""


def test_nodes_of_another_cpu_type_get_builds_of_their_own(monkeypatch, tmp_path) -> None:
    """The cache key holds what a -march=native build may use (x86 flags; arm64 features and part),
    so nodes of two CPU types sharing a home folder build one library each."""
    neoverse_v1 = NEOVERSE_N1.replace("asimddp", "asimddp sve").replace("0xd0c", "0xd40")
    two_cores = NEOVERSE_N1 + NEOVERSE_N1.replace("processor\t: 0", "processor\t: 1")
    assert native_build.cpu_identity(two_cores) == native_build.cpu_identity(NEOVERSE_N1)
    assert native_build.cpu_identity(neoverse_v1) != native_build.cpu_identity(NEOVERSE_N1)
    assert "CPU part\t: 0xd0c" in native_build.cpu_identity(NEOVERSE_N1)
    x86 = "processor\t: 0\nflags\t\t: fpu sse2 avx2\n\nprocessor\t: 1\nflags\t\t: fpu sse2 avx2\n"
    assert native_build.cpu_identity(x86) == "flags\t\t: fpu sse2 avx2"
    monkeypatch.setenv("AUDIODEC_NATIVE_CACHE", str(tmp_path))
    try:
        for cpuinfo in (NEOVERSE_N1, neoverse_v1, NEOVERSE_N1):  # (this machine's compiler builds either)
            monkeypatch.setattr(native_build, "_cpu_flags", lambda text=cpuinfo: native_build.cpu_identity(text))
            native_build._library.cache_clear()
            assert native_build.available()
    finally:
        monkeypatch.undo()
        native_build._library.cache_clear()
    assert len(list(tmp_path.glob("engine-*.so"))) == 2


@pytest.fixture
def engine_for(monkeypatch, tmp_path):
    """Rebuild the engine for another -march (through AUDIODEC_NATIVE_MARCH) for one test."""

    def rebuild(march: str) -> None:
        monkeypatch.setenv("AUDIODEC_NATIVE_MARCH", march)
        monkeypatch.setenv("AUDIODEC_NATIVE_CACHE", str(tmp_path))
        native_build._library.cache_clear()

    yield rebuild
    monkeypatch.undo()
    native_build._library.cache_clear()


@pytest.mark.skipif(platform.machine() != "x86_64", reason="an x86-64 target")
def test_the_portable_sse2_build_runs_the_codec(engine_for) -> None:
    """-march=x86-64 (4-float vectors, no FMA): Contract 2 bit for bit, and the torch backend's
    codes and waveform to float rounding."""
    engine_for("x86-64")
    assert native_build.build().isa == "generic" and native_build.build().lanes == 4
    x = speech(samples=300 * 20)
    native = load("vctk_sym")
    assert native.native_sides == ["encoder", "decoder"]
    whole_codes, whole_wave = stream(native, x, [0, x.shape[-1]])
    codes, wave = stream(native, x, list(range(0, x.shape[-1] + 1, 300)))
    assert torch.equal(codes, whole_codes) and torch.equal(wave, whole_wave)
    torch_codes, torch_wave = stream(load("vctk_sym", backend="torch"), x, [0, x.shape[-1]])
    assert torch.equal(codes, torch_codes)
    torch.testing.assert_close(wave, torch_wave, rtol=0, atol=1e-5)


@pytest.mark.parametrize("value, message", [
    ("no-such-cpu", "cannot build for -march=no-such-cpu: set AUDIODEC_NATIVE_MARCH to a target it knows"),
    ("x86-64; rm", "AUDIODEC_NATIVE_MARCH='x86-64; rm' is not a -march value"),
])
def test_a_bad_march_falls_back_to_torch_with_the_cause(engine_for, value: str, message: str) -> None:
    engine_for(value)
    assert not native_build.available() and message in native_build.unavailable_reason()
    codec = load("vctk_sym")
    assert codec.native_sides == []
    codes, wave = stream(codec, speech(samples=3000), [0, 1500, 3000])
    assert codes.shape == (1, 8, 10) and wave.shape == (1, 1, 3000)


@pytest.mark.parametrize("threads", [1, 3])
def test_a_frame_searched_by_several_threads_gets_the_codes_of_one(threads: int) -> None:
    """A chunk of one frame splits each codebook's search across the threads (uneven ranges with
    3); the codes equal those of whole-signal frames, each searched by one thread."""
    codec = load("vctk_sym")
    x = speech(samples=300 * 24)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        whole, _ = stream(codec, x, [0, x.shape[-1]])
        chunked, _ = stream(codec, x, list(range(0, x.shape[-1] + 1, 300)))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(chunked, whole)


def test_exported_states_outlive_later_steps() -> None:
    """The engine writes each step's states into the vector of the step before last: an export is a
    copy, so streams saved after a chunk continue alike after other audio ran."""
    codec = load("vctk_sym")
    x, other = speech(samples=300 * 8), speech(samples=300 * 4, seed=5)

    def encode(signal: torch.Tensor) -> torch.Tensor:
        return torch.cat([codec.encode(signal[..., i:i + 300]) for i in range(0, signal.shape[-1], 300)], -1)

    codec.reset(1)
    encode(x[..., :1200])
    saved = export_states(codec.encoder)
    expected = encode(x[..., 1200:])
    encode(other)
    import_states(codec.encoder, saved)
    assert torch.equal(encode(x[..., 1200:]), expected)


def test_a_compiler_without_march_native_builds_for_its_own_target(clang_14_on_arm64, caplog, monkeypatch) -> None:
    """clang before 15 refuses -march=native on arm64 (Apple's too, which also lacks OpenMP): the
    engine is built for the compiler's default target, once, instead of leaving the codec to
    TorchScript; it runs both sides with the torch backend's codes."""
    monkeypatch.delenv("AUDIODEC_NATIVE_MARCH", raising=False)  # utils/as_avx2.sh names one
    with caplog.at_level("INFO", logger=native_build.__name__):
        calls = clang_14_on_arm64()
        build = native_build.build()
    assert build is not None, native_build.unavailable_reason()
    assert build.threads == "pthreads"
    compiles = [line.split() for line in calls.read_text().splitlines() if "engine.c" in line]
    assert "-march=native" in compiles[0] and "-fopenmp" in compiles[0]
    assert not any(flag.startswith("-march") for flag in compiles[-1]) and "-fopenmp" not in compiles[-1]
    assert any("does not take -march=native" in record.getMessage() for record in caplog.records)
    x = speech(samples=300 * 20)
    native = load("vctk_sym")
    assert native.native_sides == ["encoder", "decoder"]
    codes, wave = stream(native, x, list(range(0, x.shape[-1] + 1, 300)))
    torch_codes, torch_wave = stream(load("vctk_sym", backend="torch"), x, [0, x.shape[-1]])
    assert torch.equal(codes, torch_codes)
    torch.testing.assert_close(wave, torch_wave, rtol=0, atol=1e-5)
    native_build._library.cache_clear()
    assert native_build.available()  # from the cache: not compiled again
    assert sum("engine.c" in line for line in calls.read_text().splitlines()) == len(compiles)


def test_a_march_named_by_the_variable_is_not_dropped(clang_14_on_arm64, monkeypatch) -> None:
    clang_14_on_arm64()
    monkeypatch.setenv("AUDIODEC_NATIVE_MARCH", "native")
    assert not native_build.available()
    assert "cannot build for -march=native: set AUDIODEC_NATIVE_MARCH" in native_build.unavailable_reason()


@pytest.mark.parametrize("threads", [1, 3])
def test_equal_codes_resolve_to_the_first_across_lanes_and_threads(threads: int) -> None:
    """Codebook 0 holds one vector at codes 3, 17 and 50, nearer every latent than its other codes:
    in vectors of 4, 8 or 16 floats the three sit in lanes 3, 1 and 2, and one-frame chunks on 3
    threads split them over three ranges. Every frame gets code 3, as torch's first minimum."""

    def tied_codec(backend: str) -> StreamingCodec:
        torch.manual_seed(5)
        generator = Generator(
            encode_channels=6, decode_channels=6, code_dim=10, codebook_num=3, codebook_size=64,
            enc_ratios=(2, 3), dec_ratios=(3, 2), enc_strides=(2, 3), dec_strides=(3, 2),
        ).eval()
        embed = generator.quantizer.codebook.layers[0].embed
        with torch.no_grad():
            embed.add_(100.0)
            embed[:, [3, 17, 50]] = 0.01 * torch.arange(10.0).unsqueeze(1)
        return StreamingCodec(generator, generator, 48000, backend=backend)

    x = speech(samples=6 * 60)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        native = tied_codec("native")
        assert native.native_sides == ["encoder", "decoder"]
        for cuts in ([0, x.shape[-1]], list(range(0, x.shape[-1] + 1, 6))):
            native_codes, _ = stream(native, x, cuts)
            eager_codes, _ = stream(tied_codec("eager"), x, cuts)
            assert torch.equal(native_codes, eager_codes)
            assert native_codes[:, 0].eq(3).all()
    finally:
        torch.set_num_threads(before)


def test_a_codec_on_a_gpu_names_no_native_side() -> None:
    """The engine and the TorchScript graphs are CPU code: on a GPU the steps are eager ops, and
    `native_sides` (what README tells users to read) must not claim the engine ran."""
    from utils.runtime.backends import backend_on, streaming_steps

    for backend in ("native", "torch", "eager"):
        assert backend_on(backend, torch.device("cuda")) == "eager"
        assert backend_on(backend, torch.device("cpu")) == backend
    codec = load("vctk_sym")
    steps = streaming_steps(backend_on("native", torch.device("cuda")), codec.encoder, codec.decoder,
                            codec._transmit, codec._receive)  # fmt: skip
    assert steps.native_sides == [] and codec.native_sides == ["encoder", "decoder"]
