"""Denoising encoder: encoder and projector learn to map noisy input to the codes of the clean
signal, through the frozen codebooks and decoder of a trained autoencoder (the config's ``initial``)."""

from __future__ import annotations

from typing import Any

import torch

from trainer.base import GANTrainer, LossTracker


class DenoiseTrainer(GANTrainer):
    """``train_mode: denoise``: batches are (noisy, clean) pairs; no discriminator (as the original)."""

    def configure_parameters(self) -> None:
        self.generator.quantizer.requires_grad_(False)
        self.generator.decoder.requires_grad_(False)

    def unpack(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        noisy, clean = batch
        return noisy.to(self.device, non_blocking=True), clean.to(self.device, non_blocking=True)

    def prepare_step(self) -> None:
        super().prepare_step()
        self.generator.quantizer.eval()

    def generate(self, inputs: torch.Tensor, losses: LossTracker, prefix: str, training: bool) -> tuple:
        model = self.generator_ddp if training else self.generator
        predicted, _, _, vq_loss, perplexity = model(inputs)
        return predicted, self.record_vq(vq_loss, perplexity, losses, prefix)
