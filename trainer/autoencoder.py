"""Stage 1 and 2 of the symmetric codec: the whole autoencoder, then (efficient paradigm) the decoder
against the discriminators with encoder, projector and codebooks frozen."""

from __future__ import annotations

import logging

import torch

from trainer.base import GANTrainer, LossTracker
from trainer.distributed import wrap_ddp
from utils.errors import CodecError

logger = logging.getLogger(__name__)

PARADIGMS = ("efficient", "joint")  # stage 2 with the analysis part fixed, or everything trained on


class AutoencoderTrainer(GANTrainer):
    """``train_mode: autoencoder``.

    Config: ``start_steps: {generator: 0, discriminator: 200000}`` (the generator trains from step
    ``generator`` on, the discriminator from ``discriminator`` on); ``paradigm: efficient`` (default)
    freezes encoder, projector and codebooks when the discriminator starts: their parameters stop
    getting gradients and the quantizer stays in eval mode, so the EMA codebook updates stop too.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        start_steps = self.config.get("start_steps") or {}
        if not isinstance(start_steps, dict) or set(start_steps) - {"generator", "discriminator"}:
            raise CodecError(f"start_steps {start_steps!r}: give a mapping of generator and discriminator to the "
                             "step each starts training at")
        self.generator_start = int(start_steps.get("generator", 0))
        self.discriminator_start = int(start_steps.get("discriminator", 200000))
        self.paradigm = self.config.get("paradigm", "efficient")
        if self.paradigm not in PARADIGMS:  # the original trains any other value as "joint": a typo would too
            raise CodecError(f"paradigm {self.paradigm!r} is not one of {', '.join(PARADIGMS)}: fix the config")
        self.analysis_frozen = False

    def generator_active(self) -> bool:
        return self.steps >= self.generator_start

    def discriminator_active(self) -> bool:
        return self.steps >= self.discriminator_start

    def _freeze_analysis(self) -> None:
        for part in (self.generator.encoder, self.generator.projector, self.generator.quantizer):
            part.requires_grad_(False)
        self.analysis_frozen = True
        # DDP must forget the frozen parameters, or it would wait for their gradients.
        self.generator_ddp = wrap_ddp(self.generator, self.context)
        logger.info("Encoder, projector, quantizer and codebooks are fixed from step %d", self.steps)

    def prepare_step(self) -> None:
        if not self.analysis_frozen and self.paradigm == "efficient" and self.discriminator_active():
            self._freeze_analysis()
        super().prepare_step()
        if self.analysis_frozen:
            self.generator.quantizer.eval()

    def generate(self, inputs: torch.Tensor, losses: LossTracker, prefix: str, training: bool) -> tuple:
        model = self.generator_ddp if training else self.generator
        predicted, _, _, vq_loss, perplexity = model(inputs)
        return predicted, self.record_vq(vq_loss, perplexity, losses, prefix)
