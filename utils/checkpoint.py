"""Checkpoints in the original AudioDec format.

A checkpoint is `torch.save` of `{"model": {"generator": ..., "discriminator": ...}, "optimizer":
..., "scheduler": ..., "steps": N, "epochs": E}` with `config.yml` beside it. Generator state dicts
use the original key names (old-style `weight_g`/`weight_v`, `pad_buffer`, codebook buffers).
"""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any

import torch
from torch import nn

from layers.weight_norm import fold_weight_norm, from_original_keys, has_weight_norm, to_original_keys
from models.registry import AUTOENCODER_TYPES, generator_class
from utils.errors import CodecError, built_from_config
from utils.experiment_config import load_config, require_checkpoint_file
from utils.files import read_failure, write_bytes_atomic

NOT_A_CHECKPOINT = "it is not an AudioDec checkpoint (give one that codecTrain.py or the original saved)"


def read_checkpoint(checkpoint: str) -> dict[str, Any]:
    """`torch.load` a checkpoint safely (weights only), with a clear error for a bad file."""
    require_checkpoint_file(checkpoint)
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except OSError as error:  # no read permission, say: not a damaged file
        raise read_failure(checkpoint, error) from None
    except Exception as error:  # torch raises many types for a damaged file
        reason = error.__class__.__name__
        raise CodecError(
            f"cannot read checkpoint {checkpoint} ({reason}): the file is damaged or not a checkpoint"
        ) from None
    model = state.get("model") if isinstance(state, dict) else None
    if not isinstance(model, dict) or "generator" not in model:
        raise CodecError(f"{checkpoint} holds no model.generator: {NOT_A_CHECKPOINT}")
    generator = model["generator"]
    if not isinstance(generator, dict):
        raise CodecError(f"{checkpoint}: model.generator is not a state dict ({type(generator).__name__}): "
                         f"{NOT_A_CHECKPOINT}")
    for name, tensor in generator.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise CodecError(f"{checkpoint}: model.generator[{name!r}] is not a tensor ({type(tensor).__name__}): "
                             f"{NOT_A_CHECKPOINT}")
    problem = integer_weights(model)
    if problem is not None:
        raise CodecError(f"checkpoint {checkpoint} {problem}; use the checkpoint as training saved it")
    check_finite_weights(checkpoint, generator)
    return state


# The integer buffers these models hold by design: batch norm's step counter (`projector: conv1d_bn`).
INTEGER_BUFFERS = ("num_batches_tracked",)


def integer_weights(models: dict[str, Any]) -> str | None:
    """What is wrong with the first tensor of a checkpoint's models (``model.generator``, and
    ``model.discriminator`` where present) that is not floating point, or None. Every parameter and
    buffer of these models is (weights, codebooks, statistics, padding) but the counters named in
    INTEGER_BUFFERS, so an integer one was converted or written wrongly, and loading would silently
    cast it to the integers it holds."""
    for part in ("generator", "discriminator"):
        state_dict = models.get(part)
        for name, tensor in (state_dict.items() if isinstance(state_dict, dict) else ()):
            if (isinstance(tensor, torch.Tensor) and not tensor.is_floating_point()
                    and str(name).rpartition(".")[2] not in INTEGER_BUFFERS):
                return (f"stores model.{part} {name} as {tensor.dtype}, where the model's weights are floating "
                        "point: the file was converted or written wrongly")
    return None


def check_finite_weights(checkpoint: str, state_dict: dict[str, Any]) -> None:
    """Raise CodecError at the first floating tensor of `state_dict` holding NaN or infinity: such a
    generator codes every input to the same codes and decodes them to full-scale noise or silence."""
    for name, tensor in state_dict.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            finite = torch.isfinite(tensor)
            if not finite.all():
                value = tensor[~finite].flatten()[0].item()
                raise CodecError(
                    f"checkpoint {checkpoint} has non-finite weights ({value} in {name}): its training diverged "
                    "or the file is damaged; use an earlier checkpoint"
                )


def build_generator(config: dict[str, Any], inference: bool = True) -> nn.Module:
    """The generator a config describes. For inference the vocoder statistics come from the checkpoint."""
    for key in ("model_type", "generator_params"):
        if key not in config:
            raise CodecError(f"the config has no '{key}': it is not an AudioDec recipe")
    params = config["generator_params"]  # built_from_config refuses one that is not a mapping
    model_type = config["model_type"]
    if inference and isinstance(params, dict) and "stats" in params:
        params = {**params, "load_stats": False}
    try:
        cls = generator_class(model_type)
    except ValueError as error:
        raise CodecError(f"{error}: fix the config") from None
    return built_from_config(cls, "generator_params", params, name=model_type)


def load_state_strictly(
    model: nn.Module, state_dict: dict[str, torch.Tensor], what: str = "checkpoint does not fit its config",
    fix: str = "",
) -> None:
    """``model.load_state_dict`` with nothing missing, extra or of another shape; else a CodecError:
    ``what``, which tensors, then ``fix`` (torch's own error is a multi-line traceback)."""
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as error:
        shapes = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
        detail = f"{len(shapes)} tensor(s) of another shape (e.g. {shapes[0] if shapes else error})"
    else:
        if not (missing or unexpected):
            return
        parts = [f"{len(keys)} {kind} keys (e.g. {', '.join(keys[:2])})"
                 for kind, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        detail = ", ".join(parts)
    raise CodecError(f"{what}: {detail}{': ' + fix if fix else ''}")


def load_generator_state(
    model: nn.Module, state_dict: dict[str, torch.Tensor], what: str = "checkpoint does not fit its config",
    fix: str = "",
) -> None:
    """Load a generator state dict in the original spelling (strict: see :func:`load_state_strictly`)."""
    if has_weight_norm(model):
        state_dict = from_original_keys(state_dict)
    load_state_strictly(model, state_dict, what, fix)


def generator_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The generator's state dict in the original spelling (what `save_checkpoint` writes)."""
    return to_original_keys(model.state_dict())


def load_generator(checkpoint: str, inference: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """Build and load the generator of `checkpoint`; for inference: eval mode, weight norm folded."""
    config = load_config(checkpoint)
    model = build_generator(config, inference=inference)
    load_generator_state(model, read_checkpoint(checkpoint)["model"]["generator"])
    if inference:
        fold_weight_norm(model)
        model.eval()
        model.requires_grad_(False)
    return model, config


def check_hop_pair(encoder_hop: int, decoder_hop: int, pair: str) -> None:
    """Raise CodecError unless a decoder (or vocoder) makes as many samples per frame as its encoder
    codes: each frame would otherwise stand for another stretch of audio. ``pair`` names the two."""
    if int(encoder_hop) != int(decoder_hop):
        raise CodecError(f"encoder hop {encoder_hop} and decoder hop {decoder_hop} differ ({pair}): pick a matching "
                         "pair (a vocoder's upsample_scales must multiply to its encoder's hop)")


def check_codec_pair(
    encoder: str, encoder_config: dict[str, Any], decoder: str, decoder_config: dict[str, Any],
    hops: tuple[int, int] | None = None,
) -> None:
    """Raise CodecError unless the decoder checkpoint takes what the encoder checkpoint gives: audio at
    the same rate, latents of the same number of channels and, with ``hops`` (the built models'
    ``hop_length``: encoder, decoder), frames of the same number of samples."""
    rate = int(encoder_config["sampling_rate"])
    decoder_rate = int(decoder_config.get("sampling_rate", rate))
    if decoder_rate != rate:
        raise CodecError(f"the encoder codes {rate} Hz audio but the decoder makes {decoder_rate} Hz "
                         f"({encoder}, {decoder}): pick a matching pair")
    latent = encoder_config["generator_params"].get("code_dim")
    params = decoder_config["generator_params"]
    taken = params.get("code_dim" if decoder_config["model_type"] in AUTOENCODER_TYPES else "in_channels")
    if latent is not None and taken is not None and int(latent) != int(taken):
        raise CodecError(f"the encoder gives latents of {latent} channels but the decoder takes {taken} "
                         f"({encoder}, {decoder}): pick a matching pair")
    if hops is not None:
        check_hop_pair(*hops, f"{encoder}, {decoder}")


def load_autoencoder(
    checkpoint: str, role: str = "encoder", inference: bool = True
) -> tuple[nn.Module, dict[str, Any]]:
    """`load_generator` for a checkpoint that must hold an AudioDec autoencoder (what encodes: a
    codec's encoder, a vocoder's analyzer); `role` names it in the error otherwise."""
    model, config = load_generator(checkpoint, inference=inference)
    if config["model_type"] not in AUTOENCODER_TYPES:
        raise CodecError(
            f"{role} {checkpoint} is a {config['model_type']} model, not an AudioDec autoencoder: "
            f"give an autoencoder checkpoint as the {role}"
        )
    return model, config


def state_hash(*models: nn.Module) -> bytes:
    """First 8 bytes of SHA-256 over the models' tensors (names and values): identifies weights."""
    digest = hashlib.sha256()
    for model in models:
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.digest()[:8]


STORAGE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CODEBOOK_STATISTICS = ("cluster_size", "embed_avg")  # an EMA codebook's buffers beside its `embed`


def compact_generator_state(
    state_dict: dict[str, torch.Tensor], dtype: torch.dtype, reset_codebook_statistics: bool
) -> dict[str, torch.Tensor]:
    """A generator state dict (original key names) for distribution: every floating tensor stored as
    `dtype`, which `load_state_dict` casts back to the model's float32 on loading, in the original's
    code as in ours. With `reset_codebook_statistics`, each EMA codebook's statistics are stored in
    the one state that costs no bytes of their own: every count 1 (`cluster_size`) and every sum the
    code itself (`embed_avg` shares `embed`'s storage), a consistent state, since embed = embed_avg /
    smoothed count; inference reads only `embed`, and training re-estimates the statistics within
    tens of steps (EMA decay 0.8 forgets a step in about 20)."""
    compact = {name: tensor.to(dtype) if tensor.is_floating_point() else tensor for name, tensor in state_dict.items()}
    if reset_codebook_statistics:
        prefixes = [name[: -len("embed")] for name in compact if name.endswith(".embed")]
        for prefix in prefixes:
            if all(f"{prefix}{buffer}" in compact for buffer in CODEBOOK_STATISTICS):
                compact[f"{prefix}cluster_size"] = torch.ones_like(compact[f"{prefix}cluster_size"])
                compact[f"{prefix}embed_avg"] = compact[f"{prefix}embed"]
    return compact


def atomic_torch_save(obj: Any, path: str) -> None:
    """`torch.save` to a temp file in the target folder, then rename: never a half-written file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes_atomic(path, buffer.getvalue(), suffix=".pkl")
