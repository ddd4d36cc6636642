"""A config's model sizes against the memory there is, before anything is allocated; and a training
step that runs out of memory, as one line.

A size typed a few digits too long (``codebook_size: 1000000000``) otherwise fails in the allocator,
with its message or a traceback, or, where the system overcommits memory, is granted and then kills
the process (or its neighbours) once the tensors are written.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from utils.errors import CodecError


def _amount(size: int) -> str:
    """Bytes as GB, or MB below a tenth of a GB."""
    return f"{size / 1e9:.1f} GB" if size >= 1e8 else f"{size / 1e6:.1f} MB"


def free_memory(device: torch.device) -> int | None:
    """Bytes this process may still allocate on ``device``: its GPU's free memory, or (Linux) the
    machine's available memory shared by the node's training processes; None where unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    found = re.search(r"^MemAvailable:\s+(\d+) kB", meminfo, re.MULTILINE)
    if found is None:
        return None
    return int(found.group(1)) * 1024 // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def _whole_numbers(params: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, int]]:
    """(dotted key, value) of every whole number in ``params`` and the mappings inside it."""
    for key, value in params.items():
        if isinstance(value, Mapping):
            yield from _whole_numbers(value, f"{prefix}{key}.")
        elif isinstance(value, int) and not isinstance(value, bool):
            yield f"{prefix}{key}", value


def check_models_fit(models: Mapping[str, nn.Module], config: Mapping[str, Any], device: torch.device) -> None:
    """Raise CodecError where the parameters and buffers of ``models`` (built on the meta device, keyed
    by the config key of their settings, e.g. ``generator_params``) alone take more memory than
    ``device`` has free; training needs more besides (gradients, optimizer state, activations), so
    only sizes that cannot train are refused. The line names the config's setting that made the
    largest tensor (a whole number equal to its largest size), where there is one."""
    free = free_memory(device)
    if free is None:
        return
    tensors = {key: [(name, tensor) for name, tensor in [*model.named_parameters(), *model.named_buffers()]]
               for key, model in models.items()}
    total = sum(tensor.numel() * tensor.element_size() for named in tensors.values() for _, tensor in named)
    if total <= free:
        return
    key, (name, largest) = max(((key, item) for key, named in tensors.items() for item in named),
                               key=lambda entry: entry[1][1].numel())
    shape = " x ".join(str(size) for size in largest.shape)
    size = max(largest.shape, default=1)
    settings = [path for path, value in _whole_numbers(config.get(key) or {}) if value == size]
    cause, fix = f"the sizes in {key} make", f"give smaller sizes in {key}"
    if settings:
        cause, fix = f"{key} {settings[0]}: {size} makes", f"give a smaller {settings[0]} in {key}"
    raise CodecError(f"{cause} the models' parameters and buffers take {_amount(total)} ({name} is {shape}), more "
                     f"than the {_amount(free)} of {device.type.upper()} memory free for this process: {fix}")


def out_of_memory(error: BaseException, steps: int, device: torch.device) -> CodecError | None:
    """``error`` as one line where it is an allocation that failed during training (at ``steps``), else None."""
    text = str(error)
    if not isinstance(error, torch.OutOfMemoryError) and "can't allocate memory" not in text:
        return None
    asked = re.search(r"allocate ([\d.]+ ?[KMGT]?i?B|\d+ bytes)", text)
    return CodecError(f"out of {device.type.upper()} memory at step {steps}"
                      f"{f' (allocating {asked.group(1)})' if asked else ''}: lower batch_size or batch_length, "
                      "train in --micro_batch parts, or give smaller sizes in generator_params or "
                      "discriminator_params")
