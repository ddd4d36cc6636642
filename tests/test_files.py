"""Outputs written through a temp file end up with the umask's permissions, not mkstemp's owner-only mode."""

from __future__ import annotations

import os
import stat

import numpy as np

from utils.audio import write_audio
from utils.files import default_file_mode, publish


def test_published_file_has_the_umask_mode(tmp_path) -> None:
    previous = os.umask(0o022)
    try:
        assert default_file_mode() == 0o644
        tmp = tmp_path / ".tmp-x"
        tmp.write_bytes(b"data")
        os.chmod(tmp, 0o600)
        publish(tmp, tmp_path / "x.bin")
        assert stat.S_IMODE(os.stat(tmp_path / "x.bin").st_mode) == 0o644 and not tmp.exists()
        write_audio(str(tmp_path / "a.wav"), np.zeros((100, 1), np.float32), 48000)
        assert stat.S_IMODE(os.stat(tmp_path / "a.wav").st_mode) == 0o644
    finally:
        os.umask(previous)
