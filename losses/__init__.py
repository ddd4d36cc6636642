"""Training losses, looked up by the name that prefixes their `<name>_loss_params` config entry.

A metric loss is also listed in `trainer.base.METRIC_LOSSES` (the names its outputs are logged under),
which is what a config's `use_<name>_loss: true` switches on.

    criterion = LOSSES["mel"](**config["mel_loss_params"])

| name                | class                          | forward                               |
| ------------------- | ------------------------------ | ------------------------------------- |
| `mel`               | `MultiMelSpectrogramLoss`      | (predicted, target) -> loss           |
| `stft`              | `MultiResolutionSTFTLoss`      | (predicted, target) -> (sc, log mag)  |
| `shape`             | `MultiWindowShapeLoss`         | (predicted, target) -> loss           |
| `complex_stft`      | `MultiResolutionComplexSTFTLoss` | (predicted, target) -> loss         |
| `phase`             | `MultiResolutionPhaseLoss`     | (predicted, target) -> loss           |
| `time_l1`           | `TimeDomainL1Loss`             | (predicted, target) -> loss           |
| `generator_adv`     | `GeneratorAdversarialLoss`     | (outputs_fake) -> loss                |
| `discriminator_adv` | `DiscriminatorAdversarialLoss` | (outputs_fake, outputs_real) -> (real, fake) |
| `feat_match`        | `FeatureMatchLoss`             | (features_fake, features_real) -> loss |
"""

from __future__ import annotations

from torch import nn

from losses.adversarial_loss import DiscriminatorAdversarialLoss, GeneratorAdversarialLoss
from losses.feat_match_loss import FeatureMatchLoss
from losses.mel_loss import MelSpectrogram, MultiMelSpectrogramLoss
from losses.phase_loss import MultiResolutionComplexSTFTLoss, MultiResolutionPhaseLoss, TimeDomainL1Loss
from losses.stft_loss import MultiResolutionSTFTLoss, STFTLoss
from losses.waveform_loss import MultiWindowShapeLoss, WaveformShapeLoss

LOSSES: dict[str, type[nn.Module]] = {
    "mel": MultiMelSpectrogramLoss,
    "stft": MultiResolutionSTFTLoss,
    "shape": MultiWindowShapeLoss,
    "complex_stft": MultiResolutionComplexSTFTLoss,
    "phase": MultiResolutionPhaseLoss,
    "time_l1": TimeDomainL1Loss,
    "generator_adv": GeneratorAdversarialLoss,
    "discriminator_adv": DiscriminatorAdversarialLoss,
    "feat_match": FeatureMatchLoss,
}

__all__ = [
    "LOSSES",
    "DiscriminatorAdversarialLoss",
    "FeatureMatchLoss",
    "GeneratorAdversarialLoss",
    "MelSpectrogram",
    "MultiMelSpectrogramLoss",
    "MultiResolutionComplexSTFTLoss",
    "MultiResolutionPhaseLoss",
    "MultiResolutionSTFTLoss",
    "MultiWindowShapeLoss",
    "STFTLoss",
    "TimeDomainL1Loss",
    "WaveformShapeLoss",
]
