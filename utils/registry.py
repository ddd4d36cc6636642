"""Model names -> encoder and decoder checkpoints (the original's names, plus ours).

Paths are relative to a model root: a folder holding `exp/` (as the original's demos, run from
the project folder). `resolve` looks in the given root alone; without one, in the current folder,
else this toolkit's folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from utils.errors import CodecError

TOOLKIT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class ModelEntry:
    """A registered codec: which checkpoint encodes, which decodes, at what sample rate.

    `sample_rate` is what --list-models shows; it must be the encoder config's `sampling_rate`
    (`StreamingCodec.from_name` refuses the model otherwise). An entry neither `released` nor `shipped`
    is a user's own model, which they train or copy into place.
    """

    name: str
    sample_rate: int
    encoder: str
    decoder: str
    description: str
    released: bool = True  # in the original's release archive (utils/download.py fetches it)
    shipped: bool = False  # its checkpoints are committed to this toolkit's exp/


def _ckpt(kind: str, tag: str, steps: int) -> str:
    return os.path.join("exp", kind, tag, f"checkpoint-{steps}steps.pkl")


def _official(name: str, rate: int, enc: tuple[str, str, int], dec: tuple[str, str, int], text: str) -> ModelEntry:
    return ModelEntry(name, rate, _ckpt(*enc), _ckpt(*dec), text)


_AE = "autoencoder"
_VCTK = "symAD_vctk_48000_hop300"
_LIBRI = "symAD_libritts_24000_hop300"
_UNIV = "symADuniv_vctk_48000_hop300"

MODELS: dict[str, ModelEntry] = {
    entry.name: entry
    for entry in (
        _official("libritts_v1", 24000, (_AE, _LIBRI, 500000),
                  ("vocoder", "AudioDec_v1_symAD_libritts_24000_hop300_clean", 500000),
                  "LibriTTS 24 kHz, AudioDec encoder + HiFi-GAN v1 vocoder"),
        _official("libritts_sym", 24000, (_AE, _LIBRI, 500000), (_AE, _LIBRI, 1000000),
                  "LibriTTS 24 kHz, symmetric AudioDec"),
        _official("vctk_v0", 48000, (_AE, _VCTK, 200000),
                  ("vocoder", "AudioDec_v0_symAD_vctk_48000_hop300_clean", 500000),
                  "VCTK 48 kHz, HiFi-GAN v0 (multi-receptive-field) vocoder"),
        _official("vctk_v1", 48000, (_AE, _VCTK, 200000),
                  ("vocoder", "AudioDec_v1_symAD_vctk_48000_hop300_clean", 500000),
                  "VCTK 48 kHz, HiFi-GAN v1 (grouped) vocoder"),
        _official("vctk_v2", 48000, (_AE, _VCTK, 200000),
                  ("vocoder", "AudioDec_v2_symAD_vctk_48000_hop300_clean", 500000),
                  "VCTK 48 kHz, HiFi-GAN v2 (small grouped) vocoder"),
        _official("vctk_sym", 48000, (_AE, _VCTK, 200000), (_AE, _VCTK, 700000),
                  "VCTK 48 kHz, symmetric AudioDec"),
        _official("vctk_denoise", 48000, ("denoise", _VCTK, 200000),
                  ("vocoder", "AudioDec_v1_symAD_vctk_48000_hop300_clean", 500000),
                  "VCTK 48 kHz, denoising encoder + HiFi-GAN v1 vocoder"),
        _official("vctk_univ", 48000, (_AE, _UNIV, 500000),
                  ("vocoder", "AudioDec_v3_symADuniv_vctk_48000_hop300_clean", 500000),
                  "VCTK 48 kHz, UnivNet-discriminator encoder + v3 vocoder"),
        _official("vctk_univ_sym", 48000, (_AE, _UNIV, 500000), (_AE, _UNIV, 1000000),
                  "VCTK 48 kHz, symmetric AudioDec trained with UnivNet discriminators"),
        _official("vctk_activate_sym", 48000, (_AE, "symAAD_vctk_48000_hop300", 200000),
                  (_AE, "symAAD_vctk_48000_hop300", 700000),
                  "VCTK 48 kHz, symmetric AudioDec with activations and weight norm"),
        ModelEntry("demo48k", 48000, _ckpt(_AE, "demo48k", 27547), _ckpt(_AE, "demo48k", 27547),
                   "ours: 48 kHz symmetric, half width, trained on 2 CPU cores on the demo corpus: 14500 "
                   "metric-loss steps, 13047 with light discriminators, the last 10250 with waveform losses at "
                   "its output delay (exp/README.md)", released=False, shipped=True),
        ModelEntry("demo48k_stage1", 48000, _ckpt(_AE, "demo48k_stage1", 14500),
                   _ckpt(_AE, "demo48k_stage1", 14500),
                   "ours: demo48k before its adversarial fine-tuning (14500 metric-loss steps)", released=False,
                   shipped=True),
        _official("vctk_c16h320_sym", 48000, (_AE, "symAD_c16_vctk_48000_hop320", 500000),
                  (_AE, "symAD_c16_vctk_48000_hop320", 1000000),
                  "VCTK 48 kHz, 16 codebooks, hop 320, symmetric"),
    )
}


def get_entry(name: str) -> ModelEntry:
    """The registered model `name`, or a one-line error listing the names."""
    if name not in MODELS:
        raise CodecError(f"unknown model '{name}': choose one of {', '.join(sorted(MODELS))} (or --list-models)")
    return MODELS[name]


def search_roots(root: str | None = None) -> list[str]:
    """The folders a model is looked up in: `root` alone when given, else the current folder, then the toolkit."""
    return [root] if root else list(dict.fromkeys([os.getcwd(), TOOLKIT_ROOT]))


def installed_root(entry: ModelEntry, root: str | None = None) -> str | None:
    """The first search root holding both of `entry`'s checkpoints, or None."""
    for folder in search_roots(root):
        if all(os.path.isfile(os.path.join(folder, path)) for path in (entry.encoder, entry.decoder)):
            return folder
    return None


def resolve(entry: ModelEntry, root: str | None = None) -> tuple[str, str]:
    """Absolute encoder and decoder checkpoint paths of `entry`."""
    folder = installed_root(entry, root)
    if folder is not None:
        return os.path.join(folder, entry.encoder), os.path.join(folder, entry.decoder)
    roots = search_roots(root)
    missing = entry.encoder if not os.path.isfile(os.path.join(roots[0], entry.encoder)) else entry.decoder
    raise CodecError(
        f"model '{entry.name}' is not installed: {missing} not found under {' or '.join(roots)}; "
        f"{install_hint(entry, root)}, or pass --root to where it is"
    )


def install_hint(entry: ModelEntry, root: str | None = None) -> str:
    """How to get `entry`'s checkpoints, as a clause of a message: download a released model, restore a
    shipped one from git, train (or copy into place) a user's own."""
    if entry.released:
        fetch = f"python -m utils.download {entry.name}" + (f" --root {root}" if root else "")
        return f"get it with `{fetch}`"
    if entry.shipped:
        return "restore its exp/ folder from this toolkit's git"
    return "train it (codecTrain.py writes its checkpoints under exp/) or copy them there"
