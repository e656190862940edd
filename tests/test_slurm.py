"""A real SLURM cluster of one node (issue 11): munged, slurmctld and slurmd started by the test with
a slurm.conf it writes (private ports, folders and munge socket); a sweep with hydra/launcher=slurm
submits its jobs through sbatch and they land in the store; scancel of a running job marks its run
KILLED. Skips with one reason where SLURM or munge is not installed or the tests do not run as root
(slurmd must); `.ci/run` installs Debian's slurm-wlm and munge where apt can.

Without Slurm accounting (slurmdbd), submitit cannot read a cancelled job's state from sacct and
keeps waiting for it, so the cancelled-job test then stops the sweep itself (SIGTERM), as a user
would, and checks that the stop cancels the sweep's other SLURM jobs (running or queued) and closes
the parent too."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, mlflow_runs

pytestmark = [pytest.mark.slow, pytest.mark.extended]  # real daemons: CI runs these after the default suite (pytest -m extended)

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def daemon(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = [d for d in DAEMONS if daemon(d) is None]
    if missing:
        pytest.skip(f"SLURM is not installed (no {', '.join(missing)}); Debian: apt-get install slurm-wlm munge")
    if os.geteuid() != 0:
        pytest.skip("slurmd must run as root, and these tests do not")
    home = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool", "log", "munge"):
        (home / sub).mkdir()
    host = socket.gethostname().split(".")[0]
    cpus = len(os.sched_getaffinity(0))
    conf = home / "slurm.conf"
    conf.write_text(f"""ClusterName=harness
SlurmctldHost={host}
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={home}/munge/munge.socket
StateSaveLocation={home}/state
SlurmdSpoolDir={home}/spool
SlurmctldPidFile={home}/slurmctld.pid
SlurmdPidFile={home}/slurmd.pid
SlurmctldLogFile={home}/log/slurmctld.log
SlurmdLogFile={home}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
NodeName={host} CPUs={cpus} RealMemory=4000 State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    key = Path("/etc/munge/munge.key")
    munge_key = home / "munge" / "munge.key"
    if key.exists():
        shutil.copy(key, munge_key)
    else:
        subprocess.run([daemon("mungekey"), "--create", f"--keyfile={munge_key}"], check=True, capture_output=True)
    os.chmod(munge_key, 0o600)
    subprocess.run(
        [
            daemon("munged"),
            "--force",
            f"--key-file={munge_key}",
            f"--socket={home}/munge/munge.socket",
            f"--pid-file={home}/munge/munged.pid",
            f"--log-file={home}/munge/munged.log",
            f"--seed-file={home}/munge/seed",
        ],
        check=True,
        capture_output=True,
        env=env,
    )
    try:
        subprocess.run([daemon("slurmctld")], check=True, capture_output=True, env=env)
        subprocess.run([daemon("slurmd")], check=True, capture_output=True, env=env)
        deadline = time.monotonic() + 60
        while "idle" not in subprocess.run([daemon("sinfo"), "-h", "-o", "%T"], capture_output=True, text=True, env=env).stdout:
            if time.monotonic() > deadline:
                pytest.skip("slurmd did not register with slurmctld here: " + (home / "log" / "slurmd.log").read_text()[-300:])
            time.sleep(0.5)
        yield env
    finally:
        # let cancelled jobs' steps report back before the daemons go, then shut the cluster down
        deadline = time.monotonic() + 60
        while (
            subprocess.run([daemon("squeue"), "-h"], capture_output=True, text=True, env=env).stdout.strip()
            and time.monotonic() < deadline
        ):
            time.sleep(1)
        subprocess.run([daemon("scontrol") or "scontrol", "shutdown"], capture_output=True, env=env)
        time.sleep(2)
        for pid_file in ("slurmd.pid", "slurmctld.pid", "munge/munged.pid"):
            try:
                os.kill(int((home / pid_file).read_text().split()[0]), signal.SIGTERM)
            except (OSError, ValueError):
                pass


def slurm_sweep(env, cwd, *args, log=None, **popen):
    cmd = [
        sys.executable,
        "-m",
        "harness",
        "--multirun",
        "hydra/launcher=slurm",
        "hydra.launcher.partition=test",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        f"tracking.uri=sqlite:///{cwd}/mlflow.db",
        "progress=false",
        "task=regression",
        *args,
    ]
    env = {**env, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log or subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def test_a_sweep_goes_through_sbatch_and_lands_in_the_store(cluster, tmp_path):
    proc = slurm_sweep(cluster, tmp_path, "epochs=2", "loss=mse,huber")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    assert "2 finished, 0 diverged, 0 failed" in out
    _, runs = mlflow_runs(tmp_path, "regression")
    jobs = [r for r in runs if r.data.tags.get("harness.role") != "sweep"]
    assert len(runs) == 3 and sorted(r.data.params["loss"] for r in jobs) == ["huber", "mse"]
    assert all(r.info.status == "FINISHED" for r in runs)
    # submitit's own record of the SLURM jobs it submitted with sbatch, in the sweep's folder
    assert list(tmp_path.glob("multirun/*/*/.submitit/*_0/*_0_log.out")) and list(tmp_path.glob("multirun/*/*/.submitit/*_1"))


def test_scancel_of_a_running_job_marks_its_run_killed(cluster, tmp_path):
    log = open(tmp_path / "sweep.log", "w")  # a file, not a pipe: nobody reads the sweep's output meanwhile
    proc = slurm_sweep(cluster, tmp_path, "epochs=100000", "seed=0,1,2", log=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while (
            "parent run" not in (tmp_path / "sweep.log").read_text()
        ):  # the store exists (reading it earlier races its creation)
            assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "sweep.log").read_text()[-2000:]
            time.sleep(0.5)
        deadline = time.monotonic() + 180
        while True:  # both jobs training, their runs open in the store
            runs = mlflow_runs(tmp_path, "regression")[1]
            if len([r for r in runs if r.data.tags.get("harness.role") != "sweep" and r.info.status == "RUNNING"]) >= 2:
                break
            assert time.monotonic() < deadline and proc.poll() is None, "the jobs did not start"
            time.sleep(1)
        ids = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, env=cluster).stdout.split()
        first = sorted(i for i in ids if i.endswith("_0"))
        assert first, ids
        subprocess.run(["scancel", first[0]], check=True, env=cluster)
        deadline = time.monotonic() + 60
        while True:
            runs = {r.data.params["seed"]: r for r in mlflow_runs(tmp_path, "regression")[1] if "seed" in r.data.params}
            if runs["0"].info.status != "RUNNING":
                break
            assert time.monotonic() < deadline, "the cancelled job's run stayed RUNNING"
            time.sleep(1)
        assert runs["0"].info.status == "KILLED" and runs["0"].data.tags["outcome"] == "killed"
        assert runs["1"].info.status == "RUNNING"  # the others train on (or wait in the queue)
        # stopping the sweep cancels the jobs it submitted: the running one and any still queued
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=120)
        deadline = time.monotonic() + 60
        while subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, env=cluster).stdout.split():
            assert time.monotonic() < deadline, "the stopped sweep's SLURM jobs were not cancelled"
            time.sleep(1)
        assert "SLURM job(s)" in (tmp_path / "sweep.log").read_text()
    finally:
        subprocess.run(
            [
                "scancel",
                *subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, env=cluster).stdout.split(),
            ],
            env=cluster,
        )
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
    _, runs = mlflow_runs(tmp_path, "regression")
    assert not [r for r in runs if r.info.status == "RUNNING"]  # the parent and the other job closed too
