"""Generator classes by the config's `model_type`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

AUTOENCODER_TYPES = ("symAudioDec", "symAudioDecUniv")
VOCODER_TYPES = ("HiFiGAN", "UnivNet")
MODEL_TYPES = AUTOENCODER_TYPES + VOCODER_TYPES


def check_model_type(model_type: object) -> None:
    """Raise ValueError where a config's `model_type` names no generator class."""
    if not isinstance(model_type, str) or model_type not in MODEL_TYPES:  # (a YAML list is not hashable)
        raise ValueError(f"unknown model_type {model_type!r}: use one of {', '.join(MODEL_TYPES)}")


def generator_class(model_type: str) -> type[nn.Module]:
    """The generator class a config's `model_type` names."""
    check_model_type(model_type)
    # imported here: the classes bring torch, which a config's check (utils/experiment_config.py) does without
    from models.autoencoder.AudioDec import Generator as AudioDecGenerator
    from models.vocoder.HiFiGAN import Generator as HiFiGANGenerator

    return AudioDecGenerator if model_type in AUTOENCODER_TYPES else HiFiGANGenerator
