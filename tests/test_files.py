"""Atomic outputs: the umask's permissions (not mkstemp's owner-only mode), and nothing left on failure."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from utils.audio import write_audio
from utils.files import atomic_output, default_file_mode, write_bytes_atomic


def test_published_file_has_the_umask_mode(tmp_path) -> None:
    previous = os.umask(0o022)
    try:
        assert default_file_mode() == 0o644
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
