"""The SLURM launcher (utils/recipe/launcher.sh) against a real single-node SLURM started for the session.

The fixture writes a slurm.conf for this host (its CPUs, two `gpu` GRES that no device backs, one
partition `debug`), a gres.conf (AutoDetect=off), a munge key, and runs munged, slurmctld and slurmd
from a temporary folder on their own ports; the tests skip (saying why) only when the daemons cannot
start. Recipes run in a sandbox: a folder that links the repository's
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
import torch
from test_preemption import (
    needs_trainer,
    recipe_sandbox,
    tiny_configs,
    training_env,
    wait_for_text,
    write_configs,
    write_corpus,
)

ROOT = Path(__file__).resolve().parent.parent
GPUS = 2  # generic resources `gpu` of the test node
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
            # A requeued job waits cred_expire (default 120 s) before it may start again.
            "AuthInfo": f"socket={folder / 'munge' / 'munge.sock'},cred_expire=10",
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
            "GresTypes": "gpu",
        }
        lines = [f"{key}={value}" for key, value in config.items()]
        lines.append(f"NodeName={self.node} CPUs={os.cpu_count()} Gres=gpu:{GPUS} State=UNKNOWN")
        # GPUs SLURM counts and allocates, with empty files for devices: the trainer sees no CUDA.
        for index in range(GPUS):
            (folder / f"gpu{index}").touch()
        (folder / "gres.conf").write_text(
            f"AutoDetect=off\nNodeName={self.node} Name=gpu File={folder}/gpu[0-{GPUS - 1}]\n"
        )
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


# ---- the launcher, with a stand-in interpreter --------------------------------------------------


def stub_python(folder: Path) -> Path:
    """An interpreter that prints what it was asked to run instead of running it."""
    stub = folder / "stub-python"
    stub.write_text('#!/usr/bin/env bash\necho "RUN $*"\n')
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


def shipped_configs(sandbox: Path, *tags: str) -> None:
    """Copy configs of config/ into a sandbox (the recipes check that a stage's config exists)."""
    for tag in tags:
        shutil.copy(ROOT / "config" / f"{tag}.yaml", sandbox / "config" / f"{tag}.yaml")


def test_a_failed_stage_stops_the_chain(slurm: SlurmCluster, tmp_path: Path) -> None:
    sandbox = recipe_sandbox(tmp_path / "recipe")
    shipped_configs(sandbox, "statistic/demo_48000_hop300", "vocoder/demo_v1_48000_hop300")
    failing = tmp_path / "failing-python"  # finds torch (the recipe checks), fails every stage
    failing.write_text('#!/usr/bin/env bash\n[ "$1" != -c ] || exit 0\necho failing; exit 3\n')
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
    shipped_configs(sandbox, "vocoder/AudioDec_v0_symAD_vctk_48000_hop300_clean")
    before = slurm.run("squeue", "-h").stdout
    result = bash("submit_vocoder.sh", "--stage", "012", "--cmd", "slurm", "--dry-run", "--partition", "debug",
                  "--ngpu", "4", "--nnodes", "2", "--gpus", "1", "--mem", "8G", "--time", "1:00:00",
                  env={**slurm.env, "PYTHON": str(stub_python(tmp_path))}, cwd=sandbox)  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("sbatch ")]
    assert len(lines) == 3
    assert all("--partition debug" in line and "--mem 8G" in line for line in lines)
    # The training stages run on every node; the test stage once, on one node.
    assert "--nodes 2" in lines[0] and "--nodes 2" in lines[1] and "--nodes 1 --ntasks-per-node 1" in lines[2]
    assert "--gpus-per-node 4" in lines[0] and "--signal USR1@120" in lines[0]
    assert "--gpus-per-node 1" in lines[2] and "--signal" not in lines[2]
    assert "--dependency afterok:STAGE0_JOB" in lines[1] and "--dependency afterok:STAGE1_JOB" in lines[2]
    assert "Dry run: nothing submitted" in result.stdout
    assert slurm.run("squeue", "-h").stdout == before


@pytest.mark.parametrize(
    ("request_kind", "expected"), [("gpus-per-node", "--gpus-per-node 8"), ("gres", "--gres gpu:8")]
)
def test_a_multi_node_training_job_asks_for_its_gpus_and_cpus(tmp_path: Path, request_kind: str, expected: str) -> None:
    logdir = tmp_path / "logs"
    result = bash("submit_autoencoder.sh", "--ngpu", "8", "--nnodes", "4", "--cmd", "slurm", "--dry-run",
                  "--gpu_request", request_kind, "--slurm_logdir", str(logdir),
                  env={**os.environ, "PYTHON": str(stub_python(tmp_path))}, cwd=ROOT)  # fmt: skip
    assert result.returncode == 0, result.stderr
    (line,) = [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("sbatch ")]
    # 8 processes per node, each with the recipe's 2 loader workers: 8 x (2 + 1) CPUs.
    assert "--nodes 4 --ntasks-per-node 1" in line and expected in line and "--cpus-per-task 24" in line, line
    script = (logdir / "autoencoder_symAD_vctk_48000_hop300-stage0.sh").read_text()
    assert "declare -- ngpu=\"8\"" in script and "declare -- nnodes=\"4\"" in script
    cpu = bash("submit_autoencoder.sh", "--ngpu", "0", "--cmd", "slurm", "--dry-run", "--slurm_logdir", str(logdir),
               env={**os.environ, "PYTHON": str(stub_python(tmp_path))}, cwd=ROOT)  # fmt: skip
    (line,) = [line.strip() for line in cpu.stdout.splitlines() if line.strip().startswith("sbatch ")]
    assert "gpu" not in line.replace("autoencoder_symAD", "") and "--cpus-per-task 3" in line, line


@pytest.fixture
def fake_slurm(tmp_path: Path) -> dict[str, str]:
    """Stand-ins for sbatch (keeps a copy of the batch script as submitted, as SLURM does, in spool/<job>.sh,
    and its arguments in sbatch.log), srun (runs the step once per node of SLURM_JOB_NUM_NODES) and
    scontrol (the node list, then many more lines: a reader that stops early gets SIGPIPE)."""
    folder = tmp_path / "fake-slurm"
    (folder / "spool").mkdir(parents=True)
    (folder / "sbatch").write_text(
        "#!/usr/bin/env bash\n"
        f"job=$(( $(cat {folder}/last 2>/dev/null || echo 100) + 1 )); echo $job > {folder}/last\n"
        f'echo "$*" >> {folder}/sbatch.log\n'
        f'cp "${{@: -1}}" {folder}/spool/$job.sh\necho $job\n'
    )
    (folder / "srun").write_text(
        "#!/usr/bin/env bash\nwhile [[ $1 == --* ]]; do shift; done\n"
        'for node in $(seq "${SLURM_JOB_NUM_NODES:-1}"); do "$@" || exit; done\n'
    )
    (folder / "scontrol").write_text("#!/usr/bin/env bash\necho node0; echo node1; seq 200000\n")
    for name in ("sbatch", "srun", "scontrol"):
        (folder / name).chmod(0o755)
    return {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}", "PYTHON": str(stub_python(tmp_path))}


def run_fake_job(env: dict[str, str], job: str, nodes: int = 1) -> subprocess.CompletedProcess:
    """Run a job of fake_slurm from SLURM's copy of its batch script, as slurmd would."""
    spool = Path(env["PATH"].split(os.pathsep)[0]) / "spool"
    job_env = {**env, "SLURM_JOB_ID": job, "SLURM_JOB_NUM_NODES": str(nodes), "SLURM_NTASKS": str(nodes),
               "SLURM_JOB_NODELIST": "node[0-1]"}  # fmt: skip
    return subprocess.run(["bash", str(spool / f"{job}.sh")], env=job_env, capture_output=True, text=True, timeout=30)


def test_a_queued_job_runs_the_command_it_was_submitted_with(fake_slurm: dict[str, str], tmp_path: Path) -> None:
    """Later submissions and dry runs of the same tag and stage do not change what a queued job runs."""
    logdir = tmp_path / "logs"
    jobs = []
    for checkpoint in ("100", "200", "300"):
        args = ["submit_autoencoder.sh", "--stage", "2", "--encoder_checkpoint", checkpoint, "--cmd", "slurm",
                "--slurm_logdir", str(logdir)]  # fmt: skip
        result = bash(*args, *(["--dry-run"] if checkpoint == "300" else []), env=fake_slurm, cwd=ROOT)
        assert result.returncode == 0, result.stderr
        jobs += submitted_jobs(result.stdout)
    assert jobs == ["101", "102"]
    for job, checkpoint in zip(jobs, ("100", "200")):
        ran = run_fake_job(fake_slurm, job)
        assert ran.returncode == 0, ran.stderr
        (command,) = [line for line in ran.stdout.splitlines() if line.startswith("RUN ")]
        assert f"/checkpoint-{checkpoint}steps.pkl --decoder" in command, command
        assert (logdir / f"autoencoder_symAD_vctk_48000_hop300-stage2-{job}.sh").is_file()
    assert "checkpoint-300steps" in (logdir / "autoencoder_symAD_vctk_48000_hop300-stage2.sh").read_text()
    assert sorted(path.name for path in logdir.iterdir()) == [
        "autoencoder_symAD_vctk_48000_hop300-stage2-101.sh", "autoencoder_symAD_vctk_48000_hop300-stage2-102.sh",
        "autoencoder_symAD_vctk_48000_hop300-stage2.sh"]  # fmt: skip


def test_with_two_nodes_only_training_runs_on_both(fake_slurm: dict[str, str], tmp_path: Path) -> None:
    """--nnodes 2: the training job takes two nodes and meets at the first (read without a pipe that a
    long node list breaks); statistics and tests run once, on one node."""
    args = ["submit_codec.sh", "--start", "0", "--stop", "1", "--ngpu", "2", "--nnodes", "2", "--cmd", "slurm",
            "--slurm_logdir", str(tmp_path / "logs")]  # fmt: skip
    result = bash(*args, env=fake_slurm, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    train_job, statistics_job = submitted_jobs(result.stdout)
    submitted = Path(fake_slurm["PATH"].split(os.pathsep)[0]) / "sbatch.log"
    train_line, statistics_line = submitted.read_text().splitlines()
    assert "--nodes 2 --ntasks-per-node 1" in train_line and "--nodes 1 --ntasks-per-node 1" in statistics_line
    trained = run_fake_job(fake_slurm, train_job, nodes=2)
    assert trained.returncode == 0, trained.stderr
    assert f"launcher: rendezvous node0:{20000 + int(train_job)} (id {train_job}) for 2 tasks" in trained.stdout
    assert [line for line in trained.stdout.splitlines() if line.startswith("RUN ")] == [
        f"RUN -m trainer.torchrun --nnodes 2 --nproc_per_node 2 --rdzv_backend c10d --rdzv_endpoint "
        f"node0:{20000 + int(train_job)} --rdzv_id {train_job} codecTrain.py -c config/autoencoder/"
        "symAD_vctk_48000_hop300.yaml --tag autoencoder/symAD_vctk_48000_hop300 --exp_root exp --disable_cudnn False "
        "--resume auto --ngpu 2"] * 2  # fmt: skip
    counted = run_fake_job(fake_slurm, statistics_job, nodes=1)
    assert counted.returncode == 0 and counted.stdout.count("RUN codecStatistic.py") == 1, counted.stdout
    assert "rendezvous" not in counted.stdout


@pytest.mark.parametrize("args, message", [
    (["--tag_name", "autoencoder/symAD_vctk_48000_hop30"], "--tag_name autoencoder/symAD_vctk_48000_hop30 names no "
                                                           "recipe"),
    (["--precision", "fp61"], "--precision takes fp32, bf16 or fp16, not 'fp61'"),
    (["--seed", "abc"], "--seed must be a whole number from 0 to 4294967295, not 'abc'"),
    (["--disable_cudnn", "true"], "--disable_cudnn takes True or False (as codecTrain.py does), not 'true'"),
])  # fmt: skip
def test_what_fails_locally_is_not_submitted(fake_slurm: dict[str, str], args: list[str], message: str) -> None:
    result = bash("submit_autoencoder.sh", *args, "--cmd", "slurm", env=fake_slurm, cwd=ROOT)
    assert result.returncode == 1 and "submitted" not in result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"submit_autoencoder.sh: {message}"), result.stderr
    assert not (Path(fake_slurm["PATH"].split(os.pathsep)[0]) / "sbatch.log").exists()


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


# ---- real training ----------------------------------------------------------------------------


def output_files(sandbox: Path) -> set[str]:
    """The files the recipe wrote (exp/, stats/, output/), TensorBoard event names reduced to their kind."""
    found = set()
    for folder in ("exp", "stats", "output"):
        for path in (sandbox / folder).rglob("*"):
            if path.is_file():
                name = str(path.relative_to(sandbox))
                found.add(re.sub(r"events\.out\.tfevents\..*$", "events.out.tfevents", name))
    return found


@needs_trainer
def test_demo_recipe_stages_0_to_4_under_slurm_write_what_a_local_run_writes(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    runs = {}
    for mode in ("local", "slurm"):
        sandbox = recipe_sandbox(tmp_path / mode)
        write_configs(sandbox, tiny_configs(corpus, steps=2))
        args = ["submit_codec.sh", "--start", "0", "--stop", "4", "--autoencoder", "autoencoder/tiny",
                "--statistic", "statistic/tiny", "--vocoder", "vocoder/tiny", "--ngpu", "0",
                "--encoder_checkpoint", "2", "--decoder_checkpoint", "2", "--cmd", mode, "--cpus", "1"]  # fmt: skip
        process = subprocess.Popen(["bash", *args], cwd=sandbox, env=training_env(**slurm.env),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        runs[mode] = (sandbox, process)
    local_output = runs["local"][1].communicate(timeout=240)[0]
    slurm_output = runs["slurm"][1].communicate(timeout=30)[0]
    assert runs["local"][1].returncode == 0, local_output
    assert runs["slurm"][1].returncode == 0, slurm_output
    jobs = submitted_jobs(slurm_output)
    assert len(jobs) == 5 and slurm_output.count("(after ") == 4, slurm_output
    assert f"squeue -u {os.environ.get('USER', 'root')}" in slurm_output and "tail -f " in slurm_output
    slurm.wait_for_jobs(jobs, timeout=240)
    sandbox = runs["slurm"][0]
    logs = [next((sandbox / "slurmlogs").glob(f"*-stage{stage}-{job}.log")) for stage, job in enumerate(jobs)]
    states = [slurm.job_state(job) for job in jobs]
    assert states == ["COMPLETED"] * 5, "\n".join(log.read_text()[-2000:] for log in logs)
    times = [stage_times(log) for log in logs]
    assert all(end <= next_start for (_, end), (next_start, _) in zip(times, times[1:])), times
    assert "Finished training at step 4" in logs[0].read_text() and "--resume auto" in logs[0].read_text()
    assert output_files(sandbox) == output_files(runs["local"][0]) != set()


@needs_trainer
def test_usr1_checkpoints_then_resubmitting_resumes_and_requeue_continues(slurm: SlurmCluster, tmp_path: Path) -> None:
    sandbox = recipe_sandbox(tmp_path / "recipe")
    config = tiny_configs(write_corpus(tmp_path / "corpus"), steps=2)["autoencoder/tiny"]
    config.update(adv_train_max_steps=20, save_interval_steps=10**6)
    write_configs(sandbox, {"autoencoder/long": config})
    args = ["submit_autoencoder.sh", "--stage", "0", "--tag_name", "autoencoder/long", "--cmd", "slurm", "--cpus", "1",
            "--ngpu", "0"]
    folder = sandbox / "exp" / "autoencoder" / "long"

    # Stopped by SIGUSR1: a checkpoint at the step reached, exit 0.
    result = bash(*args, env=training_env(**slurm.env), cwd=sandbox)
    (job,) = submitted_jobs(result.stdout)
    log = sandbox / "slurmlogs" / f"autoencoder_long-stage0-{job}.log"
    wait_for_text(log, r"\(Steps: 3\)")
    slurm.run("scancel", "--signal=USR1", job)
    slurm.wait_for_jobs([job])
    assert slurm.job_state(job) == "COMPLETED", log.read_text()
    assert "Stop requested (SIGUSR1)" in log.read_text()
    (checkpoint,) = folder.glob("checkpoint-*steps.pkl")
    stopped_at = int(re.search(r"(\d+)steps", checkpoint.name).group(1))
    assert 3 <= stopped_at < 20

    # The same command again resumes there; with --requeue, the next stop requeues the job, which
    # resumes from its own checkpoint and finishes.
    result = bash(*args, "--requeue", env=training_env(**slurm.env), cwd=sandbox)
    (job,) = submitted_jobs(result.stdout)
    log = sandbox / "slurmlogs" / f"autoencoder_long-stage0-{job}.log"
    wait_for_text(log, rf"Resumed from exp/autoencoder/long/checkpoint-{stopped_at}steps.pkl at step {stopped_at}")
    wait_for_text(log, rf"\(Steps: {stopped_at + 2}\)")
    slurm.run("scancel", "--signal=USR1", job)
    requeued = wait_for_text(log, r"Requeued SLURM job \d+")
    assert requeued == f"Requeued SLURM job {job}"
    slurm.wait_for_jobs([job], timeout=240)
    text = log.read_text()
    assert slurm.job_state(job) == "COMPLETED" and "Finished training at step 20" in text, text
    second_stop = int(re.findall(r"Resumed from \S+checkpoint-(\d+)steps.pkl", text)[-1])
    assert stopped_at + 2 <= second_stop < 20
    assert torch.load(folder / "checkpoint-20steps.pkl", map_location="cpu", weights_only=True)["steps"] == 20


@needs_trainer
def test_two_srun_tasks_train_like_one_process_with_the_global_batch(slurm: SlurmCluster, tmp_path: Path) -> None:
    """--nnodes 2: one torchrun per task, rendezvous at the allocation's first node, gloo on CPUs.

    The cluster has one node, so the two "nodes" are two tasks on it (extra sbatch options). Crops
    are deterministic (training files of exactly the crop length), so the two ranks with one file
    each see the batch of two files that one process sees: the same config, batch_size 2, trains
    the same on two processes as on one.
    """
    sandbox = recipe_sandbox(tmp_path / "recipe")
    config = tiny_configs(write_corpus(tmp_path / "corpus", train_samples=4800), steps=2)["autoencoder/tiny"]
    config.update(adv_train_max_steps=None, batch_size=2)
    write_configs(sandbox, {"autoencoder/ranks": config, "autoencoder/single": config})
    env = training_env(**slurm.env)
    env.pop("MASTER_ADDR", None)
    result = bash("submit_autoencoder.sh", "--stage", "0", "--tag_name", "autoencoder/ranks", "--nnodes", "2",
                  "--ngpu", "0", "--cmd", "slurm", "--cpus", "1", "--sbatch_args", "--nodes=1 --ntasks-per-node=2",
                  env=env, cwd=sandbox)  # fmt: skip
    assert result.returncode == 0, result.stderr
    (job,) = submitted_jobs(result.stdout)
    local = bash("submit_autoencoder.sh", "--stage", "0", "--tag_name", "autoencoder/single", "--ngpu", "0", env=env,
                 cwd=sandbox, timeout=120)  # fmt: skip
    assert local.returncode == 0, local.stdout + local.stderr
    slurm.wait_for_jobs([job], timeout=180)
    log = next((sandbox / "slurmlogs").glob(f"*-stage0-{job}.log")).read_text()
    assert slurm.job_state(job) == "COMPLETED", log
    assert f"launcher: rendezvous {slurm.node}:" in log and "for 2 tasks" in log
    assert "--nnodes 2 --nproc_per_node 1 --rdzv_backend c10d" in log
    assert log.count("DDP: rank") >= 1 and "Finished training at step 2" in log
    assert "global batch 2 = 2 ranks x 1" in log
    ranks, alone = (
        torch.load(sandbox / "exp" / "autoencoder" / name / "checkpoint-2steps.pkl", map_location="cpu",
                   weights_only=True)["model"]
        for name in ("ranks", "single")
    )
    for part in ("generator", "discriminator"):
        assert ranks[part].keys() == alone[part].keys()
        for key, value in ranks[part].items():
            torch.testing.assert_close(value, alone[part][key], rtol=1e-5, atol=1e-6, msg=f"{part}.{key}")


@needs_trainer
def test_a_gpu_job_gets_its_gpus_and_stops_when_cuda_does_not_see_them(slurm: SlurmCluster, tmp_path: Path) -> None:
    """The cluster's GPUs are counted, not real: SLURM allocates them, the trainer sees no CUDA device
    and stops with its error line before training (no checkpoint) instead of training on the CPU."""
    if torch.cuda.device_count() >= GPUS:
        pytest.skip("this machine has real GPUs: the job would train")
    sandbox = recipe_sandbox(tmp_path / "recipe")
    config = tiny_configs(write_corpus(tmp_path / "corpus"), steps=2)["autoencoder/tiny"]
    write_configs(sandbox, {"autoencoder/gpu": config})
    result = bash("submit_autoencoder.sh", "--stage", "0", "--tag_name", "autoencoder/gpu", "--ngpu", str(GPUS),
                  "--cmd", "slurm", "--cpus", "1", env=training_env(**slurm.env), cwd=sandbox)  # fmt: skip
    assert result.returncode == 0, result.stderr
    (job,) = submitted_jobs(result.stdout)
    slurm.wait_for_jobs([job], timeout=120)
    shown = slurm.run("scontrol", "show", "-d", "job", job).stdout
    assert f"TresPerNode=gres:gpu:{GPUS}" in shown and f"JOB_GRES=gpu:{GPUS}" in shown, shown
    log = next((sandbox / "slurmlogs").glob(f"*-stage0-{job}.log")).read_text()
    assert slurm.job_state(job) == "FAILED", log
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, log
    assert errors[0].startswith(f"error: --ngpu {GPUS} asks for {GPUS} GPU(s) per node but this process sees 0")
    assert "--ngpu 0" in errors[0] and "Training " not in log
    assert not list((sandbox / "exp").rglob("checkpoint-*"))
