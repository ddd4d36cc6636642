"""Vocoder training on the quantized latent of a frozen AudioDec encoder (the "analyzer")."""

from __future__ import annotations

import logging

import torch

from trainer.analysis import load_analyzer, quantized_latent
from trainer.base import GANTrainer, LossTracker

logger = logging.getLogger(__name__)


class VocoderTrainer(GANTrainer):
    """``train_mode: vocoder``.

    The analyzer is the AudioDec checkpoint named by the config's ``analyzer``, always in eval mode
    (no EMA updates). As in the original, the generator trains at steps ``> generator_train_start_steps``
    and the discriminator at steps ``> discriminator_train_start_steps`` (both default 0).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.analyzer = load_analyzer(
            self.config.get("analyzer", ""), self.config["sampling_rate"],
            (self.config.get("generator_params") or {}).get("in_channels"), getattr(self.generator, "hop_length", None),
        ).to(self.device)
        self.generator_start = int(self.config.get("generator_train_start_steps", 0))
        self.discriminator_start = int(self.config.get("discriminator_train_start_steps", 0))

    def generator_active(self) -> bool:
        return self.steps > self.generator_start

    def discriminator_active(self) -> bool:
        return self.steps > self.discriminator_start

    def generate(self, inputs: torch.Tensor, losses: LossTracker, prefix: str, training: bool) -> tuple:
        # The frozen analyzer codes in float32 at any precision: the vocoder learns from the codes
        # inference sends, and bf16 would pick other codes for many frames.
        with torch.autocast(self.device.type, enabled=False):
            latent = quantized_latent(self.analyzer, inputs.float())
        model = self.generator_ddp if training else self.generator
        return model(latent), 0.0
