"""Adversarial losses for the generator and the discriminators: least squares or hinge.

Discriminator outputs come as one tensor, a list with one tensor per discriminator, or a list
with one list of layer outputs per discriminator (the last entry being the decision); only the
decisions enter these losses.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

DiscriminatorOutputs = torch.Tensor | Sequence[torch.Tensor | Sequence[torch.Tensor]]

LOSS_TYPES = ("mse", "hinge")


def final_outputs(outputs: DiscriminatorOutputs) -> list[torch.Tensor]:
    """Each discriminator's decision tensor, in order."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    return [
        output if isinstance(output, torch.Tensor) else output[-1] for output in outputs
    ]


def _check_loss_type(loss_type: str) -> None:
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type {loss_type!r} is not supported; choose one of {LOSS_TYPES}")


class GeneratorAdversarialLoss(nn.Module):
    """Generator's loss: `mean((D(G(z)) - 1)^2)` ("mse") or `-mean(D(G(z)))` ("hinge").

    Summed over discriminators, or averaged when `average_by_discriminators`.
    """

    def __init__(self, average_by_discriminators: bool = True, loss_type: str = "mse") -> None:
        super().__init__()
        _check_loss_type(loss_type)
        self.average_by_discriminators = average_by_discriminators
        self.loss_type = loss_type

    def _criterion(self, decision: torch.Tensor) -> torch.Tensor:
        if self.loss_type == "mse":
            return F.mse_loss(decision, torch.ones_like(decision))
        return -decision.mean()

    def forward(self, outputs: DiscriminatorOutputs) -> torch.Tensor:
        """Discriminator outputs on generated audio -> scalar loss."""
        decisions = final_outputs(outputs)
        loss = sum(self._criterion(decision) for decision in decisions)
        if self.average_by_discriminators:
            loss = loss / len(decisions)
        return loss


class DiscriminatorAdversarialLoss(nn.Module):
    """Discriminators' losses on real and generated audio.

    "mse": real `mean((D(x) - 1)^2)`, fake `mean(D(G(z))^2)`;
    "hinge": real `mean(relu(1 - D(x)))`, fake `mean(relu(1 + D(G(z))))`.
    Summed over discriminators, or averaged when `average_by_discriminators`.
    """

    def __init__(self, average_by_discriminators: bool = True, loss_type: str = "mse") -> None:
        super().__init__()
        _check_loss_type(loss_type)
        self.average_by_discriminators = average_by_discriminators
        self.loss_type = loss_type

    def _real_criterion(self, decision: torch.Tensor) -> torch.Tensor:
        if self.loss_type == "mse":
            return F.mse_loss(decision, torch.ones_like(decision))
        return F.relu(1.0 - decision).mean()

    def _fake_criterion(self, decision: torch.Tensor) -> torch.Tensor:
        if self.loss_type == "mse":
            return F.mse_loss(decision, torch.zeros_like(decision))
        return F.relu(1.0 + decision).mean()

    def forward(
        self, outputs_fake: DiscriminatorOutputs, outputs_real: DiscriminatorOutputs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs on generated and on real audio -> (real loss, fake loss), both scalars."""
        decisions_fake, decisions_real = final_outputs(outputs_fake), final_outputs(outputs_real)
        if len(decisions_fake) != len(decisions_real):
            raise ValueError(
                f"{len(decisions_fake)} fake but {len(decisions_real)} real discriminator outputs"
            )
        real_loss = sum(self._real_criterion(decision) for decision in decisions_real)
        fake_loss = sum(self._fake_criterion(decision) for decision in decisions_fake)
        if self.average_by_discriminators:
            real_loss = real_loss / len(decisions_real)
            fake_loss = fake_loss / len(decisions_fake)
        return real_loss, fake_loss
