"""Generator classes by the config's `model_type`."""

from __future__ import annotations

from torch import nn

from models.autoencoder.AudioDec import Generator as AudioDecGenerator
from models.vocoder.HiFiGAN import Generator as HiFiGANGenerator

GENERATORS: dict[str, type[nn.Module]] = {
    "symAudioDec": AudioDecGenerator,
    "symAudioDecUniv": AudioDecGenerator,
    "HiFiGAN": HiFiGANGenerator,
    "UnivNet": HiFiGANGenerator,
}

AUTOENCODER_TYPES = ("symAudioDec", "symAudioDecUniv")
VOCODER_TYPES = ("HiFiGAN", "UnivNet")


def generator_class(model_type: str) -> type[nn.Module]:
    """The generator class a config's `model_type` names."""
    if not isinstance(model_type, str) or model_type not in GENERATORS:  # (a YAML list is not hashable)
        raise ValueError(f"unknown model_type {model_type!r}: use one of {', '.join(GENERATORS)}")
    return GENERATORS[model_type]
