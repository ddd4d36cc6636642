"""The ONNX Runtime receiver backend decodes what the torch receiver decodes."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import MANIFEST, official_path
from utils.audiodec import StreamingCodec
from utils.errors import CodecError


def load(name: str, backend: str) -> StreamingCodec:
    entry = MANIFEST[name]
    return StreamingCodec.from_checkpoints(
        official_path(entry["encoder_checkpoint"]), official_path(entry["decoder_checkpoint"]), backend=backend
    )


@pytest.mark.parametrize("name", ["vctk_sym", "vctk_v1"])
def test_streams_like_the_torch_receiver(name: str) -> None:
    """Two streams, chunk sizes changing mid-stream, one-off shapes in torch and repeated ones in ORT
    (the state passes between them): same codes, waveform within 1e-5 of the torch backend."""
    torch.manual_seed(5)
    x = 0.3 * torch.randn(2, 1, 300 * 24)
    cuts = [0, 300, 600, 2100, 2400, 3900, 4200, 7200]
    outputs = {}
    for backend in ("torch", "onnxruntime"):
        codec = load(name, backend)
        codec.reset(2)
        codes, audio = [], []
        for start, end in zip(cuts, cuts[1:]):
            codes.append(codec.encode(x[..., start:end]))
            audio.append(codec.decode(codes[-1]))
        outputs[backend] = torch.cat(codes, dim=-1), torch.cat(audio, dim=-1)
    sessions = codec._decode_latent.built  # the ORT codec: 1- and 5-frame chunks came again
    assert sorted(key[0][-1] for key in sessions) == [1, 5]
    assert torch.equal(outputs["onnxruntime"][0], outputs["torch"][0])
    torch.testing.assert_close(outputs["onnxruntime"][1], outputs["torch"][1], rtol=0, atol=1e-5)
    assert outputs["torch"][1].abs().max() > 1e-3  # a real signal, not two silences


def test_whole_file_and_reset_like_the_torch_receiver() -> None:
    torch.manual_seed(6)
    x = 0.3 * torch.randn(1, 1, 300 * 90 + 17)  # 91 frames: one 80-frame block and a shorter one
    expected_codes, expected = load("vctk_sym", "torch").code(x)
    codec = load("vctk_sym", "onnxruntime")
    for _ in range(2):  # the second pass (in ORT) starts from a fresh reset, not where the first ended
        codes, y = codec.code(x)
        assert torch.equal(codes, expected_codes)
        torch.testing.assert_close(y, expected, rtol=0, atol=1e-5)
    assert sorted(key[0][-1] for key in codec._decode_latent.built) == [11, 80]


def test_sessions_are_built_for_repeated_shapes_and_bounded() -> None:
    codec = load("vctk_sym", "onnxruntime")
    receiver = codec._decode_latent
    codec.reset(1, frame_size=600)  # a live stream's chunk size: its session is ready before the first chunk
    assert [key[0][::2] for key in receiver.built] == [(1, 2)]  # (streams, frames)
    for frames in range(3, 3 + receiver.MAX_BUILT + 2):
        codes = torch.zeros(1, codec.n_codebooks, frames, dtype=torch.long)
        codec.decode(codes)
        assert (1, frames) not in [key[0][::2] for key in receiver.built]  # first time: torch
        codec.decode(codes)
        assert [key[0][::2] for key in receiver.built][-1] == (1, frames)
    assert len(receiver.built) == receiver.MAX_BUILT


def test_backend_errors() -> None:
    with pytest.raises(CodecError, match="unknown backend 'tvm'"):
        load("vctk_sym", "tvm")
    entry = MANIFEST["vctk_sym"]
    with pytest.raises(CodecError, match="fp32 on the CPU"):
        StreamingCodec.from_checkpoints(
            official_path(entry["encoder_checkpoint"]), official_path(entry["decoder_checkpoint"]),
            backend="onnxruntime", precision="bf16",
        )
