"""How problems reach the user of a command-line tool: as one line that names the problem and the fix."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import NoReturn


class CodecError(Exception):
    """A user-facing problem: the message names it and says how to fix it."""


def check_at_least(option: str, value: int | None, least: int, note: str = "") -> None:
    """Raise CodecError (``--option value: give least or more`` and ``note``) when a count given on the
    command line is below ``least``; None (not given) passes."""
    if value is not None and value < least:
        raise CodecError(f"--{option} {value}: give {least} or more{note}")


def make_output_folder(folder: str | os.PathLike, option: str, given: str | os.PathLike | None = None) -> Path:
    """Create ``folder`` (and its parents) for an output, before the work that fills it; where it cannot
    be, a CodecError names ``option`` and the path ``given`` for it (default ``folder``) and what is in
    the way."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        blocking = next((parent for parent in (folder, *folder.parents) if parent.exists()), None)
        reason = f"{blocking} is a file" if blocking is not None and not blocking.is_dir() else error.strerror
        where = "it" if given is None else str(folder)
        raise CodecError(
            f"{option} {folder if given is None else given}: cannot create {where} ({reason}): give another path"
        ) from None
    return folder


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with one-line errors (``error: <what argparse says>: see <prog> --help``, exit
    status 2) instead of its usage block followed by the error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}: see {self.prog} --help\n")
