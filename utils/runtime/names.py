"""The names a command line offers for how a codec runs (`backends` runs them): no torch here, so that a
command's --help and its argument errors answer before torch loads."""

BACKENDS = ("native", "torch", "eager")
DEFAULT_BACKEND = "native"
PRECISION_NAMES = ("fp32", "bf16", "int8")  # the native receiver's weight storage (backends.PRECISIONS)
