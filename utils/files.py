"""Publishing a finished temp file under its final name."""

from __future__ import annotations

import os


def default_file_mode() -> int:
    """The permissions a new file gets under the current umask (0o666 & ~umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Rename a fully written temp file to `path`, with ordinary permissions.

    `tempfile.mkstemp` creates files readable by their owner only; outputs (audio, .adc files,
    checkpoints) are meant to be shared like any file the user writes, so the umask's mode is set first.
    """
    os.chmod(tmp, default_file_mode())
    os.replace(tmp, path)
