"""Live streaming through a codec, in one process (here) or over UDP (utils/live/udp.py):
capture -> encoder thread -> decoder thread -> playback.

Three ways to run it, all built from the same parts:

- `Streamer`: transmitter and receiver in one process (the original's demo). A sound-card callback
  (or a file clock) calls `process(block)`: the block goes into a bounded encoder queue, the
  encoder thread turns it into codes, the decoder thread into audio, and the callback plays the
  oldest decoded block. When a block comes out later than `max_latency` after it went in, every
  block still in flight is dropped, so the delay cannot keep growing on a slow machine.
- `Sender`: capture -> encoder thread -> UDP packets (`utils.bitstream.packet`).
- `Receiver`: UDP packets -> decoder -> playback or file, concealing lost packets.

Blocks are numpy `(frame_size, channels)` float32, as sound cards deliver them; a mono model codes
each channel as its own stream (`StreamingCodec.streams_from_audio`). Frames are numbered from 0;
the receiver's audio is kept by frame number, so a file streamed through here lines up sample for
sample with its input and equals `StreamingCodec.code` of it (Contract 2), apart from dropped frames.
"""

from __future__ import annotations

import logging
import math
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from utils.audiodec import StreamingCodec
from utils.errors import CodecError
from utils.live.devices import import_sounddevice, open_stream
from utils.runtime.cpu_process import in_passing_thread, release_pool

POLL_SECONDS = 0.05
DRAIN_SECONDS = 60.0


# --------------------------------------------------------------------------- statistics

class Timings:
    """Seconds, one per frame, appended by one thread: a float64 array that doubles when full, 8 bytes
    a frame (a list of floats takes 32), so that an hours-long stream keeps its statistics in a few MB."""

    def __init__(self) -> None:
        self._seconds = np.empty(1024)
        self._count = 0

    def append(self, seconds: float) -> None:
        if self._count == self._seconds.shape[0]:
            self._seconds = np.concatenate([self._seconds, np.empty_like(self._seconds)])
        self._seconds[self._count] = seconds
        self._count += 1

    def __len__(self) -> int:
        return self._count

    @property
    def seconds(self) -> np.ndarray:
        return self._seconds[:self._count]


def _mean_std_ms(times: Timings) -> str:
    if not times:
        return "n/a"
    values = times.seconds * 1000.0
    return f"{values.mean():.2f} +- {values.std():.2f}"


@dataclass
class StreamStats:
    """What a run measured; `report()` prints it like the original demo."""

    frame_size: int
    sample_rate: int
    encoder_times: Timings = field(default_factory=Timings)
    decoder_times: Timings = field(default_factory=Timings)
    latencies: Timings = field(default_factory=Timings)
    frames: int = 0
    frame_drops: int = 0
    device_xruns: int = 0
    counters: dict[str, int] = field(default_factory=dict)

    def report(self) -> str:
        frame_ms = 1000.0 * self.frame_size / self.sample_rate
        drop_ratio = 100.0 * self.frame_drops / max(self.frames, 1)
        lines = [
            "#" * 80,
            f"frame size:                        {self.frame_size} samples ({frame_ms:.2f} ms)",
            f"encoder processing time (ms):      {_mean_std_ms(self.encoder_times)}",
            f"decoder processing time (ms):      {_mean_std_ms(self.decoder_times)}",
            f"system latency (ms):               {_mean_std_ms(self.latencies)}",
            f"frame drops:                       {self.frame_drops} ({drop_ratio:.2f}%) of {self.frames} frames",
        ]
        if self.device_xruns:
            lines.append(f"device over/underruns:             {self.device_xruns}")
        lines += [f"{name + ':':35s}{value}" for name, value in self.counters.items()]
        lines.append("#" * 80)
        return "\n".join(lines)


# --------------------------------------------------------------------------- worker threads

class Worker(threading.Thread):
    """Takes (index, payload, stamp) items from `source`, puts (index, step(...), stamp) in `sink`.

    Items whose frame `is_dropped` are skipped. A failure is kept in `error` (the owner re-raises
    it in the main thread) and stops the worker. `threads`, when set, is the number of intra-op
    threads this worker's torch operations use (its own OpenMP team; other threads keep theirs).
    `times` collects the duration of each step (None: the step records its own).
    """

    threads: int | None = None

    def __init__(self, name: str, source: queue.Queue, step: Callable[[int, Any, float], Any], sink: queue.Queue | None,
                 times: Timings | None, stop: threading.Event, is_dropped: Callable[[int], bool]) -> None:
        super().__init__(name=name, daemon=True)
        self.source, self.step, self.sink, self.times = source, step, sink, times
        self.stop, self.is_dropped = stop, is_dropped
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            if self.threads is not None:
                torch.set_num_threads(self.threads)
            while not self.stop.is_set():
                try:
                    index, payload, stamp = self.source.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    continue
                if self.is_dropped(index):
                    continue
                start = time.perf_counter()
                result = self.step(index, payload, stamp)
                if self.times is not None:
                    self.times.append(time.perf_counter() - start)
                if self.sink is not None:
                    self._put((index, result, stamp))
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            self.error = error
            self.stop.set()

    def _put(self, item: Any) -> None:
        while not self.stop.is_set():
            try:
                self.sink.put(item, timeout=POLL_SECONDS)
                return
            except queue.Full:
                continue


def _queue_frames(max_latency: float, frame_size: int, sample_rate: int) -> int:
    """Queue bound: as many frames as fit in the latency bound, at least 2."""
    if max_latency <= 0:
        return 64
    return max(2, math.ceil(max_latency * sample_rate / frame_size) + 1)


class Pipeline:
    """Frame numbering, drop bookkeeping, input/output dumps and worker supervision.

    `keep_input`: hold every captured block for `input_audio()`; without it a stream's memory stays
    the same however long it runs.
    """

    def __init__(self, frame_size: int, hop_length: int, sample_rate: int, max_latency: float,
                 keep_input: bool = True) -> None:
        check_frame_size(frame_size, hop_length)  # before the queue is sized by it
        self.frame_size = frame_size
        self.sample_rate = sample_rate
        self.max_latency = max_latency
        self.stats = StreamStats(frame_size, sample_rate)
        self.stop_event = threading.Event()
        self.workers: list[Worker] = []
        self.encoder_queue: queue.Queue = queue.Queue(_queue_frames(max_latency, frame_size, sample_rate))
        self.input_dump: list[np.ndarray] | None = [] if keep_input else None
        self._lock = threading.Lock()
        self._pending: dict[int, float] = {}
        self._next_index = 0

    def is_dropped(self, index: int) -> bool:
        with self._lock:
            return index not in self._pending

    def drop(self, indices: list[int] | None = None) -> None:
        """Give up frames still in flight (all of them when `indices` is None)."""
        with self._lock:
            for index in list(self._pending) if indices is None else indices:
                if self._pending.pop(index, None) is not None:
                    self.stats.frame_drops += 1

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def _arrived(self, index: int) -> float | None:
        """Mark frame `index` done; its push time, or None when it was dropped meanwhile."""
        with self._lock:
            return self._pending.pop(index, None)

    def push(self, block: np.ndarray, wait: bool = False, stamp: float | None = None) -> int:
        """Queue one captured block (frame_size, channels); returns its frame number.

        Without `wait` a full queue drops the block (the machine is not keeping up).
        """
        index = self._next_index
        self._next_index += 1
        self.stats.frames += 1
        if self.input_dump is not None:
            self.input_dump.append(block)
        now = time.perf_counter()
        with self._lock:
            self._pending[index] = now
        try:
            self.encoder_queue.put((index, block, time.time() if stamp is None else stamp),
                                   block=wait, timeout=DRAIN_SECONDS if wait else None)
        except queue.Full:
            self.drop([index])
        return index

    def start(self) -> None:
        # The coding moves to the worker threads. An idle OpenMP pool in this thread would make every
        # parallel region of theirs wake its team through the kernel: the set-up runs in a thread
        # that ends (its pool with it, on any runtime), and a pool this thread has anyway is released.
        in_passing_thread(self._prepare)
        release_pool()
        for worker in self.workers:
            worker.start()

    def _prepare(self) -> None:
        """The set-up before the workers start (subclasses: reset, tune and trace the codec)."""

    def check(self) -> None:
        """Re-raise a worker's failure in the calling thread."""
        for worker in self.workers:
            if worker.error is not None:
                error = worker.error
                if isinstance(error, CodecError):
                    raise error
                raise CodecError(f"{worker.name} thread failed: {type(error).__name__}: {error}") from error

    def drain(self, timeout: float = DRAIN_SECONDS) -> None:
        """Wait until every queued frame came out or was dropped."""
        deadline = time.monotonic() + timeout
        while self.pending:
            self.check()
            if time.monotonic() > deadline:
                raise CodecError(f"the codec threads did not finish within {timeout:.0f} s")
            self._wait_for_output()

    def _wait_for_output(self) -> None:
        """Let the worker threads move on for a moment (while draining)."""
        time.sleep(POLL_SECONDS / 5)

    def close(self) -> None:
        self.stop_event.set()
        for worker in self.workers:
            worker.join(timeout=5.0)

    def input_audio(self) -> np.ndarray:
        if self.input_dump is None:
            raise CodecError("this stream kept no input (keep_input=False): make it with keep_input=True to dump it")
        return np.concatenate(self.input_dump) if self.input_dump else np.zeros((0, 1), np.float32)


def encode_step(codec: StreamingCodec) -> Callable[[np.ndarray], torch.Tensor]:
    """Block (frame_size, channels) -> codes (streams, K, frames) with the codec's transmitter."""

    def encode(block: np.ndarray) -> torch.Tensor:
        return codec.encode(codec.streams_from_audio(block))
    return encode


# --------------------------------------------------------------------------- one process

class Streamer(Pipeline):
    """Transmitter and receiver in one process: `tx` encodes, `rx` decodes (they may be one codec).

    Two ways to run: an encoder thread and a decoder thread working on consecutive frames at once,
    or one coder thread that encodes and then decodes each frame. Overlapping pays when the two
    sides cost about the same, but each thread then needs its own share of the cores: two OpenMP
    teams of the process's full thread count on the same cores oversubscribe them.
    `worker_threads` is the intra-op thread count of each of the two overlapping threads. "auto"
    (default) times both sides on silence at start: when they cost about the same (within
    `BALANCE`), the two threads overlap with half the caller's threads each; otherwise one side
    dominates, overlapping gains little and the dominant side needs every core, so one coder thread
    runs both with all of them. On the 2-core VM, full-size models with tcmalloc, 10 s of audio
    pushed unpaced (wall time / 10 s):

        model, frame     overlap, 1 thread each   overlap, 2 each   coder, 2 threads   auto picks
        sym, 300         0.41-0.55                0.56-0.69         0.68-0.80          overlap, 1
        sym, 1500        0.23                     0.26              0.29               overlap, 1
        v1, 300                                   1.75              1.31               coder
        v1, 1500         1.02-1.04                0.88-0.91         0.69               coder

    `Pipeline.start` runs the set-up (timing, tuning, tracing) in a thread that ends and releases the
    caller's OpenMP pool: an idle pool there would halve the coder thread's speed (docs/performance.md,
    "The process").

    `keep_input` and `keep_output` hold every block captured and decoded for `input_audio()` and
    `output_audio()`; a stream that dumps neither is made without them.
    """

    BALANCE = 2.0

    def __init__(self, tx: StreamingCodec, rx: StreamingCodec, frame_size: int, channels: int,
                 max_latency: float = 0.1, worker_threads: int | str = "auto", keep_input: bool = True,
                 keep_output: bool = True) -> None:
        super().__init__(frame_size, tx.hop_length, tx.sample_rate, max_latency, keep_input)
        if worker_threads != "auto" and not (isinstance(worker_threads, int) and worker_threads >= 1):
            raise CodecError(f"worker_threads {worker_threads!r}: give 'auto' or a count of 1 or more")
        self.tx, self.rx = tx, rx
        self.worker_threads = worker_threads
        self.streams = 1 if tx.input_channels > 1 else channels
        self.output_channels = self.streams * rx.output_channels
        self.decoder_queue: queue.Queue = queue.Queue(self.encoder_queue.maxsize)
        self.output_queue: queue.Queue = queue.Queue()
        self.received: dict[int, np.ndarray] | None = {} if keep_output else None
        encode = encode_step(tx)
        self.overlapping = [
            Worker("encoder", self.encoder_queue, lambda _, block, __: encode(block), self.decoder_queue,
                    self.stats.encoder_times, self.stop_event, self.is_dropped),
            Worker("decoder", self.decoder_queue, lambda _, codes, __: self._decode(codes), self.output_queue,
                    self.stats.decoder_times, self.stop_event, self.is_dropped),
        ]
        self.coder = Worker("coder", self.encoder_queue, lambda _, block, __: self._code(encode, block),
                             self.output_queue, None, self.stop_event, self.is_dropped)
        self.workers = self.overlapping  # what runs; `start` may choose the coder instead

    def _decode(self, codes: torch.Tensor) -> np.ndarray:
        return StreamingCodec.audio_from_streams(self.rx.decode(codes.to(self.rx.device))).astype(np.float32)

    def _code(self, encode: Callable[[np.ndarray], torch.Tensor], block: np.ndarray) -> np.ndarray:
        """The coder thread's step: encode, then decode, one frame (both times recorded)."""
        start = time.perf_counter()
        codes = encode(block)
        middle = time.perf_counter()
        audio = self._decode(codes)
        self.stats.encoder_times.append(middle - start)
        self.stats.decoder_times.append(time.perf_counter() - middle)
        return audio

    def _prepare(self) -> None:
        """Plan the workers (`_plan`) and start the streams afresh, tuned and traced for the workers'
        thread count (both are keyed by it): here rather than on their first frames."""
        threads = torch.get_num_threads()
        share, overlap = self._plan(threads)
        torch.set_num_threads(share)
        try:
            self._reset()
        finally:
            torch.set_num_threads(threads)
        self.workers = self.overlapping if overlap else [self.coder]
        for worker in self.workers:
            worker.threads = share

    def _reset(self) -> None:
        self.tx.reset(self.streams, frame_size=self.frame_size)
        if self.rx is not self.tx:
            self.rx.reset(self.streams, frame_size=self.frame_size)

    def _plan(self, threads: int) -> tuple[int, bool]:
        """(intra-op threads per worker, whether encoder and decoder threads overlap); see the
        class note. May code silence (the streams are reset afterwards)."""
        if self.worker_threads != "auto":
            return self.worker_threads, True
        if threads < 2 or self.tx.device.type != "cpu" or self.rx.device.type != "cpu":
            return threads, True
        self._reset()  # tuned and traced for `threads`, so that the timings below are of the steady state
        silence = torch.zeros(self.streams, self.tx.input_channels, self.frame_size, device=self.tx.device)
        encode, decode = [], []
        for _ in range(3):
            start = time.perf_counter()
            codes = self.tx.encode(silence)
            encode.append(time.perf_counter() - start)
            start = time.perf_counter()
            self.rx.decode(codes.to(self.rx.device))
            decode.append(time.perf_counter() - start)
        slow, fast = max(min(encode), min(decode)), min(min(encode), min(decode))
        return (threads // 2, True) if slow <= self.BALANCE * fast else (threads, False)

    def pull(self, timeout: float = 0.0) -> np.ndarray | None:
        """The next decoded block, or None. A block later than max_latency drops all frames in flight."""
        while True:
            try:
                index, audio, _ = self.output_queue.get(timeout=timeout) if timeout else self.output_queue.get_nowait()
            except queue.Empty:
                return None
            pushed = self._arrived(index)
            if pushed is None:
                continue
            latency = time.perf_counter() - pushed
            self.stats.latencies.append(latency)
            if self.received is not None:
                self.received[index] = audio
            if self.max_latency > 0 and latency > self.max_latency:
                self.drop()
            return audio

    def feed(self, block: np.ndarray) -> None:
        """Queue `block` for unpaced input: wait while the encoder queue is full, then take what was
        decoded meanwhile (kept for `output_audio` when asked), so that the output queue, which has no
        bound, holds no more than the frames in flight however long the input."""
        self.push(block, wait=True)
        while self.pull() is not None:
            pass

    def process(self, block: np.ndarray | None) -> np.ndarray:
        """One sound-card period: queue `block` (None = no more input), return what to play now."""
        if block is not None:
            self.push(block)
        audio = self.pull()
        return audio if audio is not None else np.zeros((self.frame_size, self.output_channels), np.float32)

    def _wait_for_output(self) -> None:
        self.pull(timeout=POLL_SECONDS)  # (collects what the decoder finished)

    def output_audio(self, n_samples: int | None = None) -> np.ndarray:
        """What the receiver produced, frame by frame in input order (dropped frames silent), aligned
        with the input: the model's output delay taken off the front (`stream_file` codes that many
        zeros after a file), cut to `n_samples` when given."""
        if self.received is None:
            raise CodecError("this stream kept no output (keep_output=False): make it with keep_output=True to dump it")
        n_frames = self._next_index
        audio = np.zeros((n_frames * self.frame_size, self.output_channels), np.float32)
        for index, block in self.received.items():
            audio[index * self.frame_size:(index + 1) * self.frame_size] = block
        audio = audio[self.rx.output_delay:]
        return audio if n_samples is None else audio[:n_samples]


def check_frame_size(frame_size: int, hop_length: int) -> None:
    if frame_size <= 0 or frame_size % hop_length:
        raise CodecError(
            f"--frame_size {frame_size} is not a positive multiple of the model's hop ({hop_length}): "
            f"use e.g. {hop_length * max(1, round(max(frame_size, 1) / hop_length))}"
        )


def file_blocks(data: np.ndarray, frame_size: int, tail: int = 0) -> Iterator[np.ndarray]:
    """(T, C) audio followed by `tail` zeros -> float32 blocks of frame_size samples; the last one
    zero-padded. With a model whose output lags its input by `tail` samples, the blocks hold what it
    needs to give out the whole input (as `StreamingCodec.code` does)."""
    for start in range(0, data.shape[0] + tail, frame_size):
        block = np.zeros((frame_size, data.shape[1]), np.float32)
        chunk = data[start:start + frame_size]
        block[:chunk.shape[0]] = chunk
        yield block


class FrameClock:
    """Sleeps until the next period of a real-time clock started at construction."""

    def __init__(self, period: float) -> None:
        self.period = period
        self.start = time.perf_counter()
        self.ticks = 0

    def wait(self) -> None:
        delay = self.start + self.ticks * self.period - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        self.ticks += 1


def push_unpaced(streamer: Streamer, data: np.ndarray) -> None:
    """Push a file's samples (T, C) through a started `streamer` as fast as it takes them (`feed`:
    its memory stays flat however long the file), and wait until the last frame is out."""
    for block in file_blocks(data, streamer.frame_size):
        streamer.feed(block)
        streamer.check()
    streamer.drain()


class StopRequest:
    """Whether a live run was asked to stop: `duration` seconds passed since it was made, or Return
    was pressed (a line on stdin). Ctrl-C is the caller's to catch."""

    def __init__(self, duration: float | None = None) -> None:
        self.duration = duration
        self.deadline = None if duration is None else time.monotonic() + duration
        self.returned = threading.Event()
        threading.Thread(target=self._read_return, daemon=True).start()

    def _read_return(self) -> None:
        try:
            line = sys.stdin.readline()
        except (OSError, ValueError, AttributeError):  # no stdin, or a closed one
            return
        if line:
            self.returned.set()

    def requested(self) -> bool:
        """True once the run should stop (said once in the log)."""
        if self.returned.is_set():
            return True
        if self.deadline is not None and time.monotonic() >= self.deadline:
            logging.info(f"{self.duration:g} s passed: stopping")
            self.deadline = -math.inf  # said once; stays due
            self.duration = None
            return True
        return False


def stream_file(pipeline: Pipeline, data: np.ndarray, pace: bool, stop: StopRequest,
                step: Callable[[np.ndarray], None], tail: int = 0) -> int:
    """Hand a file's samples (T, C), then `tail` zeros, to `step` block by block (`file_blocks`), paced
    in real time or not, until the end, `stop` or Ctrl-C (SIGTERM too); return the samples handed over
    (whole blocks, at most T + tail)."""
    clock = FrameClock(pipeline.frame_size / pipeline.sample_rate)
    blocks = 0
    try:
        for block in file_blocks(data, pipeline.frame_size, tail):
            if stop.requested():
                break
            if pace:
                clock.wait()
            step(block)
            pipeline.check()
            blocks += 1
    except KeyboardInterrupt:
        logging.info("stopping")
    return min(blocks * pipeline.frame_size, data.shape[0] + tail)


def run_file(streamer: Streamer, data: np.ndarray, pace: bool, duration: float | None = None) -> int:
    """Stream a file's samples (T, C) through the codec; paced in real time or as fast as possible;
    until its end, `duration` seconds, Return or Ctrl-C. Returns the samples of the file streamed
    (`Streamer.output_audio(n)` is their decoded audio, aligned with them).

    Unpaced, nothing is late, so nothing is dropped: the file waits for the codec instead.
    """
    stop = StopRequest(duration)
    streamer.start()
    try:
        if not pace:
            streamer.max_latency = 0
            streamed = stream_file(streamer, data, False, stop, streamer.feed, streamer.rx.output_delay)
            streamer.drain()
            return min(streamed, data.shape[0])
        streamed = stream_file(streamer, data, True, stop, streamer.process, streamer.rx.output_delay)
        clock = FrameClock(streamer.frame_size / streamer.sample_rate)
        deadline = time.monotonic() + max(streamer.max_latency, 0) * 2 + (0 if streamer.max_latency > 0 else 60)
        while streamer.pending and time.monotonic() < deadline + 1.0:
            clock.wait()
            streamer.process(None)
            streamer.check()
        streamer.drop()
        return min(streamed, data.shape[0])
    finally:
        streamer.close()


def wait_for_stop(duration: float | None, check: Callable[[], None], finished: threading.Event | None = None) -> None:
    """Block until `duration` seconds pass, Return is pressed, `finished` is set, or Ctrl-C (SIGTERM too)."""
    stop = StopRequest(duration)
    finished = finished or threading.Event()
    try:
        while not finished.wait(POLL_SECONDS):
            check()
            if stop.requested():
                return
    except KeyboardInterrupt:
        logging.info("stopping")


def run_devices(streamer: Streamer, input_device: int | str | None, output_device: int | str | None,
                duration: float | None) -> None:
    """Microphone -> codec -> speaker until Return, Ctrl-C or `duration` seconds."""
    sd = import_sounddevice()

    def callback(indata: np.ndarray, outdata: np.ndarray, frames: int, _time: Any, status: Any) -> None:
        if status:
            streamer.stats.device_xruns += 1
        outdata[:] = streamer.process(indata.copy())

    streamer.start()
    try:
        with open_stream(sd.Stream, device=(input_device, output_device), samplerate=streamer.sample_rate,
                   blocksize=streamer.frame_size, dtype="float32", latency="low",
                   channels=(streamer.streams * streamer.tx.input_channels, streamer.output_channels),
                   callback=callback):
            logging.info("### streaming [press Return or Ctrl-C to quit] ###" if duration is None
                         else f"### streaming for {duration:g} s ###")
            wait_for_stop(duration, streamer.check)
    finally:
        streamer.close()


def run_file_to_device(streamer: Streamer, data: np.ndarray, output_device: int | str | None,
                       duration: float | None = None) -> int:
    """A file as the microphone, the codec's output on a speaker; the sound card keeps the time. Until
    the file's end, `duration` seconds, Return or Ctrl-C; returns the samples of the file streamed."""
    sd = import_sounddevice()
    coded = data.shape[0] + streamer.rx.output_delay  # samples: the file, then the zeros its delay needs
    blocks = file_blocks(data, streamer.frame_size, streamer.rx.output_delay)
    finished = threading.Event()

    def callback(outdata: np.ndarray, frames: int, _time: Any, status: Any) -> None:
        if status:
            streamer.stats.device_xruns += 1
        outdata[:] = streamer.process(None if finished.is_set() else next(blocks, None))
        if streamer.stats.frames * streamer.frame_size >= coded and not streamer.pending:
            finished.set()

    streamer.start()
    try:
        with open_stream(sd.OutputStream, device=output_device, samplerate=streamer.sample_rate,
                   blocksize=streamer.frame_size, dtype="float32", latency="low",
                   channels=streamer.output_channels, callback=callback):
            limit = coded / streamer.sample_rate + DRAIN_SECONDS
            wait_for_stop(limit if duration is None else min(duration, limit), streamer.check, finished)
            finished.set()  # no more blocks from the file
        streamer.drop()
        return min(streamer.stats.frames * streamer.frame_size, data.shape[0])
    finally:
        streamer.close()


