"""demoStream.py --send / --receive over loopback: loss is concealed and counted, junk is ignored."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import MANIFEST, OFFICIAL, REPO, official_path
from tests.test_stream_file import INPUT, MODEL, stat
from utils.audiodec import StreamingCodec
from utils.bitstream import packet
from utils.bitstream.bits import bits_per_code
from utils.errors import CodecError
from utils.live import Receiver, bind_udp
from utils.live.udp import PlaybackBuffer


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_receiver(python: str, port: int, output: str, *args: str) -> subprocess.Popen:
    """Start a receiver and wait until it listens."""
    receiver = subprocess.Popen([python, os.path.join(REPO, "demoStream.py"), *MODEL, "--receive", str(port),
                                 "-o", output, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    for line in receiver.stderr:
        if "listening on" in line:
            return receiver
        assert time.monotonic() < deadline, "receiver did not start"
    raise AssertionError(f"receiver exited: {receiver.wait()} {receiver.stdout.read()}")


def finish(process: subprocess.Popen, timeout: float = 60) -> tuple[str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        process.kill()
    return out, err


def test_loss_is_concealed_and_counted(tmp_path, python: str) -> None:
    port = free_port()
    output = str(tmp_path / "received.wav")
    receiver = start_receiver(python, port, output, "--idle_timeout", "20")
    try:
        sender = subprocess.run([python, os.path.join(REPO, "demoStream.py"), *MODEL, "--send", f"127.0.0.1:{port}",
                                 "--input_file", INPUT, "--frame_size", "600", "--drop_rate", "0.05",
                                 "--drop_seed", "7"], capture_output=True, text=True, timeout=120)
        assert sender.returncode == 0, sender.stderr
        junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        junk.sendto(b"hello, is this the codec?", ("127.0.0.1", port))
        junk.close()
    finally:
        out, err = finish(receiver)
    assert receiver.returncode == 0, err
    assert "Traceback" not in err
    injected = int(stat(sender.stdout, "packets dropped (--drop_rate)"))
    lost = int(stat(out, "packets lost (concealed)"))
    received = int(stat(out, "packets received"))
    assert injected > 0
    # The END packet goes three times: its copies may be the lost ones.
    assert injected - 3 <= lost <= injected and received + lost == 160
    audio, rate = sf.read(output, always_2d=True)
    assert rate == 48000 and audio.shape == (96000, 1)
    assert np.abs(audio).max() > 0.01


def _codes_packet(codec: StreamingCodec, seq: int, frames: int = 2, session: int = 1) -> bytes:
    codes = np.random.default_rng(seq).integers(0, codec.codebook_size, (1, codec.n_codebooks, frames))
    return packet.encode_codes(codes, bits_per_code(codec.codebook_size), session, seq, seq * frames, 0,
                               codec.decoder_hash()[:4])


def test_corrupt_and_foreign_packets_are_counted_and_ignored() -> None:
    codec = StreamingCodec.from_name("vctk_sym", root=OFFICIAL)
    sock = bind_udp("127.0.0.1", 0)
    receiver = Receiver(codec, sock, expect_frames=4, idle_timeout=10)
    damaged = bytearray(_codes_packet(codec, 1))
    damaged[30] ^= 0x10
    wrong_bits = packet.encode_codes(np.zeros((1, 8, 2), np.int64), 3, 1, 2, 4, 0, codec.decoder_hash()[:4])
    datagrams = [
        _codes_packet(codec, 0),
        b"\x00" * 40,                                  # foreign: no magic
        b"AD",                                         # foreign: too short
        bytes(damaged),                                # corrupt: CRC
        _codes_packet(codec, 1)[:-9],                  # corrupt: truncated
        _codes_packet(codec, 1, session=99),           # foreign: another sender
        wrong_bits,                                    # foreign: another codec
        _codes_packet(codec, 0),                       # duplicate
        _codes_packet(codec, 2),                       # packet 1 lost
        _codes_packet(codec, 3),
    ]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        for datagram in datagrams:
            client.sendto(datagram, sock.getsockname())
    receiver.run()
    sock.close()
    counts = receiver.counts
    assert counts["packets received"] == 3
    assert counts["packets lost (concealed)"] == 1 and counts["frames concealed"] == 2
    assert counts["packets corrupt"] == 2
    assert counts["packets foreign"] == 4
    assert counts["packets late or duplicate"] == 1
    assert receiver.output_audio().shape == (8 * codec.hop_length, 1)


def test_a_receiver_without_a_dump_holds_no_audio_however_long_it_runs() -> None:
    """As demoStream.py --receive without -o: after many packets the receiver holds no more memory
    than after a few (a kept packet's audio is 9600 bytes here), and says in one line that it has no
    dump to give."""
    import tracemalloc

    import torch

    codec = StreamingCodec.from_name("vctk_sym", root=OFFICIAL)
    sock = bind_udp("127.0.0.1", 0)
    receiver = Receiver(codec, sock, keep_output=False)
    codec.reset(1)
    packets = [_codes_packet(codec, seq, frames=8) for seq in range(150)]
    held = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2-frame steps: a thread team would only wait on itself
    tracemalloc.start()
    try:
        for seq, datagram in enumerate(packets):
            assert receiver._handle(datagram)
            if seq + 1 in (30, 150):
                held.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
        torch.set_num_threads(threads)
        sock.close()
    assert held[1] - held[0] < 12 * 9600, f"{held[1] - held[0]} bytes more after 120 more packets"
    assert receiver.counts["packets received"] == len(receiver.stats.decoder_times) == 150
    with pytest.raises(CodecError, match=r"kept no output \(keep_output=False\): make it with keep_output=True"):
        receiver.output_audio()


@pytest.mark.parametrize("max_samples", [4800, 0], ids=["bounded", "never-dropped"])
def test_a_playing_receiver_stays_within_its_bound_behind_a_fast_sender(max_samples: int) -> None:
    """A sender whose clock runs fast (1201 samples arrive for every 1200 the card plays) would leave
    the receiver's speaker ever further behind: beyond --max_latency (`max_samples`) behind the block
    playing, the oldest blocks are dropped and counted; what plays stays in order, without underruns.
    With 0, nothing is dropped and the wait grows by a sample a period."""
    buffer = PlaybackBuffer(1, max_samples)
    card = np.empty((1200, 1), np.float32)
    periods, arrived, played = 10000, 0, []
    for _ in range(periods):
        buffer.put(np.arange(arrived, arrived + 1201, dtype=np.float32)[:, None])  # the samples' numbers
        arrived += 1201
        buffer.callback(card, 1200, None, None)
        played.append(card[:, 0].copy())
    played = np.concatenate(played)
    assert buffer.underruns == 0 and np.all(np.diff(played) > 0)
    assert buffer.waiting == sum(block.shape[0] for block in buffer.blocks) - buffer.offset
    assert buffer.waiting + buffer.dropped + played.shape[0] == arrived
    if max_samples:
        assert buffer.waiting <= max_samples + 1201 + 1200 and buffer.dropped > 0
    else:
        assert buffer.waiting == periods and buffer.dropped == 0


@pytest.mark.parametrize("block, period", [(1200, 1024), (1200, 4096), (9600, 256), (9600, 4096)])
def test_a_paced_stream_plays_every_sample_whatever_its_frame_size_and_card_period(block: int, period: int) -> None:
    """Packets that come on time, up to a tenth of a block early or late, and a card that takes any
    period: nothing waits beyond --max_latency (0.1 s), so nothing is dropped, however long the
    blocks (--frame_size 9600 is 0.2 s) or the card's period."""
    buffer = PlaybackBuffer(1, 4800)
    card = np.empty((period, 1), np.float32)
    jitter = np.random.default_rng(0).uniform(-0.1, 0.1, 400) * block
    events = [(k * block + block + jitter[k], "packet") for k in range(400)]  # each one block after capture
    events += [(t, "card") for t in range(0, 401 * block + 2 * period, period)]
    for _, kind in sorted(events):
        if kind == "packet":
            buffer.put(np.ones((block, 1), np.float32))
        else:
            buffer.callback(card, period, None, None)
    assert buffer.dropped == 0 and buffer.waiting <= block + period  # (the last packet's, not yet taken)


def test_packets_round_trip() -> None:
    codes = np.random.default_rng(0).integers(0, 1024, (2, 8, 5))
    parsed = packet.decode(packet.encode_codes(codes, 10, 5, 6, 7, 8, b"\x01\x02\x03\x04"))
    assert np.array_equal(parsed.codes, codes)
    assert (parsed.session, parsed.seq, parsed.frame_index, parsed.capture_us) == (5, 6, 7, 8)
    assert parsed.decoder == b"\x01\x02\x03\x04"
    end = packet.decode(packet.encode_end(5, 9, 45, 12345, b"\x01\x02\x03\x04"))
    assert end.kind == packet.KIND_END and end.n_samples == 12345 and end.decoder == b"\x01\x02\x03\x04"


def test_sender_to_unresolvable_host_fails_cleanly(python: str) -> None:
    result = subprocess.run([python, os.path.join(REPO, "demoStream.py"), *MODEL, "--send", "no.such.host.invalid:9",
                             "--input_file", official_path("input", "test_48k.wav")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")


@pytest.mark.parametrize("port", ["0", "70000"])
def test_bad_receive_port(python: str, port: str) -> None:
    result = subprocess.run([python, os.path.join(REPO, "demoStream.py"), *MODEL, "--receive", port],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_a_receiver_stops_after_its_duration(python: str, tmp_path) -> None:
    """--duration bounds a receiver as it bounds the other live modes: no sender here, and it stops, says
    that nothing came in one line, writes no empty dump and exits 1."""
    output = tmp_path / "out.wav"
    receiver = start_receiver(python, free_port(), str(output), "--duration", "1")
    started = time.monotonic()
    out, err = finish(receiver, timeout=60)
    assert receiver.returncode == 1, err
    assert time.monotonic() - started < 30 and "1 s passed: stopping" in err
    assert err.strip().splitlines()[-1].startswith("error: no stream packets arrived on 127.0.0.1:")
    assert "Traceback" not in err and not output.exists() and os.listdir(tmp_path) == []


def _send_file(python: str, port: int, model: tuple[str, ...]) -> subprocess.CompletedProcess:
    return subprocess.run([python, os.path.join(REPO, "demoStream.py"), *model, "--send", f"127.0.0.1:{port}",
                           "--input_file", INPUT, "--no-pace"], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def test_a_receiver_of_another_model_stops_with_one_line(tmp_path, python: str) -> None:
    """The packets carry the sender's decoder fingerprint: a receiver with another model says so and
    exits 1 without a dump, even where the two models' codes have the same layout (here: one
    decoder's weights changed a little, as a model and its earlier stage)."""
    import shutil

    import torch

    entry = MANIFEST["vctk_sym"]
    other = tmp_path / "model"
    other.mkdir()
    decoder = torch.load(official_path(entry["decoder_checkpoint"]), map_location="cpu", weights_only=True)
    decoder["model"]["generator"]["decoder.conv1.conv.weight"] *= 1.01
    torch.save(decoder, other / "decoder.pkl")
    shutil.copy(os.path.join(os.path.dirname(official_path(entry["decoder_checkpoint"])), "config.yml"), other)
    port = free_port()
    output = tmp_path / "received.wav"
    receiver = subprocess.Popen(
        [python, os.path.join(REPO, "demoStream.py"), "--encoder", official_path(entry["encoder_checkpoint"]),
         "--decoder", str(other / "decoder.pkl"), "--num_threads", "1", "--receive", str(port), "-o", str(output),
         "--idle_timeout", "20"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        for line in receiver.stderr:
            if "listening on" in line:
                break
        sender = _send_file(python, port, MODEL)
        assert sender.returncode == 0, sender.stderr
    finally:
        out, err = finish(receiver)
    assert receiver.returncode == 1, err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and lines[-1].startswith("error: the sender codes with another model (decoder ")
    assert "start the receiver with the sender's --model" in lines[-1]
    assert not output.exists()


def test_packets_of_another_version_are_named_until_a_stream_is_followed() -> None:
    codec = StreamingCodec.from_name("vctk_sym", root=OFFICIAL)
    sock = bind_udp("127.0.0.1", 0)
    receiver = Receiver(codec, sock, expect_frames=2, idle_timeout=10)
    old = bytearray(_codes_packet(codec, 0))
    old[2] = 1
    with pytest.raises(CodecError, match="stream format version 1, this receiver reads version 2: run sender and "):
        receiver._handle(bytes(old))
    assert receiver._handle(_codes_packet(codec, 0))
    assert not receiver._handle(bytes(old))  # a stream is followed: another sender's packet is foreign
    another_decoder = bytes(byte ^ 0xFF for byte in codec.decoder_hash()[:4])
    stray = packet.encode_codes(np.zeros((1, 8, 2), np.int64), 10, 1, 1, 2, 0, another_decoder)
    assert not receiver._handle(stray)
    assert receiver.counts["packets foreign"] == 2
    sock.close()


def test_a_damaged_payload_byte_is_refused_by_the_crc() -> None:
    """Every payload byte and CRC byte flipped: the size checks pass, the CRC refuses the packet."""
    codes = np.random.default_rng(1).integers(0, 64, (1, 8, 2))
    good = packet.encode_codes(codes, 6, 1, 1, 2, 0, b"\x01\x02\x03\x04")
    assert len(good) > packet.HEADER_BYTES + packet.CRC_BYTES
    for position in range(packet.HEADER_BYTES, len(good)):
        damaged = bytearray(good)
        damaged[position] ^= 0x10
        with pytest.raises(packet.PacketError, match="^CRC mismatch$") as caught:
            packet.decode(bytes(damaged))
        assert not caught.value.foreign


def test_a_code_beyond_the_code_bits_is_not_sent() -> None:
    """Codes in [0, 2**bits) are sent; 2**bits would pack as 0 and is refused naming the code and the range."""
    decoder = b"\x01\x02\x03\x04"
    highest = np.full((1, 2, 1), 63)
    assert np.array_equal(packet.decode(packet.encode_codes(highest, 6, 1, 1, 0, 0, decoder)).codes, highest)
    with pytest.raises(ValueError, match=r"^codes must lie in \[0, 64\) for 6-bit codes, got \[63, 64\]"):
        packet.encode_codes(np.array([[[63], [64]]]), 6, 1, 1, 0, 0, decoder)
    with pytest.raises(ValueError, match=r"got \[-1, 0\]"):
        packet.encode_codes(np.array([[[-1], [0]]]), 6, 1, 1, 0, 0, decoder)


def test_a_packet_whose_seq_jumps_far_ahead_is_not_followed() -> None:
    """One forged packet (this session, a valid CRC, the next frames, seq 2**32 - 1) made every later
    packet of the stream late; its capture time (0) gave a latency of 56 years."""
    codec = StreamingCodec.from_name("vctk_sym", root=OFFICIAL)
    sock = bind_udp("127.0.0.1", 0)
    receiver = Receiver(codec, sock)
    codec.reset(1)
    assert receiver._handle(_codes_packet(codec, 0))
    codes = np.zeros((1, codec.n_codebooks, 2), np.int64)
    forged = packet.encode_codes(codes, bits_per_code(codec.codebook_size), 1, 2**32 - 1, 2, 0,
                                 codec.decoder_hash()[:4])
    assert not receiver._handle(forged)
    for seq in range(1, 5):
        assert receiver._handle(_codes_packet(codec, seq))
    counts = receiver.counts
    assert counts["packets received"] == 5 and counts["packets corrupt"] == 1
    assert counts["packets late or duplicate"] == 0 and counts["frames concealed"] == 0
    assert receiver.output_audio().shape == (10 * codec.hop_length, 1)
    assert len(receiver.stats.latencies) == 0  # every packet here says it was captured in 1970
    now = packet.encode_codes(codes, bits_per_code(codec.codebook_size), 1, 5, 10, int(time.time() * 1e6),
                              codec.decoder_hash()[:4])
    assert receiver._handle(now)
    assert len(receiver.stats.latencies) == 1 and 0 <= receiver.stats.latencies.seconds[0] < 10
    sock.close()
