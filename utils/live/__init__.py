"""Live streaming through a codec: sound devices (`devices`), the one-process pipeline and file
runners (`pipeline`), and the UDP sender and receiver (`udp`). demoStream.py is its command line."""

from utils.live.devices import check_device, list_devices, parse_device
from utils.live.pipeline import Streamer, push_unpaced, run_devices, run_file, run_file_to_device
from utils.live.udp import Receiver, Sender, bind_udp, parse_address, receive, send_device, send_file

__all__ = [
    "Receiver", "Sender", "Streamer", "bind_udp", "check_device", "list_devices", "parse_address", "parse_device",
    "push_unpaced", "receive", "run_devices", "run_file", "run_file_to_device", "send_device", "send_file",
]
