"""Feature-matching loss: L1 distance of discriminator feature maps on real and generated audio."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class FeatureMatchLoss(nn.Module):
    """Sum (or mean) over discriminators of the sum (or mean) over layers of `L1(f(G(z)), f(x))`.

    Real features are detached. Unless `include_final_outputs`, each discriminator's last output
    (its decision) is left out.
    """

    def __init__(
        self,
        average_by_layers: bool = True,
        average_by_discriminators: bool = True,
        include_final_outputs: bool = False,
    ) -> None:
        super().__init__()
        self.average_by_layers = average_by_layers
        self.average_by_discriminators = average_by_discriminators
        self.include_final_outputs = include_final_outputs

    def forward(
        self,
        features_fake: Sequence[Sequence[torch.Tensor]],
        features_real: Sequence[Sequence[torch.Tensor]],
    ) -> torch.Tensor:
        """Per-discriminator lists of layer outputs on generated / real audio -> scalar loss."""
        if len(features_fake) != len(features_real):
            raise ValueError(
                f"{len(features_fake)} fake but {len(features_real)} real discriminator outputs"
            )
        loss = features_fake[0][0].new_zeros(()) if features_fake else torch.zeros(())
        for layers_fake, layers_real in zip(features_fake, features_real):
            if not self.include_final_outputs:
                layers_fake, layers_real = layers_fake[:-1], layers_real[:-1]
            if not layers_fake:
                continue
            discriminator_loss = sum(
                F.l1_loss(fake, real.detach()) for fake, real in zip(layers_fake, layers_real)
            )
            if self.average_by_layers:
                discriminator_loss = discriminator_loss / len(layers_fake)
            loss = loss + discriminator_loss
        if self.average_by_discriminators:
            loss = loss / len(features_fake)
        return loss
