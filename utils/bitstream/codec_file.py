"""Compressed files: audio -> `.adc` (codes in the container of `utils.bitstream.adc`) -> audio.

Decoding a file gives the same audio as coding it in memory with `StreamingCodec.code` (and so as
demoFile.py): the receiver starts from the same warmed-up state and sees the same codes. `FileDecoder`
decodes files that may name different models (a folder of them), loading each model once.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from utils.bitstream.adc import AdcStreamReader, StreamHeader, encode_adc, open_adc, save_adc
from utils.bitstream.entropy import EntropyModel
from utils.errors import CodecError

if TYPE_CHECKING:  # the codec is only passed in: the byte formats import no model
    from utils.audiodec import StreamingCodec


def entropy_table_path(encoder_checkpoint: str) -> str:
    """Where a model's entropy table lives: beside its encoder checkpoint, same stem."""
    return os.path.splitext(encoder_checkpoint)[0] + ".entropy"


def model_entropy_table(codec: StreamingCodec, given: str | None = None) -> str | None:
    """The entropy table to use with `codec`: `given`, else the one beside its encoder checkpoint (None
    for a codec built without one)."""
    return given or (entropy_table_path(codec.encoder_checkpoint) if codec.encoder_checkpoint else None)


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
    data: np.ndarray | Iterable[np.ndarray],
    path: str,
    n_codebooks: int | None = None,
    entropy_model: EntropyModel | None = None,
) -> StreamHeader:
    """Code samples (T, C) at the codec's rate, whole or as consecutive blocks (a long file read as it is
    coded: `utils.audio.AudioInput`), and write them to `path`; return the header.

    With `entropy_model` the payload is range-coded, unless that would not make the file smaller (audio
    unlike the table's, or too short for it to pay): then it is written raw, which needs no table.
    """
    kept = codec.checked_codebooks(n_codebooks)
    codes, samples = codec.encode_audio(data)
    header = stream_header(codec, codes.shape[0], samples, kept)
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


@contextlib.contextmanager
def _memory_named(source: str | os.PathLike, header: StreamHeader) -> Iterator[None]:
    """A decoding that runs out of memory as a CodecError naming `source`."""
    try:
        yield
    except (MemoryError, RuntimeError) as error:
        if isinstance(error, RuntimeError) and "allocate" not in str(error):
            raise
        raise CodecError(f"{source}: decoding its {header.channels} streams needs more memory than is free: "
                         "decode it on a machine with more memory") from None


class FileDecoder:
    """Decodes `.adc` files to audio, loading each model (and entropy table) the files need once.

    `load_model(name)` gives the codec called `name`: `model`, where given, for every file (a registry
    name, or whatever else `load_model` takes, such as a key for checkpoints), else the model each file
    names. An entropy-coded file is decoded with the table at `entropy_table`, else with the one beside
    its model's encoder checkpoint. A file that would decode to more than `max_channels` channels (where
    given: what the output format holds) is refused before it is decoded.
    """

    def __init__(
        self,
        load_model: Callable[[str], StreamingCodec],
        model: str | None = None,
        entropy_table: str | None = None,
        max_channels: int | None = None,
    ) -> None:
        self.load_model, self.model = load_model, model
        self.entropy_table, self.max_channels = entropy_table, max_channels
        self.codecs: dict[str, StreamingCodec] = {}
        self.tables: dict[str, EntropyModel] = {}

    def decode(self, source: str | os.PathLike) -> tuple[np.ndarray, int]:
        """The audio of the `.adc` file `source`, (n_samples - output delay, channels * C_out), and its
        sample rate."""
        header, codec, codes = self._opened(source)
        with _memory_named(source, header):
            samples = decode_codes(codec, header, codes)
        return samples, header.sample_rate

    def decode_blocks(self, source: str | os.PathLike) -> tuple[Iterator[np.ndarray], int, int]:
        """`decode`'s audio as it is decoded: (pieces (n, channels * C_out) whose join is `decode`'s
        samples, the sample rate, channels * C_out). The file is read and checked now; a piece is
        decoded when it is asked for, so a long file's audio can be written without all of it in memory."""
        header, codec, codes = self._opened(source)
        _check_compatible(codec, header)
        length = max(0, header.n_samples - codec.output_delay)
        pieces = codec.decode_signal_blocks(torch.from_numpy(codes), length)

        def samples() -> Iterator[np.ndarray]:
            with _memory_named(source, header):
                for piece in pieces:
                    yield codec.audio_from_streams(piece)

        return samples(), header.sample_rate, header.channels * codec.output_channels

    def _opened(self, source: str | os.PathLike) -> tuple[StreamHeader, StreamingCodec, np.ndarray]:
        """The header, codec and codes (channels, K, frames) of `source`, its channels checked."""
        adc = open_adc(source)
        header = adc.header
        name, codec = self._codec_for(source, header)
        channels = header.channels * codec.output_channels
        if self.max_channels is not None and channels > self.max_channels:
            raise CodecError(f"{source} decodes to {channels} channels, more than a WAV file holds "
                             f"({self.max_channels}): the file is corrupt, or decode it with the Python API")
        return header, codec, adc.codes(self._table_for(name, codec, header) if header.entropy_coded else None)

    def _codec_for(self, source: str | os.PathLike, header: StreamHeader) -> tuple[str, StreamingCodec]:
        """The name and codec to decode `source` with, loaded on the first file that needs it."""
        name = self.model or header.named_model
        if not name:
            raise CodecError(f"{source} names no model (it was coded with checkpoints outside the registry): "
                             "decode it with the encoder and decoder checkpoints it was coded with (codec.py "
                             "decode --encoder/--decoder; from Python, FileDecoder(load_model, model=KEY) with a "
                             "load_model(KEY) that loads them)")
        if name not in self.codecs:
            self.codecs[name] = self.load_model(name)
        return name, self.codecs[name]

    def _table_for(self, name: str, codec: StreamingCodec, header: StreamHeader) -> EntropyModel:
        """The entropy table of model `name`, loaded on the first entropy-coded file (whose table it must be)."""
        if name not in self.tables:
            self.tables[name] = load_entropy_model(
                codec, model_entropy_table(codec, self.entropy_table), header.entropy_hash
            )
        return self.tables[name]


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
    return samples[codec.signal_slice(emitted, samples.shape[0], header.n_samples)]
