"""Hostile suite, 1: stop signals wherever they land (inside the run-creation window, mid-training,
a stopped sweep with each launcher). Every case asserts the exit code, the single line and the store
afterwards (no RUNNING run, the right counts)."""

import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import mlflow_runs
from tests.hostile import env_with, harness_cmd, running_children, statuses, wait_for

pytestmark = pytest.mark.slow

# ---------------------------------------------------------------- 1. signals

# Makes the window between the run's creation (one transaction with its tags and params on a database
# store: harness/tracking/sqlruns.py) and the end of the start-of-run writes (config.yaml, the journal)
# three seconds long, and says when it opens: the test's signal lands inside it.
SLOW_CREATE = textwrap.dedent("""
    import os, time
    import harness.tracking.sqlruns as sqlruns
    _create = sqlruns.create_many
    def create_many(*a, **k):
        created = _create(*a, **k)
        open(os.environ["HARNESS_TEST_MARK"], "w").write(created[0][0])
        time.sleep(3)
        return created
    sqlruns.create_many = create_many
""")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_while_the_run_is_being_created_leaves_it_killed(tmp_path, sig):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SLOW_CREATE)
    mark = tmp_path / "created"
    proc = subprocess.Popen(
        harness_cmd(tmp_path, "epochs=2", "progress=false"),
        cwd=tmp_path,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**env_with(hook), "HARNESS_TEST_MARK": str(mark)},
    )
    try:
        wait_for(mark.exists, what="the run's creation")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err
    _, runs = mlflow_runs(tmp_path, "imbalanced")
    assert len(runs) == 1 and runs[0].info.run_id == mark.read_text()
    assert runs[0].info.status == "KILLED" and runs[0].data.tags["outcome"] == "killed"


def test_sighup_during_training_marks_the_run_killed(tmp_path):
    proc = subprocess.Popen(
        harness_cmd(tmp_path, "epochs=100000", "batch_size=8", "tracking.flush_seconds=0"),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_with(),
    )
    try:
        for line in proc.stdout:
            if line.startswith("epoch "):
                break
        proc.send_signal(signal.SIGHUP)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGHUP
    assert statuses(tmp_path, "imbalanced") == ["KILLED"]


def sweep_process(tmp_path: Path, *args: str) -> subprocess.Popen:
    """A sweep in its own process group, as a terminal runs it (Ctrl-C reaches the whole group)."""
    return subprocess.Popen(
        harness_cmd(tmp_path, "progress=false", *args, multirun=True),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_with(),
        start_new_session=True,
    )


def session_members(sid: int) -> list[int]:
    """Processes left in the sweep's session (its loky workers would be there)."""
    import psutil

    left = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid and p.status() != psutil.STATUS_ZOMBIE:
                left.append(p.pid)
        except (ProcessLookupError, psutil.Error):
            pass
    return left


LONG_JOBS = ("task=regression", "epochs=100000", "batch_size=1", "tracking.flush_seconds=0", "seed=0,1,2,3")


@pytest.mark.parametrize(
    "launcher, how",
    [
        ("joblib", "group SIGINT"),
        pytest.param("joblib", "SIGTERM", marks=pytest.mark.extended),  # the default suite keeps one case per launcher
        ("basic", "SIGTERM"),
        ("stacked", "group SIGINT"),
        ("stacked workers", "SIGTERM"),
        pytest.param("stacked workers", "group SIGINT", marks=pytest.mark.extended),
    ],
)
def test_a_stopped_sweep_closes_every_run_and_its_parent_and_leaves_no_worker(tmp_path, launcher, how):
    extra = {
        "joblib": ["hydra.launcher.n_jobs=2"],
        "stacked workers": ["hydra.launcher.workers=2", "hydra.launcher.max_members=2"],
    }.get(launcher, [])
    proc = sweep_process(tmp_path, f"hydra/launcher={launcher.split()[0]}", *extra, *LONG_JOBS)
    in_flight = 2 if launcher == "joblib" else (4 if launcher.startswith("stacked") else 1)
    try:
        wait_for(lambda: running_children(tmp_path, "regression") >= in_flight, what="jobs under way")
        time.sleep(1.0)
        if how.startswith("group"):
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=90)
        time.sleep(1.0)
        orphans = session_members(proc.pid)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    sig = signal.SIGINT if how.startswith("group") else signal.SIGTERM
    assert proc.returncode == 128 + sig, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    client, runs = mlflow_runs(tmp_path, "regression")
    parents = [r for r in runs if r.data.tags.get("harness.role") == "sweep"]
    jobs = [r for r in runs if r.data.tags.get("harness.role") != "sweep"]
    assert len(parents) == 1 and len(jobs) >= in_flight
    assert all(r.info.status == "KILLED" and r.data.tags["outcome"] == "killed" for r in jobs)
    p = parents[0]
    assert p.info.status == "KILLED" and p.data.tags["outcome"] == "killed"
    assert p.data.tags["jobs_killed"] == str(len(jobs))
    assert orphans == []  # no loky worker trains on as an orphan
    if launcher == "stacked workers":
        assert "in 2 bundle(s) (2 at a time, each in its own process)" in out, out


@pytest.mark.parametrize("launcher", [pytest.param("joblib", marks=pytest.mark.extended), "stacked workers"])
def test_workers_of_a_sweep_killed_outright_stop_and_close_their_runs(tmp_path, launcher):
    """kill -9 of the sweep's own process (no handler runs there): its workers notice their parent is
    gone, close their runs as KILLED and exit, instead of training on as orphans (issue 26)."""
    extra = {
        "joblib": ["hydra.launcher.n_jobs=2"],
        "stacked workers": ["hydra.launcher.workers=2", "hydra.launcher.max_members=2"],
    }[launcher]
    proc = sweep_process(tmp_path, f"hydra/launcher={launcher.split()[0]}", *extra, *LONG_JOBS)
    in_flight = 2 if launcher == "joblib" else 4
    try:
        wait_for(lambda: running_children(tmp_path, "regression") >= in_flight, what="jobs under way")
        time.sleep(1.0)
        proc.kill()  # SIGKILL to the sweep's process alone; its workers are left (and hold its pipes open)
        proc.wait(timeout=30)
        wait_for(lambda: not session_members(proc.pid), timeout=60, what="the orphaned workers to exit")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _, runs = mlflow_runs(tmp_path, "regression")
    jobs = [r for r in runs if r.data.tags.get("harness.role") != "sweep"]
    assert len(jobs) >= in_flight and all(r.info.status == "KILLED" for r in jobs), [r.info.status for r in jobs]


def wait_for_handlers(pid: int, timeout: float = 60) -> None:
    """Until the process catches SIGTERM (``signals.install``, the first thing ``python -m harness`` does; Python
    itself leaves SIGTERM alone): a fixed sleep raced the interpreter's own start-up on a loaded machine."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = Path(f"/proc/{pid}/status").read_text()
        caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
        if caught & (1 << (signal.SIGTERM - 1)):
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} did not install its signal handlers in {timeout} s")


def test_a_stop_while_the_harness_starts_up_is_one_line(tmp_path):
    """SIGINT while torch, MLflow and Hydra are still importing: one line, exit 130, nothing written."""
    proc = subprocess.Popen(
        harness_cmd(tmp_path, "task=regression"),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_with(),
    )
    wait_for_handlers(proc.pid)  # the harness's handlers are in; the heavy imports take seconds more
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip() == "interrupted (SIGINT) while starting up: nothing was written", err[-2000:]
    assert not (tmp_path / "mlflow.db").exists()
