"""Atomic outputs: the umask's permissions (not mkstemp's owner-only mode), and nothing left on failure."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, ctrl_c_default
from utils import files
from utils.audio import check_audio_output, write_audio
from utils.bitstream.adc import BitstreamError
from utils.errors import CodecError
from utils.files import (
    atomic_output,
    check_output_folder,
    default_file_mode,
    make_output_folder,
    remove_unfilled_folders,
    write_bytes_atomic,
)


def test_published_file_has_the_umask_mode(tmp_path) -> None:
    previous = os.umask(0o022)
    try:
        assert default_file_mode() == 0o644
        assert default_file_mode(executable=True) == 0o755
        write_bytes_atomic(tmp_path / "x.bin", b"data")
        assert stat.S_IMODE(os.stat(tmp_path / "x.bin").st_mode) == 0o644
        assert (tmp_path / "x.bin").read_bytes() == b"data"
        write_audio(str(tmp_path / "a.wav"), np.zeros((100, 1), np.float32), 48000)
        assert stat.S_IMODE(os.stat(tmp_path / "a.wav").st_mode) == 0o644
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "x.bin"]  # no temp files left
    finally:
        os.umask(previous)


def test_failed_write_leaves_neither_target_nor_temp_file(tmp_path) -> None:
    (tmp_path / "keep.bin").write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_output(tmp_path / "keep.bin") as tmp:
        with open(tmp, "wb") as stream:
            stream.write(b"half")
        raise RuntimeError("interrupted")
    assert (tmp_path / "keep.bin").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.bin"]


def test_an_output_folder_that_cannot_take_the_file_is_named(tmp_path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(CodecError, match=rf"cannot write .*: {tmp_path / 'file'} is a file, not a folder"):
        check_output_folder(tmp_path / "file" / "deeper" / "out.wav")
    with pytest.raises(BitstreamError, match=f"output folder {tmp_path / 'nowhere'} does not exist: create it first"):
        check_output_folder(tmp_path / "nowhere" / "out.adc", BitstreamError)
    check_output_folder(tmp_path / "out.wav")  # a folder that exists
    for folder in (str(tmp_path), f"{tmp_path / 'new'}/"):  # a folder is no file name, made or not
        with pytest.raises(CodecError, match=rf"cannot write {folder}: it names a folder: give a file name"):
            check_output_folder(folder)
    with pytest.raises(CodecError, match=r"cannot write .*\(Not a directory\): give another output path"):
        with atomic_output(tmp_path / "file" / "out.bin"):
            pass  # never reached: the temp file cannot be made there
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize("name, subtype, message", [
    ("out.xyz", "PCM_16", r"\(a .xyz file does not hold PCM_16 samples\): give a .wav or .flac output name"),
    ("out", "PCM_16", r"\(it has no extension\): give a .wav or .flac"),
    ("out.flac", "FLOAT", r"\(a .flac file does not hold FLOAT samples\): give a .wav output name"),
])
def test_an_audio_output_name_without_a_format_for_its_samples_is_refused(tmp_path, name, subtype, message) -> None:
    with pytest.raises(CodecError, match=message):
        check_audio_output(tmp_path / name, subtype)
    with pytest.raises(CodecError, match=message):
        write_audio(str(tmp_path / name), np.zeros((10, 1), np.float32), 48000, subtype)
    assert list(tmp_path.iterdir()) == []
    check_audio_output(tmp_path / "out.wav", subtype)
    check_audio_output(tmp_path / "out.FLAC", "PCM_16")


def test_folders_made_for_outputs_go_again_while_they_hold_no_file(tmp_path, monkeypatch) -> None:
    """A failed command removes the output folders it made that hold no file, and only those: a
    folder that existed before, or one the work put a file in, stays."""
    monkeypatch.setattr(files, "_MADE", [])  # not the folders earlier tests in this process made
    (tmp_path / "existing").mkdir()
    make_output_folder(tmp_path / "existing" / "new" / "deeper", "--out")
    make_output_folder(tmp_path / "filled" / "empty", "--plots")
    (tmp_path / "filled" / "report.json").write_text("{}")
    make_output_folder(tmp_path / "existing", "--out")  # made nothing
    remove_unfilled_folders()
    assert sorted(path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*")) == [
        "existing", "filled", "filled/report.json",
    ]
    remove_unfilled_folders()  # nothing left to remove: no error
    assert (tmp_path / "existing").is_dir()


class _FullDisk:
    """A file whose writes fail as on a full disk, from the `full_after`-th open on."""

    def __init__(self, real_open, full_after: int) -> None:
        self.real_open, self.opened, self.full_after = real_open, 0, full_after

    def __call__(self, path, mode="r", *args, **kwargs):
        self.opened += 1
        handle = self.real_open(path, mode, *args, **kwargs)
        if self.opened < self.full_after:
            return handle

        class Full:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                handle.close()

            def write(self, data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            def seek(self, offset, whence=os.SEEK_SET):
                return 0

            def tell(self):
                return 0
        return Full()


@pytest.mark.parametrize("full_after", [1, 2])
def test_a_full_disk_is_named_and_leaves_none_of_the_outputs(tmp_path, monkeypatch, full_after: int) -> None:
    """write_outputs writes every file before it renames any: the second failing leaves no first either."""
    monkeypatch.setattr(files, "open", _FullDisk(open, full_after), raising=False)
    first, second = tmp_path / "out.wav", tmp_path / "codes.npy"
    with pytest.raises(CodecError) as caught:
        files.write_outputs({first: b"RIFF", second: b"NUMPY"})
    failed = first if full_after == 1 else second
    assert str(caught.value) == f"no space left on device writing {failed}: free space or write elsewhere"
    assert os.listdir(tmp_path) == []


def test_audio_and_adc_writers_name_a_full_disk(tmp_path, monkeypatch) -> None:
    """Audio goes to disk through a Python stream whose OSError is kept, so that libsndfile's 'System
    error.' does not hide the system's reason; other OS errors are given in their own words."""
    from utils.bitstream.adc import StreamHeader, write_adc

    monkeypatch.setattr(files, "open", _FullDisk(open, 1), raising=False)
    with pytest.raises(CodecError, match=r"^no space left on device writing .*x\.wav: free space or write elsewhere$"):
        write_audio(str(tmp_path / "x.wav"), np.zeros((4800, 1)), 48000)
    header = StreamHeader(sample_rate=48000, hop=300, channels=1, n_samples=300, n_codebooks=1, codebook_size=1024)
    with pytest.raises(CodecError, match=r"^no space left on device writing .*x\.adc"):
        write_adc(tmp_path / "x.adc", header, np.zeros((1, 1, 1), np.int64))
    assert os.listdir(tmp_path) == []
    assert str(files.write_failure("y", OSError(errno.EIO, os.strerror(errno.EIO)))) == \
        "cannot write y (Input/output error): give another output path"


def test_a_disk_full_in_mid_audio_is_named_and_leaves_no_temp_file(tmp_path, monkeypatch) -> None:
    """The disk fills after libsndfile has written part of the file: one line naming it, no temp file,
    and the file that was there before untouched."""
    (tmp_path / "x.wav").write_bytes(b"old")
    real_open = open

    class FillsUp:
        """A file on a disk with room for 100 kB."""

        def __init__(self, handle) -> None:
            self.handle, self.written = handle, 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            self.written += len(data)
            if self.written > 100_000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.handle.write(data)

        def seek(self, *args):
            return self.handle.seek(*args)

        def tell(self):
            return self.handle.tell()

    monkeypatch.setattr(files, "open", lambda *args, **kwargs: FillsUp(real_open(*args, **kwargs)), raising=False)
    with pytest.raises(CodecError) as caught:
        write_audio(str(tmp_path / "x.wav"), np.zeros((48000, 2), np.float32), 48000)
    assert str(caught.value) == f"no space left on device writing {tmp_path / 'x.wav'}: free space or write elsewhere"
    assert os.listdir(tmp_path) == ["x.wav"] and (tmp_path / "x.wav").read_bytes() == b"old"


def test_write_audio_holds_no_copy_of_the_file_in_memory(tmp_path) -> None:
    """A long decoding is written a block at a time: the memory Python allocates while writing (and
    scanning for NaN and clipping) stays far below the file's size."""
    import tracemalloc

    import soundfile as sf

    audio = np.full((30 * 48000, 2), 0.25, np.float32)  # 30 s of 48 kHz stereo: a 5.8 MB WAV
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        write_audio(str(tmp_path / "long.wav"), audio, 48000)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    size = os.path.getsize(tmp_path / "long.wav")
    assert peak < 0.5 * size, f"{peak} bytes allocated writing a {size}-byte file"
    assert sf.info(tmp_path / "long.wav").frames == audio.shape[0]
    np.testing.assert_array_equal(sf.read(tmp_path / "long.wav", dtype="int16")[0][-1], [8192, 8192])


def test_the_output_folder_probe_names_a_full_disk(tmp_path, monkeypatch) -> None:
    """The check before the work and the temp file of every write say 'no space left', not a bare reason."""

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.tempfile, "mkstemp", full)
    expected = f"no space left on device writing {tmp_path / 'x.wav'}: free space or write elsewhere"
    with pytest.raises(CodecError) as caught:
        files.check_output_folder(tmp_path / "x.wav")
    assert str(caught.value) == expected
    with pytest.raises(CodecError) as caught:
        files.write_bytes_atomic(tmp_path / "x.wav", b"RIFF")
    assert str(caught.value) == expected
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc, a folder that takes no files")
def test_an_output_folder_that_takes_no_files_is_named_before_the_work() -> None:
    with pytest.raises(CodecError, match=r"^cannot write /proc/out.wav \(.+\): give another output path$"):
        check_audio_output("/proc/out.wav")


def test_same_path_sees_through_links_and_dots(tmp_path) -> None:
    (tmp_path / "a.wav").write_bytes(b"x")
    os.symlink(tmp_path / "a.wav", tmp_path / "link.wav")
    os.link(tmp_path / "a.wav", tmp_path / "hard.wav")
    assert files.same_path(tmp_path / "a.wav", f"{tmp_path}/./sub/../a.wav")
    assert files.same_path(tmp_path / "link.wav", tmp_path / "a.wav")
    assert files.same_path(tmp_path / "hard.wav", tmp_path / "a.wav")
    assert files.same_path(tmp_path / "new.npy", f"{tmp_path}/./new.npy")  # neither exists yet
    assert not files.same_path(tmp_path / "a.wav", tmp_path / "b.wav")


_STOPPED_WRITE = """
import os, signal, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, {repo!r})
from utils import audio
from utils.batch import run_batch
from utils.cli import run_main

write = audio._KeptWriteErrors.write

def write_once_stopped(self, data):  # the stop comes while libsndfile writes, in its callback
    if not getattr(audio, "stopped", False):
        audio.stopped = True
        os.kill(os.getpid(), signal.{signal})
    return write(self, data)

audio._KeptWriteErrors.write = write_once_stopped
data = np.zeros((48000, 2), np.float32)
out = Path(sys.argv[1])
run_main(lambda: run_batch([(Path("a.wav"), out / "a.wav"), (Path("b.wav"), out / "b.wav")],
                           lambda _, output: audio.write_audio(str(output), data, 48000, "PCM_16") or 1.0, "write"))
"""


@pytest.mark.parametrize("stop, status, line", [("SIGTERM", 143, "terminated"), ("SIGINT", 130, "interrupted")])
def test_a_stop_during_an_audio_write_stops_the_command(tmp_path, stop: str, status: int, line: str) -> None:
    """Ctrl-C or SIGTERM while libsndfile writes (its callbacks run Python, where the signal's exception
    would be printed and dropped by cffi) stops the command: its exit status, one line, no file of the
    batch written, no temp file; the next file is not begun."""
    script = tmp_path / "stopped.py"
    script.write_text(_STOPPED_WRITE.format(repo=str(REPO), signal=stop))
    out = tmp_path / "out"
    out.mkdir()
    result = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=120,
                            preexec_fn=ctrl_c_default)
    assert result.returncode == status, result.stderr
    assert result.stderr.strip().splitlines()[-1] == line and "Exception ignored" not in result.stderr
    assert os.listdir(out) == []


def test_the_case_probe_tells_a_disk_that_ignores_case(tmp_path, monkeypatch) -> None:
    """`ignores_case` makes a mixed-case temp file and looks it up by its case-swapped name; it leaves
    no file. Linux's disks tell case apart; one that ignores it is stood in for by a link from the
    swapped name to the probe (no case-insensitive disk can be mounted here)."""
    if sys.platform == "linux":
        assert not files.ignores_case(tmp_path)
        assert list(tmp_path.iterdir()) == []
    real_mkstemp = files.tempfile.mkstemp

    def mkstemp_with_twin(**kwargs):
        handle, probe = real_mkstemp(**kwargs)
        os.symlink(probe, os.path.join(os.path.dirname(probe), os.path.basename(probe).swapcase()))
        return handle, probe

    monkeypatch.setattr(files.tempfile, "mkstemp", mkstemp_with_twin)
    assert files.ignores_case(tmp_path)
    assert [path for path in tmp_path.iterdir() if not path.is_symlink()] == []  # the probe is gone, its twin left


def test_case_twins_are_names_that_differ_only_in_case() -> None:
    assert files.case_twins(["out/a.wav", "out/X.wav", "out/b.wav", "out/x.wav"]) == (1, 3)
    assert files.case_twins(["out/A/x.wav", "out/a/x.wav"]) == (0, 1)
    assert files.case_twins(["out/a.wav", "out/b.wav"]) is None


def test_an_atomic_write_onto_a_full_disk_is_one_line_and_leaves_the_target_as_it_was(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint, config.yml or curve written when the disk fills: a CodecError naming the path."""
    from utils import files

    target = tmp_path / "checkpoint.pkl"
    target.write_bytes(b"old")

    class Full:
        def __init__(self, *args, **kwargs) -> None:
            self._real = open(*args, **kwargs)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self._real.close()

        def write(self, data) -> int:
            raise OSError(28, os.strerror(28))

    monkeypatch.setattr(files, "open", Full, raising=False)
    with pytest.raises(CodecError, match=rf"^no space left on device writing {target}: free space or write elsewhere$"):
        files.write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["checkpoint.pkl"]
