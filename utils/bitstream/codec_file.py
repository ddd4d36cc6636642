"""Compressed files: audio -> `.adc` (codes in the container of `utils.bitstream.adc`) -> audio.

Decoding a file gives the same audio as coding it in memory with `StreamingCodec.code` (and so as
demoFile.py): the receiver starts from the same warmed-up state and sees the same codes.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from utils.bitstream.adc import AdcStreamReader, StreamHeader, encode_adc, save_adc
from utils.bitstream.entropy import EntropyModel
from utils.errors import CodecError

if TYPE_CHECKING:  # the codec is only passed in: the byte formats import no model
    from utils.audiodec import StreamingCodec


def entropy_table_path(encoder_checkpoint: str) -> str:
    """Where a model's entropy table lives: beside its encoder checkpoint, same stem."""
    return os.path.splitext(encoder_checkpoint)[0] + ".entropy"


def load_entropy_model(codec: StreamingCodec, path: str | None, wanted: bytes | None = None) -> EntropyModel:
    """The entropy table at `path`, for coding; with `wanted` (a file's table hash), for decoding that file."""
    if not path or not os.path.isfile(path):
        if wanted is not None:  # a table fitted now would be another one: only the file's own decodes it
            raise CodecError(f"the file is entropy-coded with table {wanted.hex()} of model '{codec.name}', which "
                             f"is not at {path}: give that table with --entropy_table")
        raise CodecError(
            f"no entropy table for model '{codec.name}' ({path}): build one with `codec.py fit-entropy`"
        )
    model = EntropyModel.load(path)
    if (model.n_codebooks, model.codebook_size) != (codec.n_codebooks, codec.codebook_size):
        raise CodecError(f"entropy table {path} is for another codebook layout: rebuild it with fit-entropy")
    return model


def encode_to_file(
    codec: StreamingCodec,
    data: np.ndarray,
    path: str,
    n_codebooks: int | None = None,
    entropy_model: EntropyModel | None = None,
) -> StreamHeader:
    """Code samples (T, C) at the codec's rate and write them to `path`; return the header.

    With `entropy_model` the payload is range-coded, unless that would not make the file smaller (audio
    unlike the table's, or too short for it to pay): then it is written raw, which needs no table.
    """
    kept = codec.checked_codebooks(n_codebooks)
    streams = codec.streams_from_audio(data)
    codes = codec.encode_signal(streams)
    header = stream_header(codec, streams.shape[0], data.shape[0], kept)
    codes = codes[:, :kept].cpu().numpy()
    packed = encode_adc(header, codes)
    if entropy_model is not None:
        entropy_coded = encode_adc(header, codes, entropy_model)
        if len(entropy_coded) < len(packed):
            packed = entropy_coded
    return save_adc(path, packed)


def stream_header(codec: StreamingCodec, channels: int, n_samples: int, n_codebooks: int) -> StreamHeader:
    """The `.adc` header of `channels` streams of `n_samples` coded by `codec` with its first `n_codebooks`
    (the codes `StreamingCodec.code` gives).

    The header counts what was coded: a model with an output delay of D samples codes the input and D
    zeros (`StreamingCodec.coded_length`), and its decoder gives back the input's length from sample D on.
    """
    return StreamHeader(
        sample_rate=codec.sample_rate, hop=codec.hop_length, channels=channels,
        n_samples=codec.coded_length(n_samples), n_codebooks=n_codebooks, codebook_size=codec.codebook_size,
        model_name=codec.registry_name, decoder_hash=codec.decoder_hash(),
    )


def _check_compatible(codec: StreamingCodec, header: StreamHeader) -> None:
    header.check_decoder(codec.decoder_hash())
    coded = f"model '{header.named_model}'" if header.named_model else "other checkpoints"
    for field, in_file, in_model in (("sample rate", header.sample_rate, codec.sample_rate),
                                     ("hop", header.hop, codec.hop_length),
                                     ("codebook size", header.codebook_size, codec.codebook_size)):
        if in_file != in_model:
            raise CodecError(f"the file was coded by {coded} with {field} {in_file}, this model's is {in_model}: "
                             "decode it with the model it names")
    if header.n_codebooks > codec.n_codebooks:
        raise CodecError(f"the file was coded by {coded} with {header.n_codebooks} codebooks, this model has "
                         f"{codec.n_codebooks}: decode it with the model it names")


def decode_codes(codec: StreamingCodec, header: StreamHeader, codes: np.ndarray) -> np.ndarray:
    """Codes (channels, K, frames) of a file -> samples (n_samples - output delay, channels * C_out)."""
    _check_compatible(codec, header)
    length = max(0, header.n_samples - codec.output_delay)
    return codec.audio_from_streams(codec.decode_signal(torch.from_numpy(codes), length))


def decode_stream(
    codec: StreamingCodec,
    pieces: Iterable[bytes],
    frames_per_step: int = 1,
    entropy_model: EntropyModel | None = None,
) -> Iterator[np.ndarray]:
    """Decode an `.adc` byte stream as it arrives (an iterable of byte pieces): yields samples
    (n, channels * C_out) per step.

    Audio comes out as soon as `frames_per_step` frames are complete; the model's output delay is taken
    off the front and the tail beyond the file's length is cut, and a truncated or corrupt stream raises
    at the end (after what was decoded). An entropy-coded stream needs the `entropy_model` it was
    written with, and its frames all come out once the whole payload has arrived.
    """
    if isinstance(pieces, (bytes, bytearray, memoryview)):
        raise CodecError("decode_stream takes an iterable of byte pieces, got the bytes themselves: pass [data]")
    if isinstance(frames_per_step, bool) or not isinstance(frames_per_step, (int, np.integer)) or frames_per_step < 1:
        raise CodecError(f"frames_per_step {frames_per_step!r}: give a whole number of frames, 1 or more")
    reader = AdcStreamReader(entropy_model)
    # A whole file's frames may wait at once (entropy-coded, or one piece): a list cut at its head copies the rest.
    pending: deque[np.ndarray] = deque()
    emitted = 0
    header = None
    for piece in pieces:
        frames = reader.feed(piece)
        if header is None and reader.header is not None:
            header = reader.header
            _check_compatible(codec, header)
            codec.reset(header.channels)
        pending.extend(frames)
        while len(pending) >= frames_per_step:
            batch = [pending.popleft() for _ in range(frames_per_step)]
            yield _decode_frames(codec, batch, header, emitted)
            emitted += frames_per_step * codec.hop_length
    if pending:
        yield _decode_frames(codec, list(pending), header, emitted)
    reader.close()


def _decode_frames(codec: StreamingCodec, frames: list[np.ndarray], header: StreamHeader, emitted: int) -> np.ndarray:
    """The decoder's samples from its `emitted`-th on, less those before its output delay or past the file."""
    codes = torch.from_numpy(np.stack(frames, axis=-1))
    samples = codec.audio_from_streams(codec.decode(codes))
    start = min(max(0, codec.output_delay - emitted), samples.shape[0])
    return samples[start : max(start, header.n_samples - emitted)]
