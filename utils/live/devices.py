"""Sound devices for live streaming: sounddevice imported on demand, device names, checks."""

from __future__ import annotations

from typing import Any

from utils.errors import CodecError


def import_sounddevice() -> Any:
    """The sounddevice module, or a CodecError saying how to get PortAudio."""
    try:
        import sounddevice
    except OSError as error:
        raise CodecError(
            f"cannot use audio devices ({error}): install PortAudio (apt-get install libportaudio2, "
            "or bash utils/system_deps.sh)"
        ) from None
    return sounddevice


def parse_device(text: str | None) -> int | str | None:
    """'3' -> device index 3; a name (or part of one) stays a string; None = the system default."""
    if text is None:
        return None
    return int(text) if text.strip().lstrip("-").isdigit() else text


def list_devices() -> str:
    sd = import_sounddevice()
    devices = str(sd.query_devices())
    # PortAudio lists nothing on a machine without sound hardware (a server, a container)
    return devices or "no audio devices found: stream files with --input_file and -o instead"


def check_device(kind: str, device: int | str | None, channels: int, sample_rate: int) -> None:
    """Raise a CodecError unless `device` can capture (kind 'input') or play `channels` at `sample_rate`."""
    sd = import_sounddevice()
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    shown = "the default device" if device is None else repr(device)
    try:
        check(device=device, channels=channels, samplerate=sample_rate, dtype="float32")
    except (ValueError, sd.PortAudioError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CodecError(
            f"{kind} device {shown} cannot be used ({reason}) for {channels} channel(s) at {sample_rate} Hz: "
            "see --list-devices"
        ) from None



def open_stream(stream_class: Any, **kwargs: Any) -> Any:
    sd = import_sounddevice()
    try:
        return stream_class(**kwargs)
    except (ValueError, sd.PortAudioError) as error:
        raise CodecError(f"cannot open the audio stream ({error}): check the devices with --list-devices") from None

