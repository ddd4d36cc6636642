"""The codec users call: a transmitter (encoder + quantizer) and a receiver (lookup + decoder).

`StreamingCodec` wraps an AudioDec encoder checkpoint and a decoder checkpoint (symmetric
AudioDec decoder or HiFi-GAN vocoder). Every call continues the streams where the last one
stopped, so a file coded in one call or in chunks of any multiple of the hop gives the same
codes and the same waveform (Contract 2).

Like the original, the streams start from a warmed-up state: the encoder first encodes
`WARMUP_SAMPLES` zeros and the decoder decodes the resulting codes; matching this is what makes
outputs equal the original's from the first sample on.

How the steps run (native engine, TorchScript, eager) is chosen in `utils.runtime.backends`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from layers.conv import NonCausalConv1d, NonCausalConvTranspose1d
from layers.streaming import expand_streams, reset_streaming
from models.autoencoder.AudioDec import Generator as AudioDecGenerator
from utils.audio import MAX_FILE_CHANNELS, check_file_samples, integer_samples_error
from utils.bitstream.bits import bits_per_code
from utils.checkpoint import (
    check_codec_pair,
    check_hop_pair,
    load_autoencoder,
    load_generator,
    state_hash,
)
from utils.errors import CodecError
from utils.experiment_config import config_path_for, load_config, output_delay
from utils.registry import MODELS, ModelEntry, get_entry, resolve
from utils.runtime.backends import PRECISIONS, backend_on, precision_problem, streaming_steps
from utils.runtime.names import BACKENDS, DEFAULT_BACKEND

WARMUP_SAMPLES = 8192
# Longer inputs run through the streaming path in blocks of this many frames: the same result
# (Contract 2), faster, as a block's activations stay in cache (docs/performance.md).
BLOCK_FRAMES = 80
SIGNAL_BLOCKS = 16  # encoder blocks per piece of a long file read at a time (8 s at hop 300 and 48 kHz)
# Code dtypes torch reduces over only once widened (codes in a file may be stored unsigned).
_CHECKED_CODE_DTYPES = {torch.uint16: torch.int32, torch.uint32: torch.int64, torch.uint64: torch.int64}


def _in_blocks(run, x: torch.Tensor, size: int) -> torch.Tensor:
    """run() over consecutive blocks of `size` along x's last axis, outputs joined (one call when x fits)."""
    if x.shape[-1] <= size:
        return run(x)
    return torch.cat([run(x[..., start:start + size]) for start in range(0, x.shape[-1], size)], dim=-1)


def _coding(method):
    """Run `method` under inference mode, and give its tensors back as ordinary ones: inference
    tensors cannot be changed in place or saved for backward outside inference mode, which a
    caller's next line may well do. (Calls from inside inference mode get them as they are.)"""

    @functools.wraps(method)
    def run(*args, **kwargs):
        if torch.is_inference_mode_enabled():
            return method(*args, **kwargs)
        with torch.inference_mode():
            result = method(*args, **kwargs)
        return result.clone() if isinstance(result, torch.Tensor) else result

    return run


def _is_count(value: object) -> bool:
    """An integer (Python's or NumPy's), not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _checked_device(device: str | torch.device) -> torch.device:
    """`device` as a torch.device this machine can run the codec on, else a CodecError naming the fix."""
    try:
        checked = torch.device(device)
    except (RuntimeError, TypeError):
        raise CodecError(f"device {device!r} is not a device: use 'cpu' or 'cuda[:N]'") from None
    if checked.type == "meta":
        raise CodecError("device 'meta' holds no weights to code with: use 'cpu' or 'cuda[:N]'")
    if checked.type != "cpu":
        try:  # the one test that holds for every backend torch may have been built with
            torch.empty(0, device=checked)
        except (RuntimeError, AssertionError, ValueError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise CodecError(f"device '{checked}' cannot be used here ({reason}): use 'cpu'") from None
    return checked


def _check_registered_rate(entry: ModelEntry, encoder_checkpoint: str) -> None:
    """Raise CodecError unless `entry` registers the rate its encoder's config codes at: --list-models
    shows the entry's, the codec runs at the config's."""
    rate = load_config(encoder_checkpoint).get("sampling_rate")
    if rate is not None and int(rate) != entry.sample_rate:
        raise CodecError(f"model '{entry.name}' is registered at {entry.sample_rate} Hz but its config "
                         f"({config_path_for(encoder_checkpoint)}) codes {int(rate)} Hz: fix the registry entry's "
                         "sample_rate (utils.registry.MODELS)")


class StreamingCodec:
    """Encoder and decoder of one codec, with streaming state for a batch of streams.

    Shapes: waveforms (B, C, T) float32 in [-1, 1] (B independent streams); codes (B, K, frames)
    int64 in [0, codebook_size), unoffset.
    """

    def __init__(
        self,
        encoder: AudioDecGenerator,
        decoder: nn.Module,
        sample_rate: int,
        name: str = "custom",
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        backend: str = DEFAULT_BACKEND,
        output_delay: int = 0,
    ) -> None:
        if precision not in PRECISIONS:
            raise CodecError(f"unknown precision '{precision}': use one of {', '.join(PRECISIONS)}")
        if backend not in BACKENDS:
            raise CodecError(f"unknown backend '{backend}': use one of {', '.join(BACKENDS)}")
        for side, model in (("encoder", encoder), ("decoder", decoder)):
            if any(type(module) in (NonCausalConv1d, NonCausalConvTranspose1d) for module in model.modules()):
                raise CodecError(f"the {side} is non-causal (mode: noncausal): streaming needs a causal model")
        check_hop_pair(encoder.hop_length, decoder.hop_length, f"{name} codec")
        self.name = name
        self.sample_rate = sample_rate
        self.device = _checked_device(device)
        self.encoder = encoder.to(self.device)
        self.decoder = decoder.to(self.device)
        self.hop_length = encoder.hop_length
        # Samples by which the output lags the input beyond the streaming path's own alignment (the
        # config's output_delay, which the model was trained with): whole-signal passes take it off.
        self.output_delay = output_delay
        # Reduced precision is for the receiver only: it in the encoder would flip VQ codes,
        # whereas the codes must not depend on how the far end decodes them. The native engine
        # keeps the decoder's convolution weights in bf16 or int8; activations, sums and states
        # stay float32.
        self.precision = precision
        self.input_channels = encoder.input_channels
        self.output_channels = getattr(decoder, "output_channels", getattr(decoder, "out_channels", 1))
        self.n_codebooks = encoder.n_codebooks
        self.codebook_size = encoder.codebook_size
        self.backend = backend
        steps = streaming_steps(backend_on(backend, self.device), self.encoder, self.decoder, self._transmit,
                                self._receive, precision)
        self._encode_chunk, self._decode_codes, self._decode_latent = steps.encode, steps.decode, steps.decode_latent
        self.native_sides = steps.native_sides  # the sides the native engine runs ("encoder", "decoder")
        problem = precision_problem(precision, self.device, self.decoder, self.native_sides)
        if problem:
            raise CodecError(problem)
        self.batch_size = 0
        self.encoder_checkpoint: str | None = None

    @classmethod
    def from_checkpoints(
        cls,
        encoder_checkpoint: str,
        decoder_checkpoint: str,
        device: str = "cpu",
        name: str = "custom",
        precision: str = "fp32",
        backend: str = DEFAULT_BACKEND,
    ) -> StreamingCodec:
        """Load a codec from two checkpoints in the original format (config.yml beside each)."""
        encoder, encoder_config = load_autoencoder(encoder_checkpoint)
        if encoder.mode != "causal":
            raise CodecError(f"{encoder_checkpoint} is a non-causal model: streaming inference needs mode: causal")
        decoder, decoder_config = load_generator(decoder_checkpoint)
        check_codec_pair(encoder_checkpoint, encoder_config, decoder_checkpoint, decoder_config,
                         hops=(encoder.hop_length, decoder.hop_length))
        rate = int(encoder_config["sampling_rate"])
        codec = cls(
            encoder, decoder, rate, name=name, device=device, precision=precision,
            backend=backend, output_delay=output_delay(decoder_config),
        )
        codec.encoder_checkpoint = encoder_checkpoint
        return codec

    @classmethod
    def from_name(
        cls,
        name: str,
        root: str | None = None,
        device: str = "cpu",
        precision: str = "fp32",
        backend: str = DEFAULT_BACKEND,
    ) -> StreamingCodec:
        """Load a registered model (see utils.registry) from `root` (a folder holding exp/)."""
        entry = get_entry(name)
        encoder_checkpoint, decoder_checkpoint = resolve(entry, root)
        _check_registered_rate(entry, encoder_checkpoint)
        return cls.from_checkpoints(
            encoder_checkpoint, decoder_checkpoint, device=device, name=name, precision=precision, backend=backend
        )

    @property
    def registry_name(self) -> str:
        """The registered model this codec is named as (`from_name`), else '': what an `.adc` header
        names, so that a file coded with other checkpoints names no model that would not decode it."""
        return self.name if self.name in MODELS else ""

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def bitrate(self, n_codebooks: int | None = None) -> float:
        """Bits per second of the raw codes with the first `n_codebooks` codebooks (default: all)."""
        return self.checked_codebooks(n_codebooks) * bits_per_code(self.codebook_size) * self.frame_rate

    def checked_codebooks(self, n_codebooks: int | None, name: str = "n_codebooks") -> int:
        """`n_codebooks` (a count of this model's first codebooks), checked; all of them for None. A
        CodecError names it as `name` (a command's `--n_codebooks`, say)."""
        if n_codebooks is None:
            return self.n_codebooks
        if not _is_count(n_codebooks) or not 1 <= n_codebooks <= self.n_codebooks:
            raise CodecError(f"{name} {n_codebooks!r}: this model has 1..{self.n_codebooks}")
        return int(n_codebooks)

    def decoder_hash(self) -> bytes:
        """8-byte fingerprint of what the receiver uses: codebooks and decoder (stored in .adc files)."""
        return state_hash(self.encoder.quantizer, self.decoder)

    @_coding
    def reset(self, batch_size: int = 1, frame_size: int | None = None) -> None:
        """Start `batch_size` independent streams from the warmed-up state.

        With `frame_size` (samples per chunk to come), one silent chunk of that size is coded first,
        so that the weights are packed and the TorchScript graphs or native plans for it are built
        now (on a shape's second chunk) rather than during the first real chunks; the streams then
        start afresh.
        """
        if not _is_count(batch_size) or batch_size < 1:
            raise CodecError(f"batch_size {batch_size!r}: give the number of streams, 1 or more")
        if frame_size is not None:
            if not _is_count(frame_size) or frame_size <= 0 or frame_size % self.hop_length:
                raise CodecError(f"frame size {frame_size!r} is not a positive multiple of the hop ({self.hop_length})")
            self.reset(batch_size)
            silence = torch.zeros(batch_size, self.input_channels, frame_size, device=self.device)
            for _ in range(1 if self.backend == "eager" else 2):  # graphs come on a shape's 2nd call
                self.decode(self.encode(silence))
        self._warm_up(batch_size, quantized=True)
        self.batch_size = batch_size

    def _warm_up(self, batch_size: int, quantized: bool) -> None:
        """Restart every stream from the state a silent warm-up leaves, then copy it to `batch_size` streams."""
        reset_streaming(self.encoder, 1)
        reset_streaming(self.decoder, 1)
        silence = torch.zeros(1, self.input_channels, WARMUP_SAMPLES, device=self.device)
        latent = self.encoder.encode(silence)
        if not quantized:
            self.decoder.decode(latent)
        elif "decoder" in self.native_sides:  # the receiver's own arithmetic (a bf16 or int8 one runs only there)
            self._decode_codes(self.encoder.quantize(latent))
        else:
            self.decoder.decode(self.encoder.lookup(self.encoder.quantize(latent)))
        expand_streams((self.encoder, self.decoder), batch_size)

    def _check_batch(self, batch: int) -> None:
        if batch < 1:
            raise CodecError("a chunk of 0 streams: give at least one (shape (streams, channels, samples))")
        if self.batch_size == 0:
            self.reset(batch)
        elif batch != self.batch_size:
            raise CodecError(
                f"{batch} streams given but the codec was reset for {self.batch_size}: call reset({batch})"
            )

    @_coding
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Transmitter: waveform chunk (B, C, T), T a multiple of the hop -> codes (B, K, T / hop).

        A chunk longer than `BLOCK_FRAMES` frames is coded block by block (same codes, faster)."""
        self._check_waveform(x)
        self._check_batch(x.shape[0])
        if x.shape[-1] == 0:  # nothing to code (the end of a stream, say): the streams stay as they are
            return torch.empty(x.shape[0], self.n_codebooks, 0, dtype=torch.int64, device=self.device)
        return _in_blocks(self._encode_chunk, x.to(self.device, torch.float32), BLOCK_FRAMES * self.hop_length)

    def _check_waveform(self, x: torch.Tensor, chunk: bool = True) -> None:
        """A waveform this codec codes, whose length is a multiple of the hop where it is a `chunk`."""
        shape = f"(streams, {self.input_channels}, samples)"
        if not isinstance(x, torch.Tensor):
            raise CodecError(f"a chunk is a torch.Tensor {shape}, not a {type(x).__name__}")
        if x.dim() != 3 or x.shape[1] != self.input_channels:
            fix = ": code each channel as its own stream, x.reshape(-1, 1, samples)" if self.input_channels == 1 else ""
            raise CodecError(f"a chunk is {shape} for model '{self.name}', got {tuple(x.shape)}{fix}")
        if x.is_complex():
            raise CodecError(f"the chunk is complex ({x.dtype}): the codec codes real samples in [-1, 1]")
        if not x.is_floating_point():
            raise integer_samples_error(x.dtype)
        if x.is_meta:
            raise CodecError("the chunk is on the meta device, which holds no samples: give a CPU or GPU tensor")
        if chunk and x.shape[-1] % self.hop_length:
            raise CodecError(f"chunk of {x.shape[-1]} samples is not a multiple of the hop ({self.hop_length})")
        # One reduction: finite unless a sample is not, or the sum of large samples overflowed (then look).
        if not math.isfinite(x.sum(dtype=torch.float32)) and not bool(torch.isfinite(x).all()):
            raise CodecError("the chunk holds NaN or infinite samples: the codec codes finite ones")

    def _transmit(self, x: torch.Tensor) -> torch.Tensor:
        """The transmitter's eager step: waveform chunk -> codes."""
        return self.encoder.quantize(self.encoder.encode(x))

    @_coding
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Receiver: codes (B, K', frames), K' <= K -> waveform chunk (B, C_out, frames * hop).

        More than `BLOCK_FRAMES` frames are decoded block by block (same waveform to float rounding)."""
        self._check_codes(codes)
        self._check_batch(codes.shape[0])
        if codes.shape[-1] == 0:
            return torch.empty(codes.shape[0], self.output_channels, 0, device=self.device)
        return _in_blocks(self._decode_codes, codes.to(self.device, torch.int64), BLOCK_FRAMES)

    def _check_codes(self, codes: torch.Tensor) -> None:
        if not isinstance(codes, torch.Tensor) or codes.dim() != 3 or not 1 <= codes.shape[1] <= self.n_codebooks:
            got = tuple(codes.shape) if isinstance(codes, torch.Tensor) else f"a {type(codes).__name__}"
            raise CodecError(f"codes must be a tensor (streams, 1..{self.n_codebooks}, frames), got {got}")
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise CodecError(f"codes are integers, got {codes.dtype}: give the indices the encoder gave")
        if codes.is_meta:
            raise CodecError("the codes are on the meta device, which holds no values: give a CPU or GPU tensor")
        if codes.numel():
            # (torch has no min/max for uint16/32/64; codes of 1024 values fit int16 or wider.)
            least, most = (int(value) for value in torch.aminmax(codes.to(_CHECKED_CODE_DTYPES.get(codes.dtype,
                                                                                                  codes.dtype))))
            if least < 0 or most >= self.codebook_size:
                raise CodecError(f"codes must lie in [0, {self.codebook_size}), got [{least}, {most}]: "
                                 "these are not this model's codes")

    def _receive(self, codes: torch.Tensor) -> torch.Tensor:
        """The receiver's step outside the native engine: codes -> latent -> waveform chunk."""
        return self._decode_latent(self.encoder.lookup(codes))

    def coded_length(self, length: int) -> int:
        """Samples a whole-signal pass codes for an input of `length`: the input and `output_delay` zeros
        (the model's output lags by that much), before the padding to a multiple of the hop."""
        return length + self.output_delay

    def code(self, x: torch.Tensor, n_codebooks: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Whole-signal pass from a fresh warmed-up state: x (B, C, T) -> (codes, y (B, C_out, T)).

        The signal is zero-padded by `output_delay` samples and to a multiple of the hop; the output,
        from its `output_delay`-th sample on, is cut back to T samples: y[t] is the coded x[t].
        The codes are all K codebooks' (what the encoder sends); y is decoded from the first
        `n_codebooks` of them (default: all).
        """
        kept = self.checked_codebooks(n_codebooks)
        codes = self.encode_signal(x)
        return codes, self.decode_signal(codes[:, :kept], x.shape[-1], reset=False)

    def encode_signal(self, x: torch.Tensor) -> torch.Tensor:
        """The codes of `code` without the decoding: x (B, C, T) -> codes (B, K, frames), from a fresh
        warmed-up state (the transmitter of a whole file)."""
        return self.encode_signal_blocks([x])

    def encode_signal_blocks(self, pieces: Iterable[torch.Tensor]) -> torch.Tensor:
        """`encode_signal` of the pieces' join along time (each (B, C, n), B the same throughout), coded as
        they come, so that a long signal need not be whole in memory. Pieces of `signal_block_samples`
        (the last one shorter) give `encode_signal`'s very codes: the encoder is called on the same blocks."""
        codes: list[torch.Tensor] = []
        rest, length = None, 0
        for piece in pieces:
            self._check_waveform(piece, chunk=False)
            if rest is None:
                self.reset(piece.shape[0])
            joined = piece if rest is None or not rest.shape[-1] else torch.cat([rest, piece], dim=-1)
            # the whole hops as they are, the rest with the next piece: no padded copy of a whole signal
            whole = joined.shape[-1] - joined.shape[-1] % self.hop_length
            codes.append(self.encode(joined[..., :whole]))
            rest, length = joined[..., whole:], length + piece.shape[-1]
        if rest is None:
            raise CodecError("no pieces of signal to code: give at least one (streams, channels, samples) tensor")
        codes.append(self.encode(F.pad(rest, (0, self._whole_signal_padding(length)))))  # (Contract 2)
        return torch.cat(codes, dim=-1)

    @property
    def signal_block_samples(self) -> int:
        """Samples of a piece of a long signal read at a time (`encode_signal_blocks`): whole encoder blocks."""
        return SIGNAL_BLOCKS * BLOCK_FRAMES * self.hop_length

    def _whole_signal_padding(self, length: int) -> int:
        """The zeros after a whole signal of `length` samples: `output_delay` of them, then up to a hop."""
        coded = self.coded_length(length)
        return coded - length + -coded % self.hop_length

    def _pad_whole_signal(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, T) zero-padded by `output_delay` samples and then to a multiple of the hop."""
        return F.pad(x, (0, self._whole_signal_padding(x.shape[-1])))

    def _aligned(self, y: torch.Tensor, length: int) -> torch.Tensor:
        """A whole-signal output from its `output_delay`-th sample on, `length` samples long."""
        return y[..., self.output_delay : self.output_delay + length]

    def decode_signal(self, codes: torch.Tensor, length: int, reset: bool = True) -> torch.Tensor:
        """Codes of a whole signal of `length` samples (as `code` gives them) -> y (B, C_out, length),
        decoded from a fresh warmed-up state (unless `reset` is False) and aligned with the input."""
        self._check_signal_codes(codes, length)
        if reset:
            self.reset(codes.shape[0])
        return self._aligned(self.decode(codes), length)

    def decode_signal_blocks(self, codes: torch.Tensor, length: int) -> Iterator[torch.Tensor]:
        """`decode_signal(codes, length)` a block of `BLOCK_FRAMES` frames at a time: pieces
        (B, C_out, n) whose join is its output, the same samples, so that a long signal can be written
        as it is decoded without all of it in memory. The codes are checked now, before any decoding;
        the state is reset when the first piece is asked for."""
        self._check_signal_codes(codes, length)
        if codes.shape[0] < 1:
            raise CodecError("codes of 0 streams: give at least one (shape (streams, codebooks, frames))")

        def pieces() -> Iterator[torch.Tensor]:
            self.reset(codes.shape[0])
            position, end = 0, self.output_delay + length
            for start in range(0, codes.shape[-1], BLOCK_FRAMES):
                if position >= end:
                    return
                with torch.inference_mode():
                    y = self._decode_codes(codes[..., start : start + BLOCK_FRAMES].to(self.device, torch.int64))
                piece = y[..., self.signal_slice(position, y.shape[-1], end)]
                position += y.shape[-1]
                if piece.shape[-1]:
                    yield piece.clone()  # (an ordinary tensor, as `decode` gives)

        return pieces()

    def signal_slice(self, position: int, size: int, end: int) -> slice:
        """Of `size` decoder output samples from its `position`-th on, the slice that is signal: after the
        output delay and before `end` (the delay plus the signal's length)."""
        first = min(max(0, self.output_delay - position), size)
        return slice(first, max(first, min(size, end - position)))

    def _check_signal_codes(self, codes: torch.Tensor, length: int) -> None:
        """The checks of `decode_signal`'s arguments: the codes, and a length they can give."""
        self._check_codes(codes)
        most = codes.shape[-1] * self.hop_length - self.output_delay
        if not _is_count(length) or not 0 <= length <= max(0, most):
            raise CodecError(f"length {length!r}: {codes.shape[-1]} frames of codes give 0 to {max(0, most)} "
                             "samples of a whole signal; give the coded signal's length")

    @_coding
    def code_unquantized(self, x: torch.Tensor) -> torch.Tensor:
        """Whole-signal pass with the quantizer left out: x (B, C, T) -> y (B, C_out, T), the encoder's
        latent straight into the decoder (eager steps, from a state warmed up the same way). The
        codec's output at unlimited bitrate: its distance to `code`'s is what the codebooks cost.
        """
        self._check_waveform(x, chunk=False)
        self._warm_up(x.shape[0], quantized=False)
        self.batch_size = 0  # the coding steps start again from their own warmed-up state
        padded = self._pad_whole_signal(x.to(self.device, torch.float32))
        return self._aligned(self.decoder.decode(self.encoder.encode(padded)), x.shape[-1])

    def encode_audio(self, audio: np.ndarray | Iterable[np.ndarray]) -> tuple[torch.Tensor, int]:
        """File samples (T, C), whole or as consecutive blocks -> (codes (streams, K, frames), T): the
        streams of `streams_from_audio`, coded a block at a time (`encode_signal_blocks`)."""
        samples = 0

        def streams() -> Iterator[torch.Tensor]:
            nonlocal samples
            for block in [audio] if isinstance(audio, np.ndarray) else audio:
                piece = self.streams_from_audio(block)
                samples += piece.shape[-1]
                yield piece

        return self.encode_signal_blocks(streams()), samples

    def streams_from_audio(self, data: np.ndarray) -> torch.Tensor:
        """File samples (T, C) -> model input (B, input_channels, T).

        A mono model codes each channel as its own stream; a multi-channel model takes exactly its
        number of channels as one stream. More channels than any audio file holds, and more than samples,
        is refused: that is a channels-first (C, T) array, which would code T one-sample streams.
        """
        if isinstance(data, np.ndarray) and np.iscomplexobj(data):
            raise CodecError(f"file samples are complex ({data.dtype}): the codec codes real samples in [-1, 1]")
        check_file_samples(data)
        samples, channels = data.shape
        if channels > MAX_FILE_CHANNELS and samples < channels:  # (no file holds more: a (C, T) array)
            raise CodecError(
                f"file samples of shape {data.shape} read as {samples} sample(s) of {channels} channels: they are "
                "(samples, channels), as soundfile.read(path, always_2d=True) gives them; transpose a "
                "channels-first array (data.T)"
            )
        if self.input_channels == 1:
            return torch.from_numpy(np.ascontiguousarray(data.T)).float().unsqueeze(1)
        if channels != self.input_channels:
            raise CodecError(
                f"input has {channels} channels but model '{self.name}' takes {self.input_channels}: "
                f"give a {self.input_channels}-channel file"
            )
        return torch.from_numpy(np.ascontiguousarray(data.T)).float().unsqueeze(0)

    @staticmethod
    def audio_from_streams(y: torch.Tensor) -> np.ndarray:
        """Model output (B, C_out, T) -> file samples (T, B * C_out)."""
        return y.reshape(y.shape[0] * y.shape[1], y.shape[-1]).T.cpu().numpy()  # (-1 is ambiguous for T = 0)
