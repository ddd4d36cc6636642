"""demoStream.py through a real PortAudio stream on a JACK server with the dummy driver (no sound card).

A second JACK client plays the test file into the stream's input port and records its output port.
The recorded audio, aligned by cross-correlation, must be the codec's whole-file output of what the
stream captured (StreamingCodec.code, the pass demoFile.py makes), apart from dropped frames.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
import uuid

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.conftest import OFFICIAL, REPO
from tests.test_stream_file import INPUT, MODEL, stat
from utils.audio import read_audio
from utils.audiodec import StreamingCodec

RATE = 48000
FRAME = 1200


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture
def jack_server(tmp_path, monkeypatch):
    """A private JACK server (dummy driver, 48 kHz, 256-sample periods); yields its name."""
    if shutil.which("jackd") is None:
        pytest.skip("jackd is not installed (bash utils/system_deps.sh installs jackd2)")
    try:
        import jack
    except (ImportError, OSError) as error:
        pytest.skip(f"the JACK-Client package or libjack cannot be loaded: {error}")
    name = f"audiodec-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("JACK_DEFAULT_SERVER", name)
    log = open(tmp_path / "jackd.log", "w")
    server = subprocess.Popen(["jackd", "--no-realtime", "-d", "dummy", "-r", str(RATE), "-p", "256"],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                jack.Client("probe", no_start_server=True).close()
                break
            except jack.JackError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.skip(f"jackd did not start: {(tmp_path / 'jackd.log').read_text()[-300:]}")
                time.sleep(0.2)
        yield name
    finally:
        _stop(server)
        log.close()


class PlayerRecorder:
    """JACK client: plays `signal` from its output port once `play` is set, records its input port."""

    def __init__(self, signal: np.ndarray, seconds: float) -> None:
        import jack
        self.client = jack.Client("player", no_start_server=True)
        self.out_port = self.client.outports.register("out")
        self.in_port = self.client.inports.register("in")
        self.signal = signal.astype(np.float32)
        self.recording = np.zeros(int(seconds * RATE), np.float32)
        self.position = 0
        self.play = threading.Event()
        self.done = threading.Event()
        self.client.set_process_callback(self._process)
        self.client.activate()

    def _process(self, frames: int) -> None:
        out = self.out_port.get_array()
        out[:] = 0
        if not self.play.is_set() or self.done.is_set():
            return
        start, stop = self.position, self.position + frames
        chunk = self.signal[start:stop]
        out[:chunk.shape[0]] = chunk
        take = min(frames, self.recording.shape[0] - start)
        self.recording[start:start + take] = self.in_port.get_array()[:take]
        self.position = stop
        if stop >= self.recording.shape[0]:
            self.done.set()

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()


def _best_lag(recorded: np.ndarray, reference: np.ndarray) -> int:
    """Lag d maximizing the correlation of recorded[d:] with reference (FFT cross-correlation)."""
    n = recorded.shape[0] + reference.shape[0]
    spectrum = np.fft.rfft(recorded, n) * np.conj(np.fft.rfft(reference, n))
    correlation = np.fft.irfft(spectrum, n)[:recorded.shape[0]]
    return int(np.argmax(correlation))


def test_jack_stream_matches_the_file_codec(tmp_path, python: str, jack_server: str) -> None:
    # In a child process: PortAudio aborts at exit when its JACK server went away first.
    apis = subprocess.run([python, "-c", "import sounddevice as sd; print([a['name'] for a in sd.query_hostapis()])"],
                          capture_output=True, text=True, timeout=60)
    assert "JACK" in apis.stdout, f"PortAudio does not see the JACK server: {apis.stdout} {apis.stderr[-300:]}"
    signal_in, _ = read_audio(INPUT)
    signal_in = signal_in[:, 0]
    player = PlayerRecorder(signal_in, seconds=signal_in.shape[0] / RATE + 1.5)
    dump_in, dump_out = tmp_path / "in.wav", tmp_path / "out.wav"
    demo = subprocess.Popen(
        [python, os.path.join(REPO, "demoStream.py"), *MODEL, "--input_device", "system", "--output_device", "system",
         "--frame_size", str(FRAME), "--max_latency", "0.3", "--duration", "60", "-i", str(dump_in),
         "-o", str(dump_out)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not player.client.get_ports("PortAudio.*:out_0"):
            assert demo.poll() is None, demo.communicate()
            assert time.monotonic() < deadline, "the stream did not open its JACK ports"
            time.sleep(0.1)
        stream_in = player.client.get_ports("PortAudio.*:in_0")[0]
        stream_out = player.client.get_ports("PortAudio.*:out_0")[0]
        player.client.connect(player.out_port, stream_in)
        player.client.connect(stream_out, player.in_port)
        while not (player.out_port.connections and player.in_port.connections):
            time.sleep(0.05)
        time.sleep(0.3)  # connections take effect at a later graph cycle
        player.play.set()
        assert player.done.wait(timeout=30), "the JACK server stopped running"
        out, err = demo.communicate("\n", timeout=60)
    finally:
        _stop(demo)
        player.close()
    assert demo.returncode == 0, err
    assert "Traceback" not in err
    drops = int(stat(out, "frame drops").split()[0])
    frames = int(stat(out, "frame drops").split()[-2])
    print(f"JACK stream: latency {stat(out, 'system latency (ms)')} ms, {drops} of {frames} frames dropped, "
          f"encoder {stat(out, 'encoder processing time (ms)')} ms, "
          f"decoder {stat(out, 'decoder processing time (ms)')} ms")
    assert drops <= frames // 4

    # What the stream captured is what was played, sample for sample, apart from periods that JACK
    # or PortAudio lost on a loaded machine.
    captured, _ = sf.read(dump_in, dtype="float32")
    played = signal_in.astype(np.float32)
    blocks = [played[start:start + FRAME] for start in range(0, played.shape[0] - FRAME + 1, FRAME)]
    offset = _best_lag(captured, played)
    intact = sum(_found(captured, block, offset + index * FRAME) for index, block in enumerate(blocks))
    print(f"capture: {intact} of {len(blocks)} blocks of what was played arrived intact")
    assert intact >= 0.5 * len(blocks)

    # The codec's answer for what was captured, on the stream's own frame grid (demoFile.py's pass).
    torch.set_num_threads(1)
    codec = StreamingCodec.from_name("vctk_sym", root=OFFICIAL)
    expected = codec.audio_from_streams(codec.code(codec.streams_from_audio(captured[:, None]))[1])[:, 0]
    decoded, _ = sf.read(dump_out, dtype="float32")
    assert decoded.shape == expected.shape

    # Each frame of it that carries the signal is in the recording, wherever drops moved it.
    first = offset // FRAME
    signal_part = expected[first * FRAME:(first + played.shape[0] // FRAME) * FRAME]
    delay = _best_lag(player.recording, signal_part)
    frames_with_signal = np.split(signal_part, signal_part.shape[0] // FRAME)
    matched = sum(_found(player.recording, frame, delay + index * FRAME, 1e-4)
                  for index, frame in enumerate(frames_with_signal))
    print(f"{matched} of {len(frames_with_signal)} frames of the recording equal the file codec's output")
    assert matched >= 0.5 * len(frames_with_signal)


def _found(haystack: np.ndarray, block: np.ndarray, where: int, tolerance: float = 0.0) -> bool:
    """Whether `block` occurs in `haystack` (to `tolerance`) at `where` or at its best correlation lag."""
    for lag in (where, _best_lag(haystack, block)):
        piece = haystack[lag:lag + block.shape[0]]
        if piece.shape == block.shape and np.abs(piece - block).max() <= tolerance:
            return True
    return False
