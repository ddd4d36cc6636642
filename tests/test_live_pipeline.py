"""utils/live/pipeline.py's plumbing, with a stand-in codec that returns its input: what the queues
hold while a long input streams through."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from utils.live import pipeline

FRAME = 300


class EchoCodec:
    """What `Streamer` uses of a StreamingCodec: one-sample hop, codes = samples, audio = codes;
    decoding takes `decode_seconds` (a coder slower than its input)."""

    hop_length, sample_rate, input_channels, output_channels, output_delay = 1, 16000, 1, 1, 0
    device = torch.device("cpu")

    def __init__(self, decode_seconds: float = 0.0) -> None:
        self.decode_seconds = decode_seconds

    def reset(self, batch_size: int = 1, frame_size: int | None = None) -> None:
        pass

    def streams_from_audio(self, data: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(data.T)).unsqueeze(1)

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        return audio

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        if self.decode_seconds:
            time.sleep(self.decode_seconds)
        return codes


@pytest.mark.parametrize("decode_seconds", [0.0, 0.001], ids=["instant", "slow-decoder"])
def test_push_unpaced_holds_no_more_than_the_frames_in_flight(decode_seconds: float) -> None:
    """bin/benchmark.py --live: however long the input, the decoded blocks waiting to be taken stay
    within what the bounded queues let be in flight, and every frame comes out, in order."""
    codec = EchoCodec(decode_seconds)
    streamer = pipeline.Streamer(codec, codec, FRAME, 1, max_latency=0, worker_threads=1, keep_input=False)
    bound = streamer.encoder_queue.maxsize + streamer.decoder_queue.maxsize + 3  # + each worker's frame, + 1
    frames = 8 * bound
    waiting = []
    push = streamer.push

    def push_and_count(block: np.ndarray, **options) -> int:
        index = push(block, **options)
        waiting.append(streamer.output_queue.qsize())
        return index

    streamer.push = push_and_count
    data = np.arange(frames * FRAME, dtype=np.float32)[:, None] / (frames * FRAME)
    streamer.start()
    try:
        pipeline.push_unpaced(streamer, data)
    finally:
        streamer.close()
    assert len(waiting) == frames and max(waiting) <= bound, f"{max(waiting)} decoded blocks waiting"
    assert streamer.stats.frame_drops == 0 and streamer.pending == 0
    np.testing.assert_array_equal(streamer.output_audio(), data)
