"""Time the original AudioDec implementation's streaming step on this machine, for comparison.

    python bin/time_original.py --original DIR --autoencoder config/autoencoder/X.yaml \\
        [--vocoder config/vocoder/Y.yaml] [--frame_size 300] [--threads 2] [--seconds 10]

DIR is a checkout of facebookresearch/AudioDec. Its streaming generators (`StreamGenerator`) are
built from the config's `generator_params` with random weights (weight norm removed, denormals
flushed, as for ours in bin/benchmark.py) and fed chunk by chunk as its streamer does: encode =
`encode` + `quantize`, decode = `lookup` + `decode`. Prints one JSON line with the median times.

Only the original's code is imported (both trees have `models/` and `layers/`), so bin/benchmark.py
runs this as a subprocess for `--original`.
"""

from __future__ import annotations

import argparse
import json
import statistics
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--original", type=Path, required=True, help="checkout of facebookresearch/AudioDec")
    parser.add_argument("--autoencoder", type=Path, required=True, help="autoencoder config (YAML)")
    parser.add_argument("--vocoder", type=Path, help="vocoder config (YAML); default: the symmetric decoder")
    parser.add_argument("--frame_size", type=int, default=300, help="samples per chunk (hop multiple)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of audio to stream")
    args = parser.parse_args(argv)
    if not (args.original / "models" / "autoencoder" / "AudioDec.py").is_file():
        print(f"error: {args.original} is not a checkout of facebookresearch/AudioDec "
              "(no models/autoencoder/AudioDec.py)", file=sys.stderr)
        return 1
    import torch

    torch.set_num_threads(args.threads)
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
