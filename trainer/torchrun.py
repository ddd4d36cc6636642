"""torchrun for training runs: a stop signal lets every rank save its checkpoint, and the run then ends as
its ranks end (exit status 0, no traceback)::

    python -m trainer.torchrun --standalone --nproc_per_node 2 codecTrain.py -c ... --tag ...

It takes ``torch.distributed.run``'s arguments and runs it. torchrun alone turns SIGTERM into an
exception: it passes the signal on to its ranks, waits for them (then kills the ones left), and exits 1
with a traceback even where every rank saved its checkpoint and exited 0 (:mod:`trainer.preemption`);
SIGUSR1, which it does not handle, ends it at once. Here the first SIGTERM or SIGUSR1 is passed on to
the ranks and torchrun goes on watching them as it does while they train: once every rank has exited
0, torchrun does too, and a rank that fails fails the run as before. Where the ranks have not started,
a second stop signal, and SIGINT, SIGHUP, SIGQUIT, are torchrun's own (Linux: the ranks are found under
``/proc``; elsewhere torchrun runs as it is).

A run whose rank fails ends with that rank's own one-line error, torchrun's log lines on stopping the
others, and a last line naming the rank and its exit status (exit status 1), not torchrun's
ChildFailedError block and traceback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from torch.distributed import run
from torch.distributed.elastic.multiprocessing import api
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

from trainer.preemption import STOP_SIGNALS

Handler = Callable[[int, FrameType | None], None]


def child_processes() -> list[int]:
    """The process ids of this process's children (torchrun's ranks)."""
    parent, children = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:  # "pid (command) state ppid ...": the command may hold spaces and parentheses
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # it ended meanwhile
            continue
        if int(fields[1]) == parent:
            children.append(int(entry.name))
    return children


class StopSignalRelay:
    """A signal handler that passes the first stop signal on to the ranks and lets torchrun watch them
    end; any other signal, or one that finds no rank, goes to ``torchrun_handler``."""

    def __init__(self, torchrun_handler: Handler) -> None:
        self.torchrun_handler = torchrun_handler
        self.passed_on = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        ranks = child_processes() if signum in STOP_SIGNALS and not self.passed_on else []
        if not ranks:
            self.torchrun_handler(signum, frame)
            return
        self.passed_on = True
        for pid in ranks:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        processes = f"{len(ranks)} training process{'es' if len(ranks) > 1 else ''}"
        print(f"torchrun: {signal.Signals(signum).name} passed on to its {processes}: they save a checkpoint and exit",
              file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    """Run torchrun (``torch.distributed.run``) with ``argv`` (default: the command line)."""
    torchrun_handler = getattr(api, "_terminate_process_handler", None)
    if torchrun_handler is not None and Path("/proc/self/stat").is_file():
        relay = StopSignalRelay(torchrun_handler)
        # torchrun installs this name's handler for SIGTERM (and SIGINT, SIGHUP, SIGQUIT) once its ranks start.
        api._terminate_process_handler = relay
        signal.signal(signal.SIGUSR1, relay)
    try:
        run.main(argv)
    except ChildFailedError as failed:
        print(f"torchrun: {first_failure(failed)}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def first_failure(failed: ChildFailedError) -> str:
    """One line for the rank that failed first: the rank's own output above says why, so torchrun's
    block (times, hosts, a link about tracebacks) adds nothing but length."""
    rank, failure = failed.get_first_failure()
    if failure.exitcode < 0:
        with contextlib.suppress(ValueError):
            return f"{failed.name} failed: rank {rank} was killed by {signal.Signals(-failure.exitcode).name}"
    return f"{failed.name} failed: rank {rank} exited with status {failure.exitcode}"


if __name__ == "__main__":
    main()
