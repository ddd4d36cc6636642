"""The SLURM launcher (utils/launcher.sh) against a real single-node SLURM started for the session.

The fixture writes a slurm.conf for this host (its CPUs, one partition `debug`), a munge key, and runs
munged, slurmctld and slurmd from a temporary folder on their own ports; the tests skip (saying why)
only when the daemons cannot start. Recipes run in a sandbox: a folder that links the repository's
code and holds its own tiny configs, corpus, exp/, output/ and slurmlogs/.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "sinfo", "scontrol", "squeue", "scancel")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


class SlurmCluster:
    """A single-node SLURM cluster (munged, slurmctld, slurmd) living in one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.node = subprocess.run(["hostname", "-s"], capture_output=True, text=True, check=True).stdout.strip()
        self.env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf")}
        self.processes: list[subprocess.Popen] = []

    def write_config(self) -> None:
        folder = self.folder
        for name in ("state", "spool", "log", "munge"):
            (folder / name).mkdir(mode=0o700, exist_ok=True)
        key = folder / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(secrets.token_bytes(1024))
            key.chmod(0o600)
        config = {
            "ClusterName": "audiodectest",
            "SlurmctldHost": self.node,
            "SlurmUser": "root",
            "SlurmdUser": "root",
            "SlurmctldPort": free_port(),
            "SlurmdPort": free_port(),
            "AuthType": "auth/munge",
            "AuthInfo": f"socket={folder / 'munge' / 'munge.sock'}",
            "StateSaveLocation": folder / "state",
            "SlurmdSpoolDir": folder / "spool",
            "SlurmctldPidFile": folder / "slurmctld.pid",
            "SlurmdPidFile": folder / "slurmd.pid",
            "SlurmctldLogFile": folder / "log" / "slurmctld.log",
            "SlurmdLogFile": folder / "log" / "slurmd.log",
            "ProctrackType": "proctrack/linuxproc",
            "TaskPlugin": "task/none",
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_CPU",
            "SchedulerParameters": "sched_min_interval=0",
            "ReturnToService": 2,
            "MpiDefault": "none",
            "JobAcctGatherType": "jobacct_gather/none",
            "AccountingStorageType": "accounting_storage/none",
            "InactiveLimit": 0,
            "MinJobAge": 600,
            "KillWait": 10,
            "JobRequeue": 1,
        }
        lines = [f"{key}={value}" for key, value in config.items()]
        lines.append(f"NodeName={self.node} CPUs={os.cpu_count()} State=UNKNOWN")
        lines.append("PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES")
        (folder / "slurm.conf").write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        self.write_config()
        munge = self.folder / "munge"
        self._spawn(
            ["munged", "--foreground", "--force", f"--socket={munge / 'munge.sock'}",
             f"--key-file={munge / 'munge.key'}", f"--log-file={munge / 'munged.log'}",
             f"--pid-file={munge / 'munged.pid'}", f"--seed-file={munge / 'munged.seed'}"]
        )  # fmt: skip
        self._wait_for(lambda: (munge / "munge.sock").exists(), "munged did not create its socket")
        self._spawn(["slurmctld", "-D", "-i"])
        self._wait_for(lambda: self.run("sinfo", "-h", check=False).returncode == 0, "slurmctld did not answer")
        self._spawn(["slurmd", "-D"])
        self._wait_for(self._node_idle, "the node did not become idle")

    def _spawn(self, command: list[str]) -> None:
        log = open(self.folder / "log" / f"{command[0]}.out", "w")  # noqa: SIM115 - closed with the process
        self.processes.append(
            subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )

    def _node_idle(self) -> bool:
        state = self.run("sinfo", "-h", "-N", "-o", "%t", check=False).stdout.strip()
        if state.startswith(("down", "drain", "unk")):
            self.run("scontrol", "update", f"nodename={self.node}", "state=resume", check=False)
        return state == "idle"

    def _wait_for(self, condition, message: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(process.poll() is not None for process in self.processes):
                break
            if condition():
                return
            time.sleep(0.3)
        logs = " | ".join(path.read_text()[-300:] for path in sorted((self.folder / "log").glob("*")))
        raise RuntimeError(f"{message}: {logs}")

    def run(self, *command: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(command, env=self.env, capture_output=True, text=True, check=check, timeout=timeout)

    def wait_for_jobs(self, jobs: list[str], timeout: float = 180) -> None:
        """Wait until none of the jobs is pending, running or completing."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listed = self.run("squeue", "-h", "-o", "%i %t", "-j", ",".join(jobs), check=False).stdout.split("\n")
            if not any(line.strip() for line in listed):
                return
            time.sleep(0.5)
        raise TimeoutError(f"jobs {jobs} still queued: {self.run('squeue', check=False).stdout}")

    def job_state(self, job: str) -> str:
        """State of a job slurmctld still remembers (MinJobAge), e.g. COMPLETED, FAILED, PENDING."""
        shown = self.run("scontrol", "show", "job", job, check=False).stdout
        match = re.search(r"JobState=(\S+)", shown)
        return match.group(1) if match else "UNKNOWN"

    def stop(self) -> None:
        self.run("scancel", "--user", os.environ.get("USER", "root"), check=False)
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    missing = [name for name in DAEMONS if shutil.which(name) is None]
    if missing:
        pytest.skip(f"SLURM/munge not installed ({', '.join(missing)}): run utils/system_deps.sh as root")
    if os.geteuid() != 0:
        pytest.skip("the test SLURM cluster runs its daemons as root")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except (RuntimeError, OSError) as error:
        cluster.stop()
        pytest.skip(f"the SLURM daemons did not start: {error}")
    yield cluster
    cluster.stop()


# ---- recipes in a sandbox ------------------------------------------------------------------------


def recipe_sandbox(folder: Path, own: tuple[str, ...] = ()) -> Path:
    """A folder that runs the recipes: links to the repository's code, its own config/ and outputs.

    ``own`` names more entries to leave out (for a test to put its own there).
    """
    folder.mkdir(parents=True, exist_ok=True)
    own = {"config", "corpus", "corpus24k", "exp", "output", "stats", "slurmlogs", *own}
    for entry in ROOT.iterdir():
        if entry.name not in own and not entry.name.startswith("."):
            (folder / entry.name).symlink_to(entry)
    (folder / "config").mkdir()
    for kind in (ROOT / "config").iterdir():
        if kind.is_dir():
            (folder / "config" / kind.name).mkdir()
    return folder


def stub_python(folder: Path) -> Path:
    """An interpreter that prints what it was asked to run, with the time, instead of running it."""
    stub = folder / "stub-python"
    stub.write_text('#!/usr/bin/env bash\necho "RUN $* at $(date +%s.%N)"\nsleep 0.5\n')
    stub.chmod(0o755)
    return stub


def submitted_jobs(stdout: str) -> list[str]:
    return re.findall(r"submitted job (\d+)", stdout)


def stage_times(log: Path) -> tuple[float, float]:
    """(start, end) epoch seconds that the launcher's job script wrote into a job log."""
    text = log.read_text()
    start = re.search(r"launcher: stage .* started on .* at ([0-9.]+)", text)
    end = re.search(r"launcher: stage .* finished at ([0-9.]+)", text)
    assert start and end, text
    return float(start.group(1)), float(end.group(1))


def bash(*args: str, env: dict, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_stub_stages_run_in_order_with_logs(slurm: SlurmCluster, tmp_path: Path) -> None:
    sandbox = recipe_sandbox(tmp_path / "recipe")
    env = {**slurm.env, "PYTHON": str(stub_python(tmp_path))}
    result = bash("submit_codec_demo.sh", "--start", "0", "--stop", "4", "--cmd", "slurm", "--cpus", "1",
                  env=env, cwd=sandbox)  # fmt: skip
    assert result.returncode == 0, result.stderr
    jobs = submitted_jobs(result.stdout)
    assert len(jobs) == 5 and f"squeue -u {os.environ.get('USER', 'root')}" in result.stdout
    assert "tail -f " in result.stdout and "(after " in result.stdout
    slurm.wait_for_jobs(jobs)
    assert [slurm.job_state(job) for job in jobs] == ["COMPLETED"] * 5
    logs = [next((sandbox / "slurmlogs").glob(f"*-stage{stage}-{job}.log")) for stage, job in enumerate(jobs)]
    times = [stage_times(log) for log in logs]
    for (_, end), (next_start, _) in zip(times, times[1:]):
        assert end <= next_start
    first = logs[0].read_text()
    assert "RUN codecTrain.py -c config/autoencoder/demo_48000_hop300.yaml" in first
    assert first.split("RUN ")[1].split(" at ")[0].endswith("--resume auto")
    assert "RUN codecTest.py" in logs[4].read_text()


def test_a_failed_stage_stops_the_chain(slurm: SlurmCluster, tmp_path: Path) -> None:
    sandbox = recipe_sandbox(tmp_path / "recipe")
    failing = tmp_path / "failing-python"
    failing.write_text("#!/usr/bin/env bash\necho failing; exit 3\n")
    failing.chmod(0o755)
    result = bash("submit_codec_demo.sh", "--start", "1", "--stop", "2", "--cmd", "slurm", "--cpus", "1",
                  env={**slurm.env, "PYTHON": str(failing)}, cwd=sandbox)  # fmt: skip
    assert result.returncode == 0, result.stderr
    first, second = submitted_jobs(result.stdout)
    slurm.wait_for_jobs([first], timeout=60)
    assert slurm.job_state(first) == "FAILED"
    reason, deadline = "", time.monotonic() + 30
    while slurm.job_state(second) == "PENDING" and time.monotonic() < deadline:
        reason = slurm.run("squeue", "-h", "-o", "%r", "-j", second, check=False).stdout.strip()
        if reason == "DependencyNeverSatisfied":
            break
        time.sleep(0.5)
    slurm.run("scancel", second, check=False)
    assert "Dependency" in reason or slurm.job_state(second) == "CANCELLED"


def test_dry_run_prints_sbatch_lines_and_submits_nothing(slurm: SlurmCluster, tmp_path: Path) -> None:
    sandbox = recipe_sandbox(tmp_path / "recipe")
    before = slurm.run("squeue", "-h").stdout
    result = bash("submit_vocoder.sh", "--stage", "012", "--cmd", "slurm", "--dry-run", "--partition", "debug",
                  "--ngpu", "4", "--nnodes", "2", "--gpus", "1", "--mem", "8G", "--time", "1:00:00",
                  env={**slurm.env, "PYTHON": str(stub_python(tmp_path))}, cwd=sandbox)  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("sbatch ")]
    assert len(lines) == 3
    assert all("--partition debug" in line and "--nodes 2" in line and "--mem 8G" in line for line in lines)
    assert "--gpus-per-node 4" in lines[0] and "--signal USR1@120" in lines[0]
    assert "--gpus-per-node 1" in lines[2] and "--signal" not in lines[2]
    assert "--dependency afterok:STAGE0_JOB" in lines[1] and "--dependency afterok:STAGE1_JOB" in lines[2]
    assert "Dry run: nothing submitted" in result.stdout
    assert slurm.run("squeue", "-h").stdout == before


def hidden_sbatch_path(folder: Path) -> str:
    """A PATH with every command of the current PATH except the SLURM clients."""
    folder.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            if entry.name.startswith(("sbatch", "srun", "sinfo", "scontrol")) or (folder / entry.name).exists():
                continue
            (folder / entry.name).symlink_to(entry.path)
    return str(folder)


@pytest.mark.parametrize("case", ["no-sbatch", "bad-partition", "bad-cmd"])
def test_bad_input_fails_with_one_line_before_submitting(slurm: SlurmCluster, tmp_path: Path, case: str) -> None:
    sandbox = recipe_sandbox(tmp_path / "recipe")
    env = {**slurm.env, "PYTHON": str(stub_python(tmp_path))}
    args = ["submit_codec_demo.sh", "--start", "0", "--stop", "4", "--cmd", "slurm"]
    if case == "no-sbatch":
        env["PATH"] = hidden_sbatch_path(tmp_path / "bin")
        message = "needs sbatch, which is not on PATH"
    elif case == "bad-partition":
        args += ["--partition", "no_such_partition"]
        message = "partition 'no_such_partition' does not exist"
    else:
        args[-1] = "pbs"
        message = "--cmd must be local or slurm"
    before = slurm.run("squeue", "-h").stdout
    result = bash(*args, env=env, cwd=sandbox)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr
    assert "RUN " not in result.stdout and "submitted" not in result.stdout
    assert slurm.run("squeue", "-h").stdout == before


RENDEZVOUS_PROBE = """
import sys

import torch
import torch.distributed as dist

dist.init_process_group("gloo")
total = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(total)
print(f"PROBE rank={dist.get_rank()} world={dist.get_world_size()} sum={total.item():g} "
      f"args={' '.join(sys.argv[1:])}", flush=True)
dist.destroy_process_group()
"""


def test_two_srun_tasks_meet_at_the_first_node(slurm: SlurmCluster, tmp_path: Path) -> None:
    """--nnodes 2 runs one torchrun per task with the rendezvous from SLURM's environment.

    The cluster has one node, so the two "nodes" are two tasks on it (extra sbatch options).
    """
    sandbox = recipe_sandbox(tmp_path / "recipe", own=("codecTrain.py",))
    (sandbox / "codecTrain.py").write_text(RENDEZVOUS_PROBE)
    env = {**slurm.env, "PYTHON": str(ROOT / ".venv" / "bin" / "python")}
    env.pop("MASTER_ADDR", None)
    result = bash("submit_autoencoder.sh", "--stage", "0", "--tag_name", "autoencoder/demo_48000_hop300",
                  "--nnodes", "2", "--cmd", "slurm", "--cpus", "1",
                  "--sbatch_args", "--nodes=1 --ntasks-per-node=2", env=env, cwd=sandbox)  # fmt: skip
    assert result.returncode == 0, result.stderr
    (job,) = submitted_jobs(result.stdout)
    slurm.wait_for_jobs([job], timeout=120)
    log = next((sandbox / "slurmlogs").glob(f"*-stage0-{job}.log")).read_text()
    assert slurm.job_state(job) == "COMPLETED", log
    probes = sorted(line for line in log.splitlines() if line.startswith("PROBE "))
    assert [probe.split(" args=")[0] for probe in probes] == [
        "PROBE rank=0 world=2 sum=3",
        "PROBE rank=1 world=2 sum=3",
    ], log
    assert all(probe.endswith("--resume auto") for probe in probes), probes
    assert f"launcher: rendezvous {slurm.node}:" in log and "for 2 tasks" in log
