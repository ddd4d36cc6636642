"""demoStream.py --input_file: streaming a file gives demoFile.py's audio; bad input fails cleanly."""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import subprocess
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.conftest import MANIFEST, OFFICIAL, REPO, ctrl_c_default, official_path
from utils.audio import read_audio
from utils.audiodec import StreamingCodec
from utils.errors import CodecError

MODEL = ("--model", "vctk_sym", "--root", OFFICIAL, "--num_threads", "1")
INPUT = official_path("input", "test_48k.wav")


def run_stream(python: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([python, os.path.join(REPO, "demoStream.py"), *MODEL, *args],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def assert_clean_failure(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert any(word in lines[0] for word in words), lines[0]


def stat(stdout: str, name: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in stdout.splitlines() if line.startswith(name + ":"))


@pytest.fixture(scope="module")
def whole_file() -> np.ndarray:
    """The library pass demoFile.py makes, before PCM_16: (T, 1) float32 (on one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        codec = StreamingCodec.from_name("vctk_sym", root=OFFICIAL)
        data, _ = read_audio(INPUT)
        return codec.audio_from_streams(codec.code(codec.streams_from_audio(data))[1])
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("frame_size", [300, 1500])
def test_unpaced_file_equals_demo_file(tmp_path, python: str, whole_file: np.ndarray, frame_size: int) -> None:
    out = tmp_path / "stream.wav"
    result = run_stream(python, "--input_file", INPUT, "--no-pace", "--frame_size", str(frame_size), "-o", str(out))
    assert result.returncode == 0, result.stderr
    streamed, rate = sf.read(out, always_2d=True, dtype="float32")
    assert rate == 48000 and streamed.shape == whole_file.shape
    assert np.abs(streamed - whole_file).max() < 1e-5
    assert stat(result.stdout, "frame drops").startswith("0 ")

    demo_out = tmp_path / "file.wav"
    demo = subprocess.run([python, os.path.join(REPO, "demoFile.py"), *MODEL, "--cuda", "-1", "-i", INPUT,
                           "-o", str(demo_out)], capture_output=True, text=True, timeout=120)
    assert demo.returncode == 0, demo.stderr
    pcm, _ = sf.read(demo_out, always_2d=True, dtype="float32")
    assert np.abs(np.clip(streamed, -1, 1) - pcm).max() <= 1.01 / 32768


def test_paced_file_reports_latency(tmp_path, python: str, whole_file: np.ndarray) -> None:
    """In real time (2 s) on a possibly loaded machine: statistics printed, output aligned, most frames exact."""
    out = tmp_path / "stream.wav"
    result = run_stream(python, "--input_file", INPUT, "--frame_size", "1200", "--max_latency", "0.5",
                        "-o", str(out), "-i", str(tmp_path / "in.wav"))
    assert result.returncode == 0, result.stderr
    for name in ("encoder processing time (ms)", "decoder processing time (ms)", "system latency (ms)"):
        assert "+-" in stat(result.stdout, name)
    drops = int(stat(result.stdout, "frame drops").split()[0])
    streamed, _ = sf.read(out, always_2d=True, dtype="float32")
    assert streamed.shape == whole_file.shape
    blocks = list(zip(np.split(streamed, 80), np.split(whole_file, 80)))
    silent = [not block.any() for block, _ in blocks]
    exact = [np.abs(block - reference).max() < 1e-5 for block, reference in blocks]
    assert drops <= 16 and sum(silent) == drops
    first_drop = silent.index(True) if drops else len(blocks)
    assert all(exact[:first_drop])
    dumped, _ = sf.read(tmp_path / "in.wav", always_2d=True, dtype="float32")
    assert np.array_equal(dumped, read_audio(INPUT)[0].astype(np.float32))


@pytest.mark.parametrize("frame_size, send", [("1000", False), ("0", False), ("-300", False), ("0", True)])
def test_frame_size_not_a_multiple_of_the_hop(tmp_path, python: str, frame_size: str, send: bool) -> None:
    result = run_stream(python, "--input_file", INPUT, "--no-pace", "--frame_size", frame_size,
                        *(["--send", "127.0.0.1:9"] if send else []), "-o", str(tmp_path / "o.wav"))
    assert_clean_failure(result, f"--frame_size {frame_size} is not a positive multiple of the model's hop")
    assert not (tmp_path / "o.wav").exists()


@pytest.mark.parametrize("option", ["--input_device", "--output_device"])
def test_device_that_does_not_exist(python: str, option: str) -> None:
    source = ("--input_file", INPUT) if option == "--output_device" else ()
    result = run_stream(python, *source, option, "no such device 4711", "--duration", "1")
    assert_clean_failure(result, "'no such device 4711'", "PortAudio")


def test_device_index_that_does_not_exist(python: str) -> None:
    result = run_stream(python, "--input_device", "97", "--output_device", "98", "--duration", "1")
    assert_clean_failure(result, "device 97", "PortAudio")


def test_receive_port_in_use(tmp_path, python: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = run_stream(python, "--receive", str(port), "-o", str(tmp_path / "o.wav"), "--idle_timeout", "1")
    assert_clean_failure(result, f"127.0.0.1:{port}")


def _stream_in_process(codec: StreamingCodec, data: np.ndarray, worker_threads: int | str) -> tuple:
    """run_file unpaced through a Streamer; (output, thread count each worker's steps saw)."""
    from utils import live as stream

    seen: dict[str, set[int]] = {}
    streamer = stream.Streamer(codec, codec, 1500, data.shape[1], max_latency=0, worker_threads=worker_threads)
    for worker in [*streamer.overlapping, streamer.coder]:  # `start` runs either the first two or the coder
        step = worker.step

        def counted(*args, _step=step, _name=worker.name):
            seen.setdefault(_name, set()).add(torch.get_num_threads())
            return _step(*args)
        worker.step = counted
    stream.run_file(streamer, data, pace=False)
    return streamer.output_audio(data.shape[0]), seen, streamer


@pytest.mark.parametrize("balance, expected", [
    (1e9, {"encoder": {1}, "decoder": {1}}),
    (0.5, {"coder": {2}}),
], ids=["balanced", "one_side_dominates"])
def test_auto_overlaps_halves_or_codes_in_one_thread(whole_file: np.ndarray, balance: float,
                                                    expected: dict, monkeypatch) -> None:
    """'auto': two workers that each ran the caller's 2 threads would oversubscribe 2 cores, so when
    encoder and decoder cost alike (within BALANCE) they overlap with 1 thread each, and when one
    side dominates one coder thread encodes and decodes each frame with both. The caller's own
    count is left as it was, the audio is demoFile.py's either way, and both sides' times are kept."""
    from utils import live as stream

    monkeypatch.setattr(stream.Streamer, "BALANCE", balance)
    codec = StreamingCodec.from_name("vctk_sym", root=OFFICIAL)
    data, _ = read_audio(INPUT)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out, seen, streamer = _stream_in_process(codec, data, "auto")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
    assert seen == expected
    assert np.abs(out - whole_file).max() < 1e-5
    frames = math.ceil(data.shape[0] / 1500)
    assert streamer.stats.frames == frames and streamer.stats.frame_drops == 0
    assert len(streamer.stats.encoder_times) == len(streamer.stats.decoder_times) == frames


def test_explicit_worker_threads_and_bad_counts(whole_file: np.ndarray) -> None:
    from utils import live as stream

    codec = StreamingCodec.from_name("vctk_sym", root=OFFICIAL)
    data, _ = read_audio(INPUT)
    out, seen, _ = _stream_in_process(codec, data, 1)  # an explicit count: the two threads overlap
    assert seen == {"encoder": {1}, "decoder": {1}}
    assert np.abs(out - whole_file).max() < 1e-5
    for bad in (0, "two", 1.5):
        with pytest.raises(CodecError, match="worker_threads"):
            stream.Streamer(codec, codec, 1500, 1, worker_threads=bad)


def test_a_stream_without_dumps_holds_no_blocks_however_long_it_runs() -> None:
    """As demoStream.py streams a microphone without -i/-o: after many frames the stream holds no more
    memory than after a few (a kept block is 1200 bytes here), still times every frame, and says in
    one line that it has no dump to give."""
    import tracemalloc

    from utils import live as stream

    codec = StreamingCodec.from_name("vctk_sym", root=OFFICIAL)
    streamer = stream.Streamer(codec, codec, 300, 1, max_latency=0, worker_threads=1, keep_input=False,
                               keep_output=False)
    block = (0.1 * np.random.default_rng(0).standard_normal((300, 1))).astype(np.float32)
    held = []
    streamer.start()
    tracemalloc.start()
    try:
        for step in range(1, 601):
            streamer.push(block.copy(), wait=True)  # as run_devices: a copy of each period's samples
            streamer.pull(timeout=1.0)
            if step in (100, 600):
                held.append(tracemalloc.get_traced_memory()[0])
        streamer.drain()
    finally:
        tracemalloc.stop()
        streamer.close()
    assert held[1] - held[0] < 100 * 1200, f"{held[1] - held[0]} bytes more after 500 more frames"
    assert streamer.stats.frames == len(streamer.stats.encoder_times) == len(streamer.stats.latencies) == 600
    for dump in (streamer.input_audio, streamer.output_audio):
        with pytest.raises(CodecError, match=r"kept no (in|out)put \(keep_(in|out)put=False\): make it with "):
            dump()


def test_a_file_stream_holds_the_file_once(tmp_path) -> None:
    """--input_file is read whole as float32 (not as float64 and then a float32 copy), and the zeros a
    model's output delay needs after it are coded without a padded copy of the file."""
    import argparse
    import runpy
    import tracemalloc

    from utils import live as stream
    from utils.runtime.cpu_process import in_passing_thread

    path = tmp_path / "in.wav"
    sf.write(path, 0.1 * np.random.default_rng(0).standard_normal((480000, 1)), 48000, "PCM_16")
    file_bytes = 480000 * 4
    read_input_file = runpy.run_path(os.path.join(REPO, "demoStream.py"), run_name="demoStream")["_read_input_file"]
    codec = StreamingCodec.from_name("vctk_sym", root=OFFICIAL)
    codec.output_delay = 450  # a model that lags its input: its stream codes 450 zeros after the file
    streamer = stream.Streamer(codec, codec, 4800, 1, worker_threads=1, keep_input=False, keep_output=False)
    in_passing_thread(streamer._prepare)  # the engine's plans for these steps, before anything is measured
    tracemalloc.start()
    try:
        data = read_input_file(argparse.Namespace(input_file=str(path)), 48000)
        read_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        streamed = stream.run_file(streamer, data, pace=False)
        stream_peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert data.dtype == np.float32 and streamed == 480000
    assert np.array_equal(data, read_audio(path)[0].astype(np.float32))
    # The file once, and for a moment its magnitudes (the full-scale check); float64 took twice both.
    assert read_peak < 2.25 * file_bytes, f"reading took {read_peak / file_bytes:.2f} times the file's float32 bytes"
    assert stream_peak < 0.25 * file_bytes, f"streaming took {stream_peak / file_bytes:.2f} times them more"
    assert streamer.stats.frames == -(-(480000 + 450) // 4800)


def test_timings_report_what_a_list_of_them_gives() -> None:
    """The statistics keep 8 bytes a frame and print what the mean and deviation of a list of the same
    seconds print, across the array's growth."""
    from utils.live.pipeline import StreamStats, _mean_std_ms

    seconds = np.random.default_rng(1).exponential(0.004, 5000).tolist()
    stats = StreamStats(300, 48000)
    assert _mean_std_ms(stats.latencies) == "n/a"
    for value in seconds:
        stats.latencies.append(value)
    values = np.asarray(seconds) * 1000.0
    assert _mean_std_ms(stats.latencies) == f"{values.mean():.2f} +- {values.std():.2f}"
    assert np.array_equal(stats.latencies.seconds, seconds) and len(stats.latencies) == 5000
    assert stats.latencies.seconds.dtype == np.float64


def test_bad_worker_threads_option(python: str) -> None:
    assert_clean_failure(run_stream(python, "--input_file", INPUT, "--worker_threads", "0"), "--worker_threads")


@pytest.mark.parametrize("option, value", [("--max_latency", "-1"), ("--max_latency", "inf"), ("--duration", "0"),
                                           ("--idle_timeout", "-2"), ("--expect_frames", "0")])
def test_bad_time_and_count_options(python: str, option: str, value: str) -> None:
    assert_clean_failure(run_stream(python, "--input_file", INPUT, option, value), f"{option} {value}")


@pytest.mark.parametrize("option", ["-o", "-i"])
def test_a_dump_path_that_cannot_be_written_stops_before_the_stream(python: str, tmp_path, option: str) -> None:
    (tmp_path / "file").write_text("x")
    result = run_stream(python, "--input_file", INPUT, "--no-pace", option, str(tmp_path / "file" / "dump.wav"))
    assert_clean_failure(result, "is a file, not a folder: give another output path")
    assert "encoder processing time" not in result.stdout  # nothing was streamed


def test_listing_no_audio_devices_says_so_and_what_to_do(monkeypatch) -> None:
    from utils.live import devices

    class NoDevices:
        @staticmethod
        def query_devices() -> str:
            return ""  # what sounddevice's DeviceList prints on a machine without sound hardware

    monkeypatch.setattr(devices, "import_sounddevice", lambda: NoDevices)
    assert devices.list_devices() == "no audio devices found: stream files with --input_file and -o instead"


@pytest.mark.parametrize("send", [False, True])
def test_a_dump_naming_the_input_file_is_refused(python: str, tmp_path, send: bool) -> None:
    recording = tmp_path / "rec.wav"
    shutil.copy(INPUT, recording)
    kept = recording.read_bytes()
    mode = ("--send", "127.0.0.1:9") if send else ("--no-pace",)
    for option in ("-o", "-i"):
        result = run_stream(python, "--input_file", str(recording), *mode, option, str(tmp_path / "." / "rec.wav"))
        assert_clean_failure(result, f"{option} {tmp_path / '.' / 'rec.wav'} is the --input_file: give the dump "
                                     "another name")
    os.symlink(recording, tmp_path / "link.wav")
    assert_clean_failure(run_stream(python, "--input_file", str(tmp_path / "link.wav"), *mode, "-o", str(recording)),
                         "is the --input_file")
    dump = str(tmp_path / "d.wav")
    both = run_stream(python, "--input_file", INPUT, *mode, "-i", dump, "-o", dump)
    assert_clean_failure(both, f"-i and -o both name {tmp_path / 'd.wav'}: give each dump a file of its own")
    assert recording.read_bytes() == kept and sorted(os.listdir(tmp_path)) == ["link.wav", "rec.wav"]


def test_a_file_stream_stops_after_its_duration(python: str, tmp_path) -> None:
    out = tmp_path / "out.wav"
    started = time.monotonic()
    result = run_stream(python, "--input_file", INPUT, "--duration", "0.5", "-o", str(out),
                        "-i", str(tmp_path / "in.wav"))
    assert result.returncode == 0, result.stderr
    assert "0.5 s passed: stopping" in result.stderr and "encoder processing time" in result.stdout
    streamed, captured = sf.info(out).frames, sf.info(tmp_path / "in.wav").frames
    assert 0 < streamed < 72000 and streamed == captured  # the file is 96000 samples (2 s)
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("how", ["return", "ctrl-c"])
def test_return_and_ctrl_c_stop_a_file_stream_with_its_statistics_and_dumps(python: str, tmp_path, how: str) -> None:
    """As every live mode: what was streamed is dumped, the statistics printed, exit status 0."""
    out = tmp_path / "out.wav"
    process = subprocess.Popen([python, os.path.join(REPO, "demoStream.py"), *MODEL, "--input_file", INPUT, "-o",
                                str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=ctrl_c_default)
    try:
        for line in process.stderr:
            if "### streaming" in line:
                break
        time.sleep(0.3)
        if how == "return":
            process.stdin.write("\n")
            process.stdin.flush()
        else:
            process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr and "encoder processing time" in stdout
    assert 0 < sf.info(out).frames < 96000


@pytest.mark.parametrize("delay", [137, 450])
def test_a_model_with_an_output_delay_streams_a_file_aligned_like_demo_file(python: str, tmp_path, delay: int) -> None:
    """The -o dump of a model that lags its input by D samples is its input's length and aligned with it,
    as demoFile.py's output: D zeros coded after the file, D samples taken off the front."""
    import yaml

    entry = MANIFEST["vctk_sym"]
    decoder = tmp_path / "decoder.pkl"
    shutil.copy(official_path(entry["decoder_checkpoint"]), decoder)
    folder = os.path.dirname(official_path(entry["decoder_checkpoint"]))
    config = yaml.safe_load(open(os.path.join(folder, "config.yml")))  # noqa: SIM115
    (tmp_path / "config.yml").write_text(yaml.safe_dump({**config, "output_delay": delay}))
    checkpoints = ("--encoder", official_path(entry["encoder_checkpoint"]), "--decoder", str(decoder))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        codec = StreamingCodec.from_checkpoints(*checkpoints[1::2])
        data, _ = read_audio(INPUT)
        whole = codec.audio_from_streams(codec.code(codec.streams_from_audio(data))[1])
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "stream.wav"
    result = subprocess.run([python, os.path.join(REPO, "demoStream.py"), *checkpoints, "--num_threads", "1",
                             "--input_file", INPUT, "--no-pace", "-o", str(out)], capture_output=True, text=True,
                            timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    streamed, _ = sf.read(out, always_2d=True, dtype="float32")
    assert streamed.shape == whole.shape == (96000, 1)
    assert np.abs(streamed - whole).max() < 1e-5
