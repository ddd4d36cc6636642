"""The one exception the command-line tools turn into a one-line error message."""


class CodecError(Exception):
    """A user-facing problem: the message names it and says how to fix it."""
