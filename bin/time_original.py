"""Time the original AudioDec implementation on this machine, for comparison: its streaming step,
or its trainer's training step.

    python bin/time_original.py --original DIR --autoencoder config/autoencoder/X.yaml \\
        [--vocoder config/vocoder/Y.yaml] [--frame_size 300] [--threads 2] [--seconds 10]
    python bin/time_original.py --original DIR --train_phase stage1|adversarial \\
        --config DIR/config/autoencoder/X.yaml [--batch_size 16] [--batch_length 9600] [--steps 3] \\
        [--warmup 1] [--threads 2]
    python bin/time_original.py --original DIR --train_phase adversarial --config DIR/config/vocoder/Y.yaml \\
        --analyzer_config DIR/config/autoencoder/X.yaml --stats STATS.npy [...]

DIR is a checkout of facebookresearch/AudioDec. Streaming: its streaming generators
(`StreamGenerator`) are built from the config's `generator_params` with random weights (weight norm
removed, denormals flushed, as for ours in bin/benchmark.py) and fed chunk by chunk as its streamer
does: encode = `encode` + `quantize`, decode = `lookup` + `decode`. Training (`--train_phase`): the
`_train_step` of its trainer of the recipe's `train_mode`, with its models, losses and optimizers
built as its codecTrain.py builds them from the config, on random audio of the recipe's batch shape
(as bin/train_benchmark.py times ours): (noisy, clean) pairs for its denoising trainer, and for its
vocoder trainer an analyzer of random weights built from --analyzer_config and the statistics of
--stats. The adversarial phase starts at the config's discriminator step (a vocoder's phases at the
steps above its generator's and discriminator's start steps). Prints one JSON line with the median
(streaming) or mean (training) times.

Only the original's code is imported (both trees have `models/` and `layers/`), so bin/benchmark.py
and bin/train_benchmark.py run this as a subprocess for `--original`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _without_torchaudio() -> None:
    """The original imports torchaudio for a training discriminator only; torchaudio would pull
    another torch build, so inference gets a stand-in that refuses to be used."""
    import types

    if "torchaudio" in sys.modules:
        return

    def spectrogram(*args, **kwargs):
        raise RuntimeError("torchaudio is not installed: bin/time_original.py times inference only")

    functional = types.ModuleType("torchaudio.functional")
    functional.spectrogram = spectrogram
    package = types.ModuleType("torchaudio")
    package.functional = functional
    sys.modules.update({"torchaudio": package, "torchaudio.functional": functional})


def _generators(original: Path, autoencoder: Path, vocoder: Path | None, folder: str) -> tuple:
    import torch
    import yaml

    sys.path.insert(0, str(original))
    _without_torchaudio()
    from models.autoencoder.AudioDec import StreamGenerator as AudioDec
    from models.vocoder.HiFiGAN import StreamGenerator as HiFiGAN

    params = yaml.safe_load(autoencoder.read_text())["generator_params"]
    encoder = AudioDec(**params).eval()
    decoder = encoder
    if vocoder is not None:
        params = dict(yaml.safe_load(vocoder.read_text())["generator_params"])
        stats = Path(folder) / "stats.npy"  # the original insists on a stats file
        np.save(stats, np.stack([np.zeros(params["in_channels"]), np.ones(params["in_channels"])]).astype(np.float32))
        params["stats"] = str(stats)
        decoder = HiFiGAN(**params).eval()
    for model in {id(encoder): encoder, id(decoder): decoder}.values():
        if hasattr(model, "remove_weight_norm"):
            try:
                model.remove_weight_norm()
            except ValueError:  # (built without weight norm)
                pass
    torch.set_flush_denormal(True)
    return encoder, decoder


def _time_training(args: argparse.Namespace) -> dict:
    """Seconds per step of the original trainer's `_train_step` (CPU, fp32), after `warmup` steps."""
    import torch
    import yaml

    sys.path.insert(0, str(args.original))
    _without_torchaudio()
    if "tensorboardX" not in sys.modules:  # its trainer logs through tensorboardX; nothing is logged here
        import types

        class _NoWriter:
            def __init__(self, *args, **kwargs) -> None:
                pass

            def add_scalar(self, *args, **kwargs) -> None:
                pass

        sys.modules["tensorboardX"] = types.SimpleNamespace(SummaryWriter=_NoWriter)
    from tqdm import tqdm

    import losses
    from models.autoencoder.AudioDec import Generator
    from models.vocoder.HiFiGAN import Discriminator
    from models.vocoder.HiFiGAN import Generator as Vocoder

    config = yaml.safe_load(args.config.read_text())
    mode = config.get("train_mode", "autoencoder")
    kind = (config.get("model_type", "symAudioDec"), mode)
    if kind not in (("symAudioDec", "autoencoder"), ("symAudioDec", "denoise"), ("HiFiGAN", "vocoder")):
        raise SystemExit(f"error: {args.config}: only symAudioDec autoencoder and denoise recipes and HiFiGAN "
                         "vocoder recipes are timed here")
    trainer_module = importlib.import_module(f"trainer.{mode}")
    if args.batch_size:
        config["batch_size"] = args.batch_size
    if args.batch_length:
        config.update(batch_length=args.batch_length, adv_batch_length=args.batch_length)
    torch.manual_seed(0)
    if mode == "vocoder":
        if args.analyzer_config is None or args.stats is None:
            raise SystemExit("error: a vocoder recipe is timed with --analyzer_config and --stats")
        analyzer_params = yaml.safe_load(args.analyzer_config.read_text())["generator_params"]
        generator = Vocoder(**{**config["generator_params"], "stats": str(args.stats)})
    else:
        generator = Generator(**config["generator_params"])
    model = {"generator": generator, "discriminator": Discriminator(**config["discriminator_params"])}
    optimizer, scheduler = {}, {}
    for name in model:
        optimizer[name] = getattr(torch.optim, config[f"{name}_optimizer_type"])(
            model[name].parameters(), **config[f"{name}_optimizer_params"])
        scheduler[name] = getattr(torch.optim.lr_scheduler, config.get(f"{name}_scheduler_type", "StepLR"))(
            optimizer=optimizer[name], **config[f"{name}_scheduler_params"])
    if mode == "vocoder":  # as its codecTrain.py adds it, after the optimizers: frozen, never optimized
        model["analyzer"] = Generator(**analyzer_params)
    criterion = {"gen_adv": losses.GeneratorAdversarialLoss(**config["generator_adv_loss_params"]),
                 "dis_adv": losses.DiscriminatorAdversarialLoss(**config["discriminator_adv_loss_params"])}
    for key, use, loss in (("feat_match", "use_feat_match_loss", losses.FeatureMatchLoss),
                           ("mel", "use_mel_loss", losses.MultiMelSpectrogramLoss),
                           ("stft", "use_stft_loss", losses.MultiResolutionSTFTLoss),
                           ("shape", "use_shape_loss", losses.MultiWindowShapeLoss)):
        if config.get(use, False):
            criterion[key] = loss(**config.get(f"{key}_loss_params", {}))
    with tempfile.TemporaryDirectory() as folder:
        config["outdir"] = folder
        trainer = trainer_module.Trainer(steps=0, epochs=0, data_loader={}, model=model, criterion=criterion,
                                         optimizer=optimizer, scheduler=scheduler, config=config,
                                         device=torch.device("cpu"))
        trainer.tqdm = tqdm(disable=True)
        length = int(config["batch_length"])
        if mode == "vocoder":  # its generator and discriminator train at steps above their start steps
            starts = (trainer.generator_start, trainer.discriminator_start)
            trainer.steps = max(starts) + 1 if args.train_phase == "adversarial" else starts[0] + 1
        elif args.train_phase == "adversarial":
            trainer.steps = trainer.discriminator_start
        if args.train_phase == "adversarial":
            length = int(config.get("adv_batch_length") or length)
        batch = 0.1 * torch.randn(int(config["batch_size"]), 1, length, generator=torch.Generator().manual_seed(0))
        if mode == "denoise":  # (noisy, clean)
            batch = (batch + 0.03 * torch.randn(batch.shape, generator=torch.Generator().manual_seed(1)), batch)
        start = trainer.steps
        for _ in range(args.warmup):
            trainer._train_step(batch)
        begin = time.perf_counter()
        for _ in range(args.steps):
            trainer._train_step(batch)
        seconds = (time.perf_counter() - begin) / args.steps
    assert trainer.steps == start + args.warmup + args.steps
    return {"phase": args.train_phase, "batch_size": int(config["batch_size"]), "batch_length": length,
            "steps": args.steps, "seconds_per_step": seconds, "samples_per_second": config["batch_size"] / seconds,
            "threads": args.threads}


MALLOC_CHOICES = ("system", "ours")
MALLOC_HELP = ("the original's allocator: the system's, as it runs by itself (default), or the one ours preloads "
               "(tcmalloc/jemalloc; AUDIODEC_MALLOC)")


def original_environment(choice: str) -> tuple[dict[str, str] | None, str]:
    """The environment to run the original in for `choice` (one of MALLOC_CHOICES), and the name of
    the allocator it gets there."""
    from utils.runtime.cpu_process import current_malloc, environment_without_fast_malloc

    if choice == "system":
        return environment_without_fast_malloc(), "system"
    return None, current_malloc()


def run_in_own_process(original: Path, arguments: list[str], what: str, env: dict[str, str] | None = None) -> dict:
    """This script run on `original` with `arguments` in a process of its own (both trees have
    `models/` and `layers/`), in `env` (default: this process's): its JSON line, or a CodecError with
    its last line of errors."""
    from utils.errors import CodecError

    command = [sys.executable, str(Path(__file__)), "--original", str(original), *arguments]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["no message"]
        raise CodecError(f"timing {what} in {original} failed: {lines[-1]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--original", type=Path, required=True, help="checkout of facebookresearch/AudioDec")
    parser.add_argument("--autoencoder", type=Path, help="streaming: the autoencoder config (YAML)")
    parser.add_argument("--vocoder", type=Path, help="vocoder config (YAML); default: the symmetric decoder")
    parser.add_argument("--frame_size", type=int, default=300, help="samples per chunk (hop multiple)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of audio to stream")
    parser.add_argument("--train_phase", choices=("stage1", "adversarial"),
                        help="time the original trainer's step of this phase instead of streaming")
    parser.add_argument("--config", type=Path, help="training: the recipe (autoencoder, denoise or vocoder)")
    parser.add_argument("--analyzer_config", type=Path, help="training a vocoder: its analyzer's config")
    parser.add_argument("--stats", type=Path, help="training a vocoder: its statistics file")
    parser.add_argument("--batch_size", type=int, help="training: override the config's batch_size")
    parser.add_argument("--batch_length", type=int, help="training: override batch_length and adv_batch_length")
    parser.add_argument("--steps", type=int, default=3, help="training: timed steps")
    parser.add_argument("--warmup", type=int, default=1, help="training: untimed steps first")
    args = parser.parse_args(argv)
    if not (args.original / "models" / "autoencoder" / "AudioDec.py").is_file():
        print(f"error: {args.original} is not a checkout of facebookresearch/AudioDec "
              "(no models/autoencoder/AudioDec.py)", file=sys.stderr)
        return 1
    import torch

    torch.set_num_threads(args.threads)
    if (args.config if args.train_phase else args.autoencoder) is None:
        print("error: give --config with --train_phase, else --autoencoder", file=sys.stderr)
        return 1
    if args.train_phase:
        print(json.dumps(_time_training(args)))
        return 0
    with tempfile.TemporaryDirectory() as folder:
        encoder, decoder = _generators(args.original, args.autoencoder, args.vocoder, folder)
    sample_rate = 48000 if "48000" in args.autoencoder.name else 24000
    chunks = int(args.seconds * sample_rate) // args.frame_size
    x = 0.1 * torch.randn(1, 1, chunks * args.frame_size)
    encode_times, decode_times = [], []
    with torch.no_grad():
        zq = encoder.initial_encoder(8192, "cpu")  # as its streamer starts (receptive_length 8192)
        decoder.initial_decoder(zq)
        for index in range(chunks):
            chunk = x[..., index * args.frame_size:(index + 1) * args.frame_size]
            start = time.perf_counter()
            codes = encoder.quantize(encoder.encode(chunk))
            middle = time.perf_counter()
            decoder.decode(encoder.lookup(codes))
            end = time.perf_counter()
            if index >= 10:  # (warm-up chunks)
                encode_times.append(middle - start)
                decode_times.append(end - middle)
    chunk_seconds = args.frame_size / sample_rate
    encode_ms, decode_ms = 1000 * statistics.median(encode_times), 1000 * statistics.median(decode_times)
    print(json.dumps({
        "encode_ms": encode_ms, "decode_ms": decode_ms,
        "rtf": (encode_ms + decode_ms) / 1000 / chunk_seconds, "frame_size": args.frame_size,
        "threads": args.threads, "chunks": len(encode_times),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
