"""A training run's command-line options (`TrainOptions`, what ``codecTrain.py`` parses) and the reading of
a recipe's YAML, without torch: codecTrain.py's --help and its option and config-file errors answer
before torch loads (seconds)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import yaml

from utils.errors import CodecError, check_at_least

# The ``compile`` run option: what each value compiles (``true`` depends on the device).
COMPILE_SETTINGS: dict[str, tuple[str, ...]] = {"generator": ("generator",), "all": ("generator", "discriminator")}


@dataclass
class TrainOptions:
    """The command line of ``codecTrain.py`` (the original's argument names, then ours).

    The run options (``precision`` ... ``ddp_bf16_compress``) left at None take the config's key of
    the same name, else the default: fp32, no compile, nn.Conv1d's own convolutions, TF32 on Ampere+,
    the config's ``batch_size`` as the global batch, no micro-batches, uncompressed gradients.
    """

    config: str
    tag: str
    exp_root: str = "exp"
    resume: str = ""
    seed: int = 1337
    disable_cudnn: str = "False"
    initial: str = ""  # overrides the config's ``initial`` (start from these parameters) when given
    analyzer: str = ""  # overrides a vocoder recipe's ``analyzer`` (the frozen encoder) when given
    ngpu: int | None = None  # GPUs per node asked for; 0: CPU; None: CUDA if present (see init_distributed)
    precision: str | None = None  # fp32 | bf16 | fp16
    compile: bool | str | None = None  # true, false, 'generator' or 'all' (trainer.base.compiled_networks)
    fast_conv: bool | None = None
    tf32: bool | None = None
    batch_size_per_rank: int | None = None
    micro_batch: int | None = None
    ddp_bf16_compress: bool | None = None
    threads: int | None = None  # torch's intra-op threads per process (default: torch's choice)
    cpu_budget_minutes: float | None = None  # stop (checkpoint, curve point) after this much training CPU time

    def __post_init__(self) -> None:
        """Refuse a value the run could only misread (a count of 0 read as unset, a negative budget that
        trains nothing) with one line."""
        tag = PurePath(self.tag)
        if not tag.parts or tag.is_absolute() or ".." in tag.parts:  # "" and "." have no parts
            raise CodecError(f"--tag {self.tag!r}: give a folder name under --exp_root (e.g. autoencoder/mine), "
                             "not empty, absolute or with '..'")
        if not 0 <= self.seed < 2**32:
            raise CodecError(f"--seed {self.seed}: give a number in 0..{2**32 - 1}")
        if self.ngpu is not None and self.ngpu < 0:
            raise CodecError(f"--ngpu {self.ngpu}: give the GPUs per node, or 0 to train on the CPU")
        for option in ("batch_size_per_rank", "micro_batch", "threads"):
            check_at_least(option, getattr(self, option), 1, " (or leave it out)")
        if self.cpu_budget_minutes is not None and not self.cpu_budget_minutes > 0:
            raise CodecError(f"--cpu_budget_minutes {self.cpu_budget_minutes}: give minutes above 0 (or leave it out)")


def read_config(path: str | Path) -> dict[str, Any]:
    """A recipe config (YAML mapping).

    Raises:
        CodecError: missing or not a YAML mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise CodecError(f"config {path} not found: give a recipe under config/ (e.g. config/autoencoder/...)")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise CodecError(f"{path} is not valid YAML ({error.__class__.__name__})") from None
    if not isinstance(config, dict):
        raise CodecError(f"{path} is not a YAML mapping of recipe settings")
    return config
