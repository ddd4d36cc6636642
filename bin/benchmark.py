"""Speed of the streaming codec on CPU: per-chunk encode/decode times, RTF, GFLOP/s, GEMM efficiency.

    python bin/benchmark.py --model vctk_v1 [--root DIR]                       # a registered model
    python bin/benchmark.py --autoencoder config/autoencoder/symAD_vctk_48000_hop300.yaml \\
        [--vocoder config/vocoder/AudioDec_v1_symAD_vctk_48000_hop300_clean.yaml]  # random weights
    common: [--frame_size 300] [--threads 2] [--seconds 10] [--precision fp32|bf16] [--json out.json]

Random weights are made to behave like trained ones: each convolution is rescaled so that its output
keeps a unit-ish RMS on a speech-like signal (residual branches and outputs smaller), the codebooks
are drawn from the encoder's own latents (a few k-means steps per residual stage), the vocoder
statistics are the latents' mean and spread, and denormals are flushed. Without `--vocoder` the
autoencoder's own (symmetric) decoder decodes.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

if __name__ == "__main__":  # before anything allocates: a faster malloc (utils/runtime/cpu_process.py)
    from utils.runtime.cpu_process import use_fast_malloc

    use_fast_malloc()

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

from bin.time_original import MALLOC_CHOICES, MALLOC_HELP, original_environment, run_in_own_process  # noqa: E402
from layers.weight_norm import fold_weight_norm  # noqa: E402
from models.registry import AUTOENCODER_TYPES, VOCODER_TYPES  # noqa: E402
from trainer.options import read_config  # noqa: E402
from utils.audiodec import StreamingCodec  # noqa: E402
from utils.checkpoint import build_generator  # noqa: E402
from utils.cli import run_main  # noqa: E402
from utils.errors import ArgumentParser, CodecError, check_at_least  # noqa: E402
from utils.eval.probe import speech_like_signal  # noqa: E402
from utils.files import check_output_folder, write_text_atomic  # noqa: E402
from utils.live.pipeline import check_frame_size  # noqa: E402
from utils.runtime import native_build  # noqa: E402
from utils.runtime.cpu_process import cpu_name, current_malloc, in_passing_thread  # noqa: E402
from utils.runtime.names import BACKENDS, DEFAULT_BACKEND, PRECISION_NAMES  # noqa: E402

CONVS = (nn.Conv1d, nn.ConvTranspose1d)
RESIDUAL_BRANCH_RMS = 0.5  # the last conv of a residual branch adds to the skip path
OUTPUT_RMS = 0.1  # waveform-level convs (speech-like level before tanh)
WARMUP_CHUNKS = 10  # streamed untimed before the timed pass: the receiver tunes, caches fill
WHOLE_FILE_REPEATS = 3  # timed whole-file passes, after one untimed pass


def speech_like(seconds: float, sample_rate: int, seed: int = 0) -> torch.Tensor:
    """The speech-like probe signal (utils/eval/probe.py) as a model input (1, 1, T)."""
    return torch.from_numpy(speech_like_signal(seconds, sample_rate, seed)).view(1, 1, -1)


def _target_rms(name: str, is_last: bool) -> float:
    if is_last:
        return OUTPUT_RMS
    if name.endswith("conv2") or ".convs2." in name or name.endswith("conv_out"):
        return RESIDUAL_BRANCH_RMS
    return 1.0


@torch.no_grad()
def calibrate(model: nn.Module, run: Callable[[], torch.Tensor]) -> None:
    """Rescale every conv of `model` (in execution order, in one pass) to its target output RMS."""
    names = {module: name for name, module in model.named_modules()}
    convs = [m for m in model.modules() if isinstance(m, CONVS)]
    handles = []

    def rescale(module: nn.Module, _inputs, output: torch.Tensor) -> torch.Tensor:
        gain = _target_rms(names[module], module is convs[-1]) / output.pow(2).mean().sqrt().clamp_min(1e-8)
        module.weight.mul_(gain)
        if module.bias is not None:
            module.bias.mul_(gain)
        return output * gain

    for module in convs:
        handles.append(module.register_forward_hook(rescale))
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def conv_output_rms(model: nn.Module, run: Callable[[], torch.Tensor]) -> list[float]:
    """RMS of every conv output of `model` during `run()` (trained-like activations check)."""
    values: list[float] = []
    handles = [
        m.register_forward_hook(lambda _m, _i, out: values.append(out.pow(2).mean().sqrt().item()))
        for m in model.modules() if isinstance(m, CONVS)
    ]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return values


@torch.no_grad()
def fit_codebooks(encoder: nn.Module, latents: torch.Tensor, iterations: int = 4, seed: int = 0) -> None:
    """Codebooks from the encoder's latent distribution: a few k-means steps per residual stage.

    latents: (N, code_dim). Each stage starts from random latent rows (jittered) and fits the
    residual the previous stages leave.
    """
    generator = torch.Generator().manual_seed(seed)
    residual = latents.clone()
    for layer in encoder.quantizer.codebook.layers:
        size = layer.codebook_size
        rows = torch.randint(0, residual.shape[0], (size,), generator=generator)
        spread = residual.std(0, keepdim=True)
        codebook = residual[rows] + 0.1 * spread * torch.randn(size, residual.shape[1], generator=generator)
        for _ in range(iterations):
            assign = torch.cdist(residual, codebook).argmin(1)
            sums = torch.zeros_like(codebook).index_add_(0, assign, residual)
            counts = torch.bincount(assign, minlength=size).unsqueeze(1)
            codebook = torch.where(counts > 0, sums / counts.clamp_min(1), codebook)
        layer.embed.copy_(codebook.t())
        layer.embed_avg.copy_(codebook.t())
        residual = residual - codebook[torch.cdist(residual, codebook).argmin(1)]


def _build(config_path: str, option: str, model_types: tuple[str, ...]) -> tuple[nn.Module, dict]:
    config = read_config(config_path)
    kind = config.get("model_type")
    if kind not in model_types:
        has = f"model_type {kind!r}" if kind else "no model_type"
        raise CodecError(f"{config_path} has {has}: {option} takes a recipe of model_type {' or '.join(model_types)} "
                         f"(config/{option.lstrip('-')}/...)")
    model = build_generator(config, inference=True)
    fold_weight_norm(model)
    model.eval().requires_grad_(False)
    return model, config


@torch.no_grad()
def random_codec(
    autoencoder_config: str, vocoder_config: str | None = None, seed: int = 0, precision: str = "fp32",
    backend: str = DEFAULT_BACKEND,
) -> tuple[StreamingCodec, dict[str, list[float]]]:
    """A full-size codec with calibrated random weights; also the conv-output RMS per model."""
    torch.manual_seed(seed)
    autoencoder, config = _build(autoencoder_config, "--autoencoder", AUTOENCODER_TYPES)
    sample_rate = int(config.get("sampling_rate", 48000))
    x = speech_like(4.0, sample_rate, seed)
    x = x[..., : x.shape[-1] // autoencoder.hop_length * autoencoder.hop_length]
    calibrate(autoencoder.encoder, lambda: autoencoder.encoder(x))
    calibrate(autoencoder.projector, lambda: autoencoder.projector(autoencoder.encoder(x)))
    latents = autoencoder.projector(autoencoder.encoder(x))
    fit_codebooks(autoencoder, latents.transpose(1, 2).reshape(-1, latents.shape[1]), seed=seed)
    zq = autoencoder.lookup(autoencoder.quantize(latents))
    calibrate(autoencoder.decoder, lambda: autoencoder.decoder(zq))
    rms = {
        "encoder": conv_output_rms(autoencoder.encoder, lambda: autoencoder.encoder(x)),
        "decoder": conv_output_rms(autoencoder.decoder, lambda: autoencoder.decoder(zq)),
    }
    decoder = autoencoder
    if vocoder_config:
        decoder, _ = _build(vocoder_config, "--vocoder", VOCODER_TYPES)
        if getattr(decoder, "norm", False):
            decoder.mean.copy_(zq.mean(dim=(0, 2)))
            decoder.scale.copy_(zq.std(dim=(0, 2)).clamp_min(1e-3))
        calibrate(decoder, lambda: decoder(zq))
        rms["vocoder"] = conv_output_rms(decoder, lambda: decoder(zq))
    else:
        decoder = _SymmetricDecoder(autoencoder)
    codec = StreamingCodec(autoencoder, decoder, sample_rate, name="random", precision=precision, backend=backend)
    return codec, rms


class _SymmetricDecoder(nn.Module):
    """The autoencoder's own decoder seen as a receiver (`decode(latent)`)."""

    def __init__(self, autoencoder: nn.Module) -> None:
        super().__init__()
        self.decoder = autoencoder.decoder
        self.hop_length = autoencoder.hop_length
        self.output_channels = autoencoder.output_channels

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder.step(latent)


def count_conv_flops(model: nn.Module, run: Callable[[], object]) -> float:
    """FLOPs (2 per multiply-add) of every conv in `model` while `run()` executes its offline pass.

    Conv1d: 2 * C_out * C_in / groups * k per output sample; ConvTranspose1d: 2 * C_in * C_out /
    groups * k per input sample; batch included.
    """
    total = 0.0

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        kernel = module.kernel_size[0]
        if isinstance(module, nn.ConvTranspose1d):
            samples = inputs[0].shape[0] * inputs[0].shape[-1]
            macs = module.in_channels * module.out_channels // module.groups * kernel * samples
        else:
            samples = output.shape[0] * output.shape[-1]
            macs = module.out_channels * module.in_channels // module.groups * kernel * samples
        total += 2.0 * macs

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, CONVS)]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return total


def codec_gflops(codec: StreamingCodec) -> tuple[float, float]:
    """(encoder, decoder) GFLOP per second of audio, counted on one second of the offline pass."""
    x = torch.zeros(1, codec.input_channels, codec.sample_rate)
    encoder = codec.encoder
    encode = count_conv_flops(encoder, lambda: encoder.projector(encoder.encoder(x)))
    zq = torch.zeros(1, encoder.projector.project.conv.out_channels if hasattr(encoder.projector.project, "conv")
                     else encoder.projector.project[0].conv.out_channels, codec.sample_rate // codec.hop_length)
    receiver = codec.decoder.decoder if isinstance(codec.decoder, _SymmetricDecoder) else codec.decoder
    decode = count_conv_flops(receiver, lambda: receiver(zq))
    return encode / 1e9, decode / 1e9


def gemm_gflops(dtype: torch.dtype = torch.float32, size: int = 1024, repeats: int = 20) -> float:
    """Measured matmul rate (GFLOP/s) at the current thread count: median of `repeats`."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    times = []
    for index in range(repeats + 3):
        start = time.perf_counter()
        torch.mm(a, b)
        if index >= 3:
            times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


def time_streaming(codec: StreamingCodec, x: torch.Tensor, frame_size: int, warmup_chunks: int = WARMUP_CHUNKS) -> dict:
    """Per-chunk encode and decode times (s) of streaming `x` (1, C, T) in `frame_size` chunks, after
    its first `warmup_chunks` streamed untimed from another state; "warmup": how many were."""
    chunks = [x[..., i:i + frame_size] for i in range(0, x.shape[-1] - frame_size + 1, frame_size)]
    codec.reset(1)
    warmup = chunks[:warmup_chunks]
    for chunk in warmup:
        codec.decode(codec.encode(chunk))
    codec.reset(1, frame_size=frame_size)
    encode_times, decode_times = [], []
    for chunk in chunks:
        start = time.perf_counter()
        codes = codec.encode(chunk)
        middle = time.perf_counter()
        codec.decode(codes)
        encode_times.append(middle - start)
        decode_times.append(time.perf_counter() - middle)
    return {"encode": encode_times, "decode": decode_times, "warmup": len(warmup)}


def time_whole_file(codec: StreamingCodec, x: torch.Tensor, repeats: int = WHOLE_FILE_REPEATS) -> tuple[float, float]:
    """Median seconds of encoding, and of decoding, the whole signal in one call each from a fresh
    state (what `code()` does; the first pass, which tunes the receiver for these lengths, is not timed)."""
    encode_times, decode_times = [], []
    for index in range(repeats + 1):
        codec.reset(x.shape[0])
        start = time.perf_counter()
        codes = codec.encode(x)
        middle = time.perf_counter()
        codec.decode(codes)
        if index:
            encode_times.append(middle - start)
            decode_times.append(time.perf_counter() - middle)
    return statistics.median(encode_times), statistics.median(decode_times)


def time_live(codec: StreamingCodec, x: torch.Tensor, frame_size: int) -> dict:
    """`demoStream.py`'s in-process pipeline (`utils.live.Streamer`, worker_threads "auto") fed `x`
    (1, C, T) in `frame_size` blocks as fast as it takes them, as `demoStream.py --input_file`
    without `--pace` does: seconds from the first block pushed to the last one out (the start-up,
    which tunes, traces and times the two sides, is not timed), and the layout "auto" chose. Like that
    command without dumps, it keeps neither the input nor the decoded blocks."""
    from utils import live as stream

    data = StreamingCodec.audio_from_streams(x)
    streamer = stream.Streamer(codec, codec, frame_size, data.shape[1], max_latency=0, keep_input=False,
                               keep_output=False)
    streamer.start()
    try:
        start = time.perf_counter()
        stream.push_unpaced(streamer, data)
        seconds = time.perf_counter() - start
    finally:
        streamer.close()
    coder = streamer.workers == [streamer.coder]
    return {"seconds": seconds, "layout": "coder" if coder else "overlap", "threads": streamer.workers[0].threads}


def cpu_label() -> str:
    """The CPU's model name, torch's instruction set and the native engine's build, e.g.
    "AMD EPYC (torch AVX2, engine avx2)"."""
    name = cpu_name()
    build = native_build.build()
    engine = "no engine"
    if build:
        engine = f"engine {build.isa}" + ("" if build.threads == "openmp" else f", {build.threads}")
    return f"{name} (torch {torch.backends.cpu.get_cpu_capability()}, {engine})"


MAX_SECONDS = 3600  # an hour of audio is held in memory, with its codes and output
ORIGINAL_SECONDS = 3.0  # the original's medians settle within a few seconds, and it is many times slower


def time_original(original: Path, args: argparse.Namespace) -> dict:
    """The original implementation's streaming step on the same machine (bin/time_original.py, in
    its own process: both trees have models/ and layers/), on up to ORIGINAL_SECONDS of audio."""
    arguments = [
        "--autoencoder", args.autoencoder, "--frame_size", str(args.frame_size), "--threads", str(args.threads),
        "--seconds", str(min(args.seconds, ORIGINAL_SECONDS)), *(["--vocoder", args.vocoder] if args.vocoder else []),
    ]
    environment, malloc = original_environment(args.original_malloc)
    return {**run_in_own_process(original, arguments, "the original", environment), "malloc": malloc}


def benchmark_audio(codec: StreamingCodec, frame_size: int, seconds: float) -> torch.Tensor:
    """`seconds` of speech-like audio (1, C, T), cut to whole `frame_size`-sample chunks."""
    if frame_size % codec.hop_length:
        raise ValueError(f"frame_size {frame_size} is not a multiple of the hop ({codec.hop_length})")
    if seconds * codec.sample_rate < frame_size:
        raise CodecError(f"--seconds {seconds} holds no chunk of {frame_size} samples at {codec.sample_rate} Hz: "
                         f"give {frame_size / codec.sample_rate:g} or more")
    x = speech_like(seconds, codec.sample_rate, seed=1).repeat(1, codec.input_channels, 1)
    return x[..., : x.shape[-1] // frame_size * frame_size]


def add_live(result: dict, codec: StreamingCodec, x: torch.Tensor, frame_size: int) -> None:
    """`time_live`'s figures into `result`, on the audio `x` (1, C, T) that `benchmark` timed."""
    pipeline = time_live(codec, x, frame_size)
    result["rtf_live"] = pipeline["seconds"] / result["seconds"]
    result["live_layout"], result["live_threads"] = pipeline["layout"], pipeline["threads"]


def benchmark(codec: StreamingCodec, x: torch.Tensor, frame_size: int, whole_file: bool = True) -> dict:
    """All figures for `codec` but the live pipeline's, on the audio `x` (1, C, T) in `frame_size`-sample
    chunks."""
    gemm_before = gemm_gflops()
    encode_gflops, decode_gflops = codec_gflops(codec)
    times = time_streaming(codec, x, frame_size)
    chunk_seconds = frame_size / codec.sample_rate
    enc_median, dec_median = statistics.median(times["encode"]), statistics.median(times["decode"])
    result = {
        "model": codec.name,
        "precision": codec.precision,
        "backend": codec.backend,
        "native_sides": list(codec.native_sides),  # what the native engine runs (backend "native")
        "threads": torch.get_num_threads(),
        "cpu": cpu_label(),
        "malloc": current_malloc(),
        "frame_size": frame_size,
        "seconds": x.shape[-1] / codec.sample_rate,
        "enc_median_ms": enc_median * 1e3,
        "enc_p95_ms": _p95(times["encode"]) * 1e3,
        "dec_median_ms": dec_median * 1e3,
        "dec_p95_ms": _p95(times["decode"]) * 1e3,
        "rtf_encode": enc_median / chunk_seconds,
        "rtf_decode": dec_median / chunk_seconds,
        "rtf_total": (enc_median + dec_median) / chunk_seconds,
        "warmup_chunks": times["warmup"],  # streamed untimed first
        "timed_chunks": len(times["encode"]),
        "gflop_per_audio_second_encode": encode_gflops,
        "gflop_per_audio_second_decode": decode_gflops,
    }
    if whole_file:
        encode_seconds, decode_seconds = time_whole_file(codec, x)
        result["rtf_whole_file_encode"] = encode_seconds / result["seconds"]
        result["rtf_whole_file_decode"] = decode_seconds / result["seconds"]
        result["whole_file_runs"] = WHOLE_FILE_REPEATS  # medians of these, after one untimed run
        result["rtf_whole_file"] = result["rtf_whole_file_encode"] + result["rtf_whole_file_decode"]
    if codec.precision != "fp32":
        result["snr_vs_fp32_db"] = precision_snr(codec, x)
    # The machine's rate: the better of a measurement before and one after the timings (a shared VM's
    # speed drifts; one slow moment at the start would inflate every fraction).
    gemm = result["gemm_gflops"] = max(gemm_before, gemm_gflops())
    result["machine_fraction_encode"] = encode_gflops / result["rtf_encode"] / gemm
    result["machine_fraction_decode"] = decode_gflops / result["rtf_decode"] / gemm
    if whole_file:
        result["machine_fraction_whole_file_encode"] = encode_gflops / result["rtf_whole_file_encode"] / gemm
        result["machine_fraction_whole_file_decode"] = decode_gflops / result["rtf_whole_file_decode"] / gemm
    return result


def precision_snr(codec: StreamingCodec, x: torch.Tensor) -> float:
    """SNR in dB of `codec`'s reduced-precision receiver against the same receiver in fp32 (a copy),
    decoding the same codes of `x`: what the precision costs, beside what it saves."""
    reference = StreamingCodec(
        codec.encoder, copy.deepcopy(codec.decoder), codec.sample_rate, precision="fp32", backend=codec.backend,
        output_delay=codec.output_delay,
    )
    codes, y = codec.code(x)
    y32 = reference.decode_signal(codes, y.shape[-1])
    return float(10 * torch.log10(y32.pow(2).sum() / (y - y32).pow(2).sum().clamp_min(1e-30)))


def format_report(result: dict) -> str:
    lines = [
        f"model {result['model']}  precision {result['precision']}  backend {result.get('backend', 'torch')}"
        + (f" ({'+'.join(result['native_sides'])} native)" if result.get("native_sides") else "") + "  "
        f"threads {result['threads']}  malloc {result.get('malloc', '?')}  "
        f"chunk {result['frame_size']}  audio {result['seconds']:.1f} s",
        f"CPU: {result.get('cpu', '?')}  measured fp32 GEMM rate: {result['gemm_gflops']:.0f} GFLOP/s",
    ]
    for part, key in (("encode", "enc"), ("decode", "dec")):
        lines.append(
            f"{part}: median {result[f'{key}_median_ms']:.2f} ms  p95 {result[f'{key}_p95_ms']:.2f} ms  "
            f"RTF {result[f'rtf_{part}']:.3f}  {result[f'gflop_per_audio_second_{part}']:.1f} GFLOP per audio "
            f"second  {100 * result[f'machine_fraction_{part}']:.0f}% of the GEMM rate"
        )
    lines.append(f"streaming RTF total: {result['rtf_total']:.3f}")
    if "snr_vs_fp32_db" in result:
        lines.append(f"{result['precision']} receiver against fp32, same codes: SNR {result['snr_vs_fp32_db']:.1f} dB")
    if "original" in result:
        original = result["original"]
        lines.append(
            f"original implementation, same chunks and threads: encode {original['encode_ms']:.2f} ms  decode "
            f"{original['decode_ms']:.2f} ms  streaming RTF {original['rtf']:.3f}  "
            f"({original['rtf'] / result['rtf_total']:.1f}x ours)  malloc {original['malloc']}"
        )
    if "rtf_live" in result:
        threads = result["live_threads"]
        layout = (f"one coder thread with {threads} intra-op threads" if result["live_layout"] == "coder" else
                  f"encoder and decoder threads overlapping, {threads} intra-op thread(s) each")
        lines.append(f"live pipeline RTF: {result['rtf_live']:.3f}  (demoStream.py's, unpaced: {layout})")
    if "rtf_whole_file" in result:
        lines.append(
            f"whole-file RTF: {result['rtf_whole_file']:.3f}  (encode {result['rtf_whole_file_encode']:.3f}, "
            f"{100 * result['machine_fraction_whole_file_encode']:.0f}% of the GEMM rate; decode "
            f"{result['rtf_whole_file_decode']:.3f}, {100 * result['machine_fraction_whole_file_decode']:.0f}%)"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="registered model name (see demoFile.py --list-models)")
    source.add_argument("--autoencoder", help="autoencoder config (YAML): full-size random weights")
    parser.add_argument("--root",
                        help="folder holding exp/ for --model (default: the current folder, then this toolkit's)")
    parser.add_argument("--vocoder", help="vocoder config (YAML) used as decoder with --autoencoder")
    parser.add_argument("--frame_size", type=int, default=300, help="samples per streaming chunk (hop multiple)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of audio to stream (default 10)")
    parser.add_argument("--precision", choices=PRECISION_NAMES, default="fp32",
                        help="the receiver's weights in the engine (bf16, int8: fewer bytes per step)")
    parser.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND,
                        help="native (default: every released model's encoder and decoder in the compiled "
                        "engine, anything else as torch), torch (TorchScript graphs per chunk size), or eager")
    parser.add_argument("--no-whole-file", action="store_true", help="skip the whole-file timing")
    parser.add_argument("--live", action="store_true",
                        help="also time demoStream.py's pipeline (encoder and decoder threads) on the same audio")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    parser.add_argument("--original", type=Path,
                        help="a checkout of facebookresearch/AudioDec: also time its streaming step on the same "
                        "config (with --autoencoder), chunks and threads")
    parser.add_argument("--original_malloc", choices=MALLOC_CHOICES, default="system", help=MALLOC_HELP)
    args = parser.parse_args(argv)
    if args.vocoder and not args.autoencoder:
        parser.error("--vocoder goes with --autoencoder")
    if args.original and not args.autoencoder:
        parser.error("--original goes with --autoencoder")
    check_at_least("threads", args.threads, 1)
    if not 0 < args.seconds <= MAX_SECONDS:  # also NaN and infinity
        raise CodecError(f"--seconds {args.seconds}: give seconds of audio above 0, at most {MAX_SECONDS}")
    if args.json:
        check_output_folder(args.json)  # before the timings, not after them
    return args


def measure(args: argparse.Namespace) -> tuple[StreamingCodec, torch.Tensor, dict]:
    """The codec `args` name (loaded, or made with random weights), the audio it is timed on, and its
    figures but the live ones."""
    if args.model:
        codec = StreamingCodec.from_name(args.model, root=args.root, precision=args.precision, backend=args.backend)
    else:
        codec, rms = random_codec(
            args.autoencoder, args.vocoder, seed=args.seed, precision=args.precision, backend=args.backend
        )
        for part, values in rms.items():
            logging.info(
                "%s conv output RMS: min %.3f  median %.3f  max %.3f (%d convs)",
                part, min(values), statistics.median(values), max(values), len(values),
            )
    check_frame_size(args.frame_size, codec.hop_length)
    x = benchmark_audio(codec, args.frame_size, args.seconds)
    return codec, x, benchmark(codec, x, args.frame_size, whole_file=not args.no_whole_file)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # threads started from here on inherit it
    # All but the live pipeline runs in a thread that ends, as demoStream.py loads and tunes: the
    # pipeline's workers then meet no idle OpenMP pool of this thread's (utils/runtime/cpu_process.py).
    codec, x, result = in_passing_thread(measure, args)
    if args.live:
        add_live(result, codec, x, args.frame_size)
    if args.original:
        result["original"] = time_original(args.original, args)
    print(format_report(result))
    if args.json:
        write_text_atomic(args.json, json.dumps({k: v for k, v in result.items() if not (
            isinstance(v, float) and not math.isfinite(v))}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    run_main(main)
