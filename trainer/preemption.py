"""Stop training cleanly when the job is told to stop (preemption, the time limit's warning signal).

SLURM sends SIGTERM before it preempts or cancels a job, and the launcher (``utils/recipe/launcher.sh``) asks
for SIGUSR1 shortly before the time limit; ``scancel --signal=USR1 <job>`` sends it by hand. A
:class:`PreemptionHandler` turns those signals into a flag that the training loop reads once per
step: the loop then saves a checkpoint at the step it reached and returns, so the process exits 0 and
the next run (``--resume auto``) continues from there (under torchrun, :mod:`trainer.torchrun` passes
the signal on to the ranks and exits 0 with them). With ``requeue`` (or ``AUDIODEC_REQUEUE=1``,
which ``--requeue true`` of the launcher sets) a job running under SLURM requeues itself afterwards::

    preemption = PreemptionHandler().install()
    for batch in loader:
        train_step(batch)
        if preemption.should_stop():
            save_checkpoint(steps)
            preemption.requeue()
            break
    preemption.uninstall()
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from types import FrameType

import torch
import torch.distributed as dist

from trainer.distributed import cpu_group

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)
REQUEUE_ENVIRONMENT_VARIABLE = "AUDIODEC_REQUEUE"


class PreemptionHandler:
    """Signal handlers that ask the training loop to checkpoint and stop.

    Args:
        signals: the signals that ask for a stop.
        requeue: requeue the SLURM job after the stop; None reads ``AUDIODEC_REQUEUE`` (1 = yes).
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS, requeue: bool | None = None) -> None:
        self.signals = tuple(signals)
        if requeue is None:
            requeue = os.environ.get(REQUEUE_ENVIRONMENT_VARIABLE, "0") not in ("", "0", "false")
        self.requeue_after_stop = requeue
        self.received: signal.Signals | None = None
        self._previous_handlers: dict[signal.Signals, object] = {}

    def install(self) -> PreemptionHandler:
        """Install the handlers (main thread only); returns self."""
        for signum in self.signals:
            self._previous_handlers[signum] = signal.signal(signum, self._handle)
        return self

    def uninstall(self) -> None:
        """Put back the handlers that were there before :meth:`install`."""
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()

    def __enter__(self) -> PreemptionHandler:
        return self.install()

    def __exit__(self, *exc_info: object) -> None:
        self.uninstall()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # Only set the flag: the loop saves at a step boundary, where the state is consistent.
        self.received = signal.Signals(signum)

    @property
    def requested(self) -> bool:
        """Whether this process received a stop signal."""
        return self.received is not None

    def should_stop(self) -> bool:
        """Whether the loop should checkpoint and stop after this step.

        Under ``torch.distributed`` every rank must stop at the same step (or the others would wait
        forever in the next all-reduce), so the flags of all ranks are combined: a collective call,
        made by every rank once per step. It runs on the CPU (the default group under gloo, a gloo
        group of its own under NCCL), so reading its result never waits for the GPU.
        """
        if dist.is_available() and dist.is_initialized():
            flag = torch.tensor([1.0 if self.requested else 0.0])
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=cpu_group())
            stop = bool(flag.item() > 0)
        else:
            stop = self.requested
        if stop:
            name = self.received.name if self.received is not None else "another rank's signal"
            logger.info("Stop requested (%s): saving a checkpoint and exiting", name)
        return stop

    def requeue(self) -> bool:
        """Requeue this SLURM job if asked to and running under SLURM (rank 0 only); True if requeued."""
        job_id = os.environ.get("SLURM_JOB_ID")
        if not self.requeue_after_stop or not job_id:
            return False
        if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
            return False
        result = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True)
        if result.returncode != 0:
            logger.warning("scontrol requeue %s failed: %s", job_id, result.stderr.strip())
            return False
        logger.info("Requeued SLURM job %s: it resumes from the checkpoint just saved", job_id)
        return True
