"""Weight normalization: applied as a parametrization, folded away for inference.

The original checkpoints use the old hook-based weight norm, whose state-dict entries are
`<conv>.weight_g` (magnitude, one per output slice of dim 0) and `<conv>.weight_v` (direction).
We use `torch.nn.utils.parametrizations.weight_norm`, whose entries are
`<conv>.parametrizations.weight.original0` (= g) and `...original1` (= v); the two functions
below translate between the spellings. Both compute `weight = g * v / |v|` with
`torch._weight_norm`, so folded weights equal the original's to the bit.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

_OLD_G, _OLD_V = ".weight_g", ".weight_v"
_NEW_G, _NEW_V = ".parametrizations.weight.original0", ".parametrizations.weight.original1"


def apply_weight_norm(model: nn.Module) -> None:
    """Put weight norm on every Conv1d / ConvTranspose1d of `model` (dim 0, as the original)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)) and not parametrize.is_parametrized(
            module, "weight"
        ):
            weight_norm(module)


def fold_weight_norm(model: nn.Module) -> None:
    """Replace every weight-norm parametrization by the plain weight it computes."""
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)


def has_weight_norm(model: nn.Module) -> bool:
    """Whether any layer of `model` is weight-normalized."""
    return any(parametrize.is_parametrized(m, "weight") for m in model.modules())


def from_original_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename old-style `weight_g` / `weight_v` entries to the parametrization's names."""
    renamed = {}
    for key, value in state_dict.items():
        if key.endswith(_OLD_G):
            key = key[: -len(_OLD_G)] + _NEW_G
        elif key.endswith(_OLD_V):
            key = key[: -len(_OLD_V)] + _NEW_V
        renamed[key] = value
    return renamed


def to_original_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename parametrization entries back to the original's `weight_g` / `weight_v`."""
    renamed = {}
    for key, value in state_dict.items():
        if key.endswith(_NEW_G):
            key = key[: -len(_NEW_G)] + _OLD_G
        elif key.endswith(_NEW_V):
            key = key[: -len(_NEW_V)] + _OLD_V
        renamed[key] = value
    return renamed
