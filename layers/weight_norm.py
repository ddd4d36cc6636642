"""Weight normalization: applied as a parametrization, folded away for inference.

The original checkpoints use the old hook-based weight norm, whose state-dict entries are
`<conv>.weight_g` (magnitude, one per output slice of dim 0) and `<conv>.weight_v` (direction).
We use `torch.nn.utils.parametrizations.weight_norm`, whose entries are
`<conv>.parametrizations.weight.original0` (= g) and `...original1` (= v). `from_original_keys`
and `to_original_keys` translate a whole state dict (the generators' checkpoints);
`keep_original_names` makes a module's own state dict use the original spelling (the
discriminators, whose optimizer states must line up with the original's). Both compute
`weight = g * v / |v|` with `torch._weight_norm`, so folded weights equal the original's to the bit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

_ORIGINAL_TO_PARAMETRIZED = {
    ".weight_g": ".parametrizations.weight.original0",
    ".weight_v": ".parametrizations.weight.original1",
}
_PARAMETRIZED_TO_ORIGINAL = {new: old for old, new in _ORIGINAL_TO_PARAMETRIZED.items()}


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


def _renamed(state_dict: Mapping[str, Any], renames: Mapping[str, str], prefix: str = "") -> dict[str, Any]:
    """`state_dict` in its order, with each key under `prefix` that ends in a suffix of `renames`
    ending in that suffix's replacement instead."""
    renamed = {}
    for key, value in state_dict.items():
        if key.startswith(prefix):
            for suffix, replacement in renames.items():
                if key.endswith(suffix):
                    key = key[: -len(suffix)] + replacement
                    break
        renamed[key] = value
    return renamed


def from_original_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename old-style `weight_g` / `weight_v` entries to the parametrization's names."""
    return _renamed(state_dict, _ORIGINAL_TO_PARAMETRIZED)


def to_original_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename parametrization entries back to the original's `weight_g` / `weight_v`."""
    return _renamed(state_dict, _PARAMETRIZED_TO_ORIGINAL)


def _rename_in_place(state_dict: dict[str, Any], renames: Mapping[str, str], prefix: str) -> None:
    renamed = _renamed(state_dict, renames, prefix)
    state_dict.clear()  # (in place: a state-dict hook's dict carries its metadata as an attribute)
    state_dict.update(renamed)


def _save_original_names(module: nn.Module, state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
    _rename_in_place(state_dict, _PARAMETRIZED_TO_ORIGINAL, prefix)


def _load_original_names(module: nn.Module, state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
    _rename_in_place(state_dict, _ORIGINAL_TO_PARAMETRIZED, prefix)


def keep_original_names(module: nn.Module) -> None:
    """Make `module`'s state dict spell its weight-norm entries as the original (`weight_g`,
    `weight_v`) and its loading accept either spelling."""
    module.register_state_dict_post_hook(_save_original_names)
    module.register_load_state_dict_pre_hook(_load_original_names)
