"""Live streaming through a codec: sound devices (`devices`), the one-process pipeline and file
runners (`pipeline`), and the UDP sender and receiver (`udp`). demoStream.py is its command line.

Each name is imported from its module when first used: `pipeline` and `udp` bring torch, which
`--list-devices` and demoStream.py's argument errors do without.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULE_OF = {
    "check_device": "devices", "list_devices": "devices", "parse_device": "devices",
    "Streamer": "pipeline", "push_unpaced": "pipeline", "run_devices": "pipeline", "run_file": "pipeline",
    "run_file_to_device": "pipeline",
    "Receiver": "udp", "Sender": "udp", "bind_udp": "udp", "parse_address": "udp", "receive": "udp",
    "send_device": "udp", "send_file": "udp",
}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    globals()[name] = value  # found directly from now on
    return value
