"""Activation lookup by name, as configs spell it (`ELU`, `LeakyReLU`, ...)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn


def get_activation(name: str, params: Mapping[str, Any] | None = None) -> nn.Module:
    """Build a `torch.nn` activation from its class name and keyword arguments."""
    activation = getattr(nn, name, None)
    if activation is None or not isinstance(activation, type) or not issubclass(activation, nn.Module):
        raise ValueError(f"unknown activation '{name}': use a torch.nn class name such as ELU or LeakyReLU")
    return activation(**(params or {}))
