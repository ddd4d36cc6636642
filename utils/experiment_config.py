"""The training config saved beside a checkpoint (`config.yml`): found, read and checked for what the
loaders use, without torch, so that a command that only reads it (`codec.py info`) answers at once."""

from __future__ import annotations

import os
from typing import Any

import yaml

from models.registry import AUTOENCODER_TYPES, check_model_type
from utils.errors import CodecError
from utils.files import read_failure

MAX_OUTPUT_DELAY = 480_000  # samples; a model's lag is a fraction of a second


def config_path_for(checkpoint: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "config.yml")


def require_checkpoint_file(checkpoint: str) -> None:
    if not os.path.isfile(checkpoint):
        raise CodecError(
            f"checkpoint {checkpoint} not found: check the path (released models: python -m utils.download NAME)"
        )


def load_config(checkpoint: str) -> dict[str, Any]:
    """The training config saved beside `checkpoint`."""
    require_checkpoint_file(checkpoint)
    path = config_path_for(checkpoint)
    if not os.path.isfile(path):
        raise CodecError(
            f"no config.yml beside {checkpoint}: copy the experiment folder whole (config.yml + checkpoint)"
        )
    try:
        handle = open(path)
    except OSError as error:  # no read permission, say
        raise read_failure(path, error) from None
    with handle:
        try:
            config = yaml.safe_load(handle)
        except yaml.YAMLError as error:
            reason = error.__class__.__name__
            raise CodecError(f"{path} is not valid YAML ({reason}): restore it from the experiment") from None
    for key in ("model_type", "generator_params"):
        if not isinstance(config, dict) or key not in config:
            raise CodecError(f"{path} has no '{key}': it is not an AudioDec training config")
    _check_inference_keys(config, path)
    return config


def _check_inference_keys(config: dict[str, Any], path: str) -> None:
    """Raise CodecError, naming `path`, where a value the loaders read is not one they can use."""
    model_type = config["model_type"]
    try:
        check_model_type(model_type)
    except ValueError as error:
        raise CodecError(f"{path}: {error}: fix the config") from None
    try:
        output_delay(config)
    except CodecError as error:
        raise CodecError(f"{path}: {error}") from None
    if "sampling_rate" not in config:
        if model_type in AUTOENCODER_TYPES:  # a vocoder may leave it to its encoder's
            raise CodecError(f"{path} has no 'sampling_rate': it is not an AudioDec training config")
        return
    rate = config["sampling_rate"]
    whole = isinstance(rate, int) or (isinstance(rate, float) and rate.is_integer())
    if isinstance(rate, bool) or not whole or rate <= 0:
        raise CodecError(f"{path}: sampling_rate {rate!r} is not a positive whole number of Hz: fix the config")


def output_delay(config: dict[str, Any]) -> int:
    """The config's ``output_delay``: samples by which the model's output lags its input (0 if unset)."""
    value = config.get("output_delay") or 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CodecError(f"output_delay {value!r} is not a whole number of samples >= 0: fix the config")
    if value > MAX_OUTPUT_DELAY:  # whole-file coding pads this many samples per stream
        raise CodecError(f"output_delay {value} is more than {MAX_OUTPUT_DELAY} samples (10 s at 48 kHz): "
                         "fix the config")
    return value
