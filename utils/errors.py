"""How problems reach the user of a command-line tool: as one line that names the problem and the fix."""

from __future__ import annotations

import argparse
from typing import NoReturn


class CodecError(Exception):
    """A user-facing problem: the message names it and says how to fix it."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with one-line errors (``error: <what argparse says>: see <prog> --help``, exit
    status 2) instead of its usage block followed by the error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}: see {self.prog} --help\n")
