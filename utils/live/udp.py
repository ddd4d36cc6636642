"""Live streaming over UDP: `Sender` (capture -> encoder thread -> packets of
utils/bitstream/packet.py) and `Receiver` (packets -> decoder -> playback or file, concealing lost
packets)."""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from utils.audiodec import StreamingCodec
from utils.bitstream import packet
from utils.bitstream.bits import bits_per_code
from utils.errors import CodecError
from utils.live.devices import import_sounddevice, open_stream
from utils.live.pipeline import (
    POLL_SECONDS,
    Pipeline,
    StopRequest,
    StreamStats,
    Worker,
    encode_step,
    stream_file,
    wait_for_stop,
)

END_PACKET_COPIES = 3
FADE_SECONDS = 0.04
MAX_CONCEAL_SECONDS = 10.0
MAX_LATENCY_SECONDS = 60.0  # a capture time further from this clock is a forged or unset one, not a latency


def parse_address(text: str) -> tuple[str, int]:
    """'HOST:PORT' (or ':PORT' / 'PORT' for 127.0.0.1) -> (host, port)."""
    host, _, port = text.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise CodecError(f"{text!r} is not HOST:PORT with a port in 1..65535")
    return host.strip("[]") or "127.0.0.1", int(port)


class Sender(Pipeline):
    """Capture -> encoder thread -> one UDP packet per frame. `drop_rate` fakes network loss; `keep_input`
    holds every captured block for `input_audio()`."""

    def __init__(self, codec: StreamingCodec, frame_size: int, channels: int, address: tuple[str, int],
                 max_latency: float = 0.1, drop_rate: float = 0.0, drop_seed: int | None = None,
                 keep_input: bool = True) -> None:
        super().__init__(frame_size, codec.hop_length, codec.sample_rate, max_latency, keep_input)
        if frame_size // codec.hop_length > packet.MAX_FRAMES:
            raise CodecError(f"--frame_size {frame_size} holds more than {packet.MAX_FRAMES} codec frames: "
                             "use a smaller one")
        self.codec = codec
        self.streams = 1 if codec.input_channels > 1 else channels
        self.frames_per_packet = frame_size // codec.hop_length
        self.bits = bits_per_code(codec.codebook_size)
        self.decoder = codec.decoder_hash()[:packet.DECODER_BYTES]
        self.session = random.getrandbits(32)
        self.drop_rate = drop_rate
        self.loss = random.Random(drop_seed)
        try:
            infos = socket.getaddrinfo(*address, type=socket.SOCK_DGRAM)
        except socket.gaierror as error:
            raise CodecError(f"cannot resolve {address[0]} ({error}): give --send HOST:PORT") from None
        family, _, _, _, self.address = infos[0]
        self.socket = socket.socket(family, socket.SOCK_DGRAM)
        self.packets_sent = 0
        self.packets_dropped = 0
        self.encode = encode_step(codec)
        self.workers = [Worker("encoder", self.encoder_queue, self._encode_and_send, None,
                                self.stats.encoder_times, self.stop_event, self.is_dropped)]

    def _encode_and_send(self, index: int, block: np.ndarray, stamp: float) -> None:
        codes = self.encode(block).cpu().numpy()
        self._send(packet.encode_codes(codes, self.bits, self.session, index, index * self.frames_per_packet,
                                       int(stamp * 1e6), self.decoder))
        self._arrived(index)

    def _prepare(self) -> None:
        self.codec.reset(self.streams, frame_size=self.frames_per_packet * self.codec.hop_length)

    def _send(self, datagram: bytes) -> None:
        if self.drop_rate > 0 and self.loss.random() < self.drop_rate:
            self.packets_dropped += 1
            return
        try:
            self.socket.sendto(datagram, self.address)
        except OSError as error:
            raise CodecError(f"cannot send to {self.address[0]}:{self.address[1]} ({error})") from None
        self.packets_sent += 1

    def finish(self, n_samples: int) -> None:
        """Send the END packet (a few copies, loss may take some) telling the receiver the length."""
        end = packet.encode_end(self.session, self._next_index, self._next_index * self.frames_per_packet,
                                n_samples, self.decoder)
        for _ in range(END_PACKET_COPIES):
            self._send(end)
        self.stats.counters = {"packets sent": self.packets_sent, "packets dropped (--drop_rate)": self.packets_dropped}

    def close(self) -> None:
        super().close()
        self.socket.close()


def send_file(sender: Sender, data: np.ndarray, pace: bool, duration: float | None = None) -> int:
    """Send a file's samples (T, C), paced in real time or not, until its end, `duration` seconds,
    Return or Ctrl-C; then the END packet. Returns the samples of the file sent. The model's output
    delay is coded after the file (zeros), so that the receiver's audio holds the whole file."""
    stop = StopRequest(duration)
    sender.start()
    try:
        sent = stream_file(sender, data, pace, stop, lambda block: sender.push(block, wait=not pace),
                           sender.codec.output_delay)
        sender.drain()
        sender.finish(sent)
        return min(sent, data.shape[0])
    finally:
        sender.close()


def send_device(sender: Sender, input_device: int | str | None, duration: float | None) -> None:
    sd = import_sounddevice()

    def callback(indata: np.ndarray, frames: int, _time: Any, status: Any) -> None:
        if status:
            sender.stats.device_xruns += 1
        sender.push(indata.copy())

    sender.start()
    try:
        with open_stream(sd.InputStream, device=input_device, samplerate=sender.sample_rate,
                         blocksize=sender.frame_size, dtype="float32", latency="low",
                         channels=sender.streams * sender.codec.input_channels, callback=callback):
            logging.info("### sending [press Return or Ctrl-C to quit] ###")
            wait_for_stop(duration, sender.check)
        sender.drain(timeout=5.0)
        sender.finish(sender.stats.frames * sender.frame_size)
    finally:
        sender.close()


def bind_udp(host: str, port: int) -> socket.socket:
    """A UDP socket bound to host:port, or a CodecError when the port is taken or not ours."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        sock = socket.socket(infos[0][0], socket.SOCK_DGRAM)
    except (socket.gaierror, OSError) as error:
        raise CodecError(f"cannot use address {host}: {error}") from None
    try:
        sock.bind(infos[0][4])
    except OSError as error:
        sock.close()
        raise CodecError(f"cannot listen on {host}:{port} ({error.strerror or error}): "
                         "the port is in use or not allowed, pick another --receive port or --bind") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    except OSError:
        pass
    return sock


class PlaybackBuffer:
    """Samples waiting for the sound card; the card's callback takes what is there (silence if not).

    Audio that comes faster than the card plays it (a sender's clock a little fast, a burst after a
    network stall, an unpaced sender) would wait ever longer. A paced stream leaves at most the newest
    block and one card period waiting; once more than `max_samples` wait beyond those, the oldest
    blocks are dropped (`dropped` counts their samples). 0: never dropped.
    """

    def __init__(self, channels: int, max_samples: int = 0) -> None:
        self.channels = channels
        self.max_samples = max_samples
        self.blocks: deque[np.ndarray] = deque()
        self.offset = 0
        self.waiting = 0  # samples not yet played
        self.period = 0  # the most samples the card has taken at once
        self.dropped = 0
        self.lock = threading.Lock()
        self.underruns = 0

    def put(self, audio: np.ndarray) -> None:
        with self.lock:
            self.blocks.append(audio)
            self.waiting += audio.shape[0]
            allowed = self.max_samples + audio.shape[0] + self.period
            while self.max_samples and len(self.blocks) > 1 and self.waiting > allowed:
                late = self.blocks.popleft().shape[0] - self.offset
                self.waiting -= late
                self.dropped += late
                self.offset = 0

    def callback(self, outdata: np.ndarray, frames: int, _time: Any, status: Any) -> None:
        filled = 0
        with self.lock:
            self.period = max(self.period, frames)
            while filled < frames and self.blocks:
                block = self.blocks[0]
                take = min(frames - filled, block.shape[0] - self.offset)
                outdata[filled:filled + take] = block[self.offset:self.offset + take]
                filled += take
                self.offset += take
                self.waiting -= take
                if self.offset == block.shape[0]:
                    self.blocks.popleft()
                    self.offset = 0
        if filled < frames:
            self.underruns += 1
            outdata[filled:] = 0


class Receiver:
    """UDP packets -> decoder -> audio, in frame order; lost packets concealed, bad ones counted.

    A gap in the frame numbers is filled by decoding the last frame's codes again, faded out over
    FADE_SECONDS (silence when nothing came yet); the next real frame fades back in. `keep_output`
    holds the decoded audio for `output_audio()`; without it memory stays the same however long it runs.
    """

    def __init__(self, codec: StreamingCodec, sock: socket.socket, expect_frames: int | None = None,
                 idle_timeout: float | None = None, play: Callable[[np.ndarray], None] | None = None,
                 duration: float | None = None, keep_output: bool = True) -> None:
        self.codec = codec
        self.socket = sock
        self.expect_frames = expect_frames
        self.idle_timeout = idle_timeout
        self.duration = duration
        self.play = play
        self.bits = bits_per_code(codec.codebook_size)
        self.decoder = codec.decoder_hash()[:packet.DECODER_BYTES]
        self.fade_samples = max(1, int(FADE_SECONDS * codec.sample_rate))
        self.max_gap = int(MAX_CONCEAL_SECONDS * codec.frame_rate)
        self.stats = StreamStats(0, codec.sample_rate)
        self.counts = dict.fromkeys(
            ("packets received", "packets lost (concealed)", "frames concealed", "packets late or duplicate",
             "packets corrupt", "packets foreign"), 0)
        self.chunks: list[np.ndarray] | None = [] if keep_output else None
        self.session: int | None = None
        self.streams = 0
        self.next_frame = 0
        self.next_seq = 0
        self.last_codes: np.ndarray | None = None
        self.gain = 1.0
        self.n_samples: int | None = None
        self.stopped = threading.Event()

    @property
    def output_channels(self) -> int:
        return max(self.streams, 1) * self.codec.output_channels

    def run(self) -> None:
        """Receive until END, --expect_frames packets, --idle_timeout seconds of silence, --duration
        seconds from the start, or stop()."""
        self.codec.reset(1)
        last_packet = time.monotonic()
        deadline = None if self.duration is None else last_packet + self.duration
        self.socket.settimeout(POLL_SECONDS * 2)
        while not self.stopped.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                logging.info(f"{self.duration:g} s passed: stopping")
                return
            try:
                datagram = self.socket.recv(65536)
            except TimeoutError:
                if self.idle_timeout is not None and time.monotonic() - last_packet > self.idle_timeout:
                    logging.info(f"no packet for {self.idle_timeout:g} s: stopping")
                    return
                continue
            if self._handle(datagram):
                last_packet = time.monotonic()
            if self.n_samples is not None:
                return
            if self.expect_frames is not None and self.next_seq >= self.expect_frames:
                return

    def stop(self) -> None:
        self.stopped.set()

    def _handle(self, datagram: bytes) -> bool:
        """Process one datagram; True when it was a packet of our stream.

        Until a stream is followed, a packet of this link in another format version, or from a sender
        with another model (its decoder fingerprint), stops the receiver with a CodecError: decoding
        it would give silence or noise. Once one is followed, such packets are foreign (another sender)."""
        try:
            received = packet.decode(datagram)
        except packet.PacketError as error:
            if error.version is not None and self.session is None:
                raise CodecError(f"the sender's packets are of stream format version {error.version}, this receiver "
                                 f"reads version {packet.VERSION}: run sender and receiver from the same toolkit "
                                 "version") from None
            self.counts["packets foreign" if error.foreign else "packets corrupt"] += 1
            return False
        if received.decoder != self.decoder:
            if self.session is None:
                raise CodecError(f"the sender codes with another model (decoder {received.decoder.hex()}, this "
                                 f"receiver's is {self.decoder.hex()}): start the receiver "
                                 "with the sender's --model (or --encoder/--decoder)")
            self.counts["packets foreign"] += 1
            return False
        if self.session is None:
            self.session = received.session
        if received.session != self.session:
            self.counts["packets foreign"] += 1
            return False
        if received.kind == packet.KIND_END:
            if self._too_far_ahead(received):
                self.counts["packets corrupt"] += 1
                return False
            self._conceal_until(received.frame_index, received.seq)
            self.n_samples = received.n_samples
            return True
        codes = received.codes
        streams, n_codebooks = codes.shape[:2]
        if received.code_bits != self.bits or n_codebooks > self.codec.n_codebooks or codes.max() >= \
                self.codec.codebook_size or (self.streams and streams != self.streams):
            self.counts["packets foreign"] += 1
            return False
        if received.frame_index < self.next_frame or received.seq < self.next_seq:
            self.counts["packets late or duplicate"] += 1
            return True
        if self._too_far_ahead(received):
            self.counts["packets corrupt"] += 1
            return False
        if not self.streams:
            self.streams = streams
            if streams > 1:
                self.codec.reset(streams)
        self.counts["packets received"] += 1
        self._conceal_until(received.frame_index, received.seq)
        start = time.perf_counter()
        audio = self._decode(codes)
        self.stats.decoder_times.append(time.perf_counter() - start)
        latency = time.time() - received.capture_us / 1e6
        if abs(latency) <= MAX_LATENCY_SECONDS:
            self.stats.latencies.append(latency)
        if self.gain < 1.0:
            ramp = np.minimum(1.0, self.gain + np.arange(1, audio.shape[0] + 1) / self.fade_samples)
            audio = audio * ramp[:, None].astype(np.float32)
            self.gain = float(ramp[-1])
        self.last_codes = codes[..., -1:]
        self.next_frame = received.frame_index + codes.shape[-1]
        self.next_seq = received.seq + 1
        self._emit(audio)
        return True

    def _too_far_ahead(self, received: packet.Packet) -> bool:
        """Whether a packet's frame_index or seq lies more than MAX_CONCEAL_SECONDS of frames ahead of the
        stream: following it would conceal that long, or make every later packet look late."""
        return (received.frame_index - self.next_frame > self.max_gap
                or received.seq - self.next_seq > self.max_gap)

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        decoded = self.codec.decode(torch.from_numpy(np.ascontiguousarray(codes)))
        return StreamingCodec.audio_from_streams(decoded).astype(np.float32)

    def _conceal_until(self, frame_index: int, seq: int) -> None:
        gap = frame_index - self.next_frame
        if gap <= 0:
            return
        self.counts["packets lost (concealed)"] += max(seq - self.next_seq, 1)
        self.counts["frames concealed"] += gap
        if self.last_codes is None:
            audio = np.zeros((gap * self.codec.hop_length, self.output_channels), np.float32)
        else:
            audio = self._decode(np.repeat(self.last_codes, gap, axis=-1))
        ramp = np.maximum(0.0, self.gain - np.arange(1, audio.shape[0] + 1) / self.fade_samples)
        self.gain = float(ramp[-1])
        self.next_frame = frame_index
        self.next_seq = seq
        self._emit(audio * ramp[:, None].astype(np.float32))

    def _emit(self, audio: np.ndarray) -> None:
        if self.chunks is not None:
            self.chunks.append(audio)
        if self.play is not None:
            self.play(audio)

    def output_audio(self) -> np.ndarray:
        """The decoded stream, cut to the sender's length when its END came, aligned with the sender's
        input: the model's output delay taken off the front."""
        if self.chunks is None:
            raise CodecError("this receiver kept no output (keep_output=False): make it with keep_output=True "
                             "to dump it")
        audio = (np.concatenate(self.chunks) if self.chunks
                 else np.zeros((0, self.output_channels), np.float32))
        audio = audio if self.n_samples is None else audio[:self.n_samples]
        return audio[self.codec.output_delay:]

    def report(self) -> str:
        self.stats.frame_size = self.codec.hop_length
        self.stats.frames = self.next_frame
        self.stats.frame_drops = self.counts["frames concealed"]
        self.stats.counters = dict(self.counts)
        return self.stats.report()


def receive(receiver: Receiver, output_device: int | str | None, play: bool, max_latency: float = 0.0) -> None:
    """Run `receiver` until it stops (or Ctrl-C), playing what it decodes when `play`, at most
    `max_latency` seconds behind the block playing (0: however far; `PlaybackBuffer`)."""
    sd = import_sounddevice() if play else None
    buffer: PlaybackBuffer | None = None
    output = None

    def play_audio(audio: np.ndarray) -> None:
        nonlocal buffer, output
        if buffer is None:
            buffer = PlaybackBuffer(audio.shape[1], round(max_latency * receiver.codec.sample_rate))
            output = open_stream(sd.OutputStream, device=output_device, samplerate=receiver.codec.sample_rate,
                                 dtype="float32", latency="low", channels=audio.shape[1], callback=buffer.callback)
            output.start()
        buffer.put(audio)

    if play:
        receiver.play = play_audio
    try:
        receiver.run()
    except KeyboardInterrupt:
        logging.info("stopping")
    finally:
        receiver.socket.close()
        if output is not None:
            output.stop()
            output.close()
        if buffer is not None:
            receiver.stats.device_xruns = buffer.underruns
            receiver.counts["frames dropped (playback behind)"] = buffer.dropped // receiver.codec.hop_length

