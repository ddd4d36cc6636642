"""How problems reach the user of a command-line tool: as one line that names the problem and the fix."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

# os.fsdecode's stand-ins for the bytes of a name that are no text in the file-system encoding
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


class CodecError(Exception):
    """A user-facing problem: the message names it and says how to fix it."""


def shown(text: str) -> str:
    """`text` (a path as the system gave it, or a message naming one) as it is printed: the bytes of a
    name that are no text in the file-system encoding (a Latin-1 `caf\\xe9.wav` under UTF-8, which
    Python holds as the surrogate `\\udce9`) as backslash escapes (`caf\\xe9.wav`), which any stream
    and a UTF-8 file take."""
    return _ESCAPED_BYTE.sub(lambda byte: f"\\x{ord(byte.group()) - 0xDC00:02x}", text)


def check_at_least(option: str, value: int | None, least: int, note: str = "") -> None:
    """Raise CodecError (``--option value: give least or more`` and ``note``) when a count given on the
    command line is below ``least``; None (not given) passes."""
    if value is not None and value < least:
        raise CodecError(f"--{option} {value}: give {least} or more{note}")


def built_from_config(cls: Callable[..., Any], key: str, params: Mapping[str, Any], *args: Any,
                      name: str | None = None) -> Any:
    """``cls(*args, **params)``, where ``params`` are the config's ``key``: a name or value there that
    ``cls`` refuses is the config's error (one line naming ``name``, default the class's), not a traceback."""
    if not isinstance(params, Mapping):
        raise CodecError(f"{key} is a {type(params).__name__}, not a mapping of {name or cls.__name__}'s settings: "
                         "fix the config")
    try:
        return cls(*args, **params)
    except (TypeError, ValueError, RuntimeError, IndexError, ZeroDivisionError) as error:
        # a size of 0, say, fails in torch (an empty stack) or in arithmetic, not in a check of the class's
        reason = _number_as_text(params) or str(error)
        raise CodecError(f"cannot build {name or cls.__name__} from {key}: {reason}: fix the config") from None


def _number_as_text(params: Mapping[str, Any]) -> str | None:
    """What is wrong with the first setting of ``params`` that YAML read as text though it reads as a
    number (``1e9``, ``1.0e9``: YAML 1.1 wants a dot and a signed exponent), or None: the class then
    fails on a string where it counts, with a message that names neither."""
    for key, value in params.items():
        if not isinstance(value, str):
            continue
        try:
            number = float(value)
        except ValueError:
            continue
        if not math.isfinite(number):  # "nan", "inf": words more than numbers
            continue
        written = str(int(number)) if number.is_integer() and abs(number) < 1e18 else repr(number)
        return f"{key}: {value!r} is text, not a number (YAML reads {value} as text): write {written}"
    return None


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with one-line errors (``error: <what argparse says>: see <prog> --help``, exit
    status 2) instead of its usage block followed by the error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}: see {self.prog} --help\n")
