"""Preemption-safe training: trainer/preemption.py's signal flag, its agreement across ranks, requeue."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from trainer.preemption import PreemptionHandler


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGTERM])
def test_a_stop_signal_sets_the_flag_and_uninstall_restores(signum: signal.Signals) -> None:
    previous = signal.getsignal(signum)
    with PreemptionHandler() as preemption:
        assert not preemption.should_stop()
        os.kill(os.getpid(), signum)
        assert preemption.requested and preemption.received == signum
        assert preemption.should_stop()
    assert signal.getsignal(signum) is previous


@pytest.fixture
def unused_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rank_stops_at(rank: int, world_size: int, port: int, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    preemption = PreemptionHandler().install()
    stopped_at = None
    for step in range(1, 6):
        if rank == 1 and step == 3:
            os.kill(os.getpid(), signal.SIGUSR1)
        if preemption.should_stop():
            stopped_at = step
            break
    results[rank] = stopped_at
    dist.barrier()
    dist.destroy_process_group()


def test_every_rank_stops_at_the_step_one_rank_was_signalled(unused_tcp_port: int) -> None:
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank_stops_at, args=(2, unused_tcp_port, results), nprocs=2, join=True)
        assert dict(results) == {0: 3, 1: 3}


@pytest.fixture
def fake_scontrol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    calls = tmp_path / "calls"
    stub = tmp_path / "scontrol"
    stub.write_text(f'#!/usr/bin/env bash\necho "$*" >> {calls}\n')
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    return calls


def test_requeue_asks_scontrol_under_slurm_when_enabled(fake_scontrol: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    monkeypatch.setenv("AUDIODEC_REQUEUE", "1")
    assert PreemptionHandler().requeue()
    assert fake_scontrol.read_text() == "requeue 1234\n"


@pytest.mark.parametrize(("job", "enabled"), [("1234", "0"), (None, "1")])
def test_no_requeue_unless_enabled_and_under_slurm(
    fake_scontrol: Path, monkeypatch: pytest.MonkeyPatch, job: str | None, enabled: str
) -> None:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    if job is not None:
        monkeypatch.setenv("SLURM_JOB_ID", job)
    monkeypatch.setenv("AUDIODEC_REQUEUE", enabled)
    assert not PreemptionHandler().requeue()
    assert not PreemptionHandler(requeue=False).requeue()
    assert not fake_scontrol.exists()
