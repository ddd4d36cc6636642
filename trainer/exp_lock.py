"""One training run per experiment folder at a time.

A second `codecTrain.py` (or a recipe submitted twice) with the same `--tag` would overwrite the
first run's config, checkpoints and learning curve while it trains. The first run holds an advisory
lock (`flock`) on a file in the folder for as long as it trains; the kernel drops it when the
process ends, however it ends, so a killed or preempted run leaves nothing that blocks the next.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from pathlib import Path
from typing import TextIO

from utils.errors import CodecError
from utils.files import write_failure

logger = logging.getLogger(__name__)

LOCK_NAME = ".training.lock"


class ExperimentLock:
    """The held lock of one experiment folder; `release()` (or the process's end) lets it go."""

    def __init__(self, path: Path, handle: TextIO | None) -> None:
        self.path = path
        self._handle = handle

    def release(self) -> None:
        """Let the lock go. Called as a run ends however it ends: a lock file that cannot be removed
        (the folder made read-only meanwhile) is said in a warning, not raised over the run's own error."""
        if self._handle is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # before the lock goes: nothing sees a free, stale file
        except OSError as error:
            logger.warning("cannot remove %s (%s): it holds no lock now, and may be deleted", self.path,
                           error.strerror or error)
        with contextlib.suppress(OSError):  # (the holder's line may not reach a full disk: nothing is lost)
            self._handle.close()
        self._handle = None


def hold_experiment(expdir: Path) -> ExperimentLock:
    """Take `expdir`'s lock for this process, or raise a CodecError naming the run that holds it.

    Where the file system has no locks (some network file systems), a warning says so and the run
    goes on unguarded.
    """
    path = Path(expdir) / LOCK_NAME
    try:
        import fcntl
    except ImportError:  # not a POSIX system
        return ExperimentLock(path, None)
    try:
        handle = open(path, "a+", encoding="utf-8")
    except OSError as error:
        raise write_failure(path, error) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise CodecError(
            f"{expdir} is being trained by another run ({holder}): wait for it to end, stop it, or give "
            "another --tag"
        ) from None
    except OSError as error:
        handle.close()
        logger.warning("cannot lock %s (%s): make sure no other run trains into it", expdir, error.strerror)
        return ExperimentLock(path, None)
    lock = ExperimentLock(path, handle)
    try:  # who holds it, for the run refused beside it
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
    except OSError as error:  # a full disk: the run could not save anything either
        lock.release()
        raise write_failure(path, error) from None
    return lock
