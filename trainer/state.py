"""Training checkpoints: file names, the newest one, resume requests, and the random-number state.

A training checkpoint is the original's dict (``model``, ``optimizer``, ``scheduler``, ``steps``,
``epochs``) plus keys of ours that the original's loaders ignore, among them ``rng`` (the generators'
states, so that a resumed run draws the same random crops; rank 0's in a run of several processes,
whose checkpoints also hold every rank's, by rank, as ``rng_per_rank``) and ``data`` (how far into the
epoch the data order had got).
"""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from utils.checkpoint import integer_weights
from utils.errors import CodecError

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)steps\.pkl$")


def checkpoint_path(expdir: str | Path, steps: int) -> Path:
    """``<expdir>/checkpoint-<steps>steps.pkl``."""
    return Path(expdir) / f"checkpoint-{steps}steps.pkl"


def checkpoints_newest_first(expdir: str | Path) -> list[Path]:
    """The checkpoints in ``expdir``, the one with the most steps first."""
    folder = Path(expdir)
    if not folder.is_dir():
        return []
    found = [(int(match.group(1)), path) for path in folder.iterdir() if (match := CHECKPOINT_PATTERN.match(path.name))]
    return [path for _, path in sorted(found, reverse=True)]


def latest_checkpoint(expdir: str | Path) -> Path | None:
    """The checkpoint with the most steps in ``expdir``, or None."""
    return next(iter(checkpoints_newest_first(expdir)), None)


def resolve_resume(resume: str | None, expdir: str | Path) -> Path | None:
    """The checkpoint a ``--resume`` value names: ``""`` none, ``auto`` the newest in ``expdir``, else a path.

    Raises:
        CodecError: the named file does not exist.
    """
    if not resume:
        return None
    if resume == "auto":
        return latest_checkpoint(expdir)
    path = Path(resume)
    if not path.is_file():
        raise CodecError(f"--resume {resume}: no such checkpoint; give a checkpoint-<N>steps.pkl path or 'auto'")
    return path


def _read(path: Path | str) -> tuple[dict[str, Any] | None, str]:
    """What a training checkpoint holds (tensors, numbers and plain containers only), or None and why
    it cannot be read."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        return None, f"cannot read checkpoint {path} ({error.__class__.__name__}): it is damaged or not a checkpoint"
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict) or "generator" not in state["model"]:
        return None, f"{path} holds no model.generator: it is not an AudioDec checkpoint"
    problem = integer_weights(state["model"])
    return (None, f"checkpoint {path} {problem}") if problem is not None else (state, "")


def read_training_checkpoint(path: str | Path, fix: str = "give another checkpoint") -> dict[str, Any]:
    """Load a training checkpoint.

    Raises:
        CodecError: the file is not a readable AudioDec checkpoint (the message ends with ``fix``).
    """
    state, problem = _read(path)
    if state is None:
        raise CodecError(f"{problem}; {fix}")
    return state


def read_newest_checkpoint(expdir: str | Path, warn: bool = True) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of ``expdir`` that can be read, and what it holds (``--resume auto``); None
    where there is none. Newer ones that cannot be read (a disk that failed, a copy cut short) are passed
    over, with a warning when ``warn``, and left where they are: a job requeued after such damage
    resumes from the checkpoint before instead of failing on every restart.

    Raises:
        CodecError: there are checkpoints, and none can be read.
    """
    problems, passed_over = [], []
    for path in checkpoints_newest_first(expdir):
        state, problem = _read(path)
        if state is None:
            problems.append(problem)
            passed_over.append(path.name)
            continue
        if problems and warn:
            logger.warning("--resume auto: %s; resuming from %s, the newest that can be read, and leaving %s as %s",
                           "; ".join(problems), path.name, ", ".join(passed_over),
                           "they are" if len(passed_over) > 1 else "it is")  # fmt: skip
        return path, state
    if problems:
        more = f", and {len(problems) - 1} more" if len(problems) > 1 else ""
        raise CodecError(f"--resume auto: no checkpoint in {expdir} can be read ({problems[0]}{more}): move them "
                         "away to train from the start, or give another --tag")
    return None


def capture_rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's (CPU and CUDA) generators, in loadable types."""
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back what :func:`capture_rng_state` returned."""
    random.setstate(_as_python_state(state["python"]))
    numpy_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": numpy_state["bit_generator"],
            "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]},
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_python_state(state: Any) -> tuple:
    """``random.getstate()`` comes back from a checkpoint with lists where tuples were."""
    version, internal, gauss = state
    return version, tuple(internal), gauss
