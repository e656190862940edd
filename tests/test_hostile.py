"""A hostile user's suite, by the classes of issue 8: every case asserts the exit code, the single
`error:` line (no traceback) and the store afterwards (no RUNNING run, the right counts).

1. signals, wherever they land; 2. concurrent use; 3. a store that cannot be used;
(4. knob validation and 5. `_target_` checks run in-process in test_checks.py, with a few here end to end.)
"""
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, mlflow_runs, run_cli

pytestmark = pytest.mark.slow


def env_with(*paths: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*map(str, paths), str(ROOT)])}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def harness_cmd(tmp_path: Path, *args: str, multirun: bool = False) -> list[str]:
    return [sys.executable, "-m", "harness", *(["--multirun"] if multirun else []), f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", *args]


def one_error_line(err: str, *needles: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def statuses(tmp_path: Path, experiment: str) -> list[str]:
    return sorted(r.info.status for r in mlflow_runs(tmp_path, experiment)[1])


def wait_for(predicate, timeout: float = 120, what: str = "") -> None:
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def running_children(tmp_path: Path, experiment: str) -> int:
    """RUNNING training runs, read with plain sqlite (no MLflow import, no schema creation)."""
    db = tmp_path / "mlflow.db"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return con.execute(
                "select count(*) from runs r join experiments e on r.experiment_id = e.experiment_id "
                "where e.name = ? and r.status = 'RUNNING' and r.run_uuid not in "
                "(select run_uuid from tags where key = 'harness.role' and value = 'sweep')", (experiment,)).fetchone()[0]
    except sqlite3.Error:
        return 0


# ---------------------------------------------------------------- 1. signals

# Makes the window between MLflow's create_run and the end of the start-of-run writes (params,
# config.yaml) three seconds long, and says when it opens: the test's signal lands inside it.
SLOW_CREATE = textwrap.dedent("""
    import os, time
    from mlflow.tracking import MlflowClient
    _create = MlflowClient.create_run
    def create_run(self, *a, **k):
        run = _create(self, *a, **k)
        open(os.environ["HARNESS_TEST_MARK"], "w").write(run.info.run_id)
        time.sleep(3)
        return run
    MlflowClient.create_run = create_run
""")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_while_the_run_is_being_created_leaves_it_killed(tmp_path, sig):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SLOW_CREATE)
    mark = tmp_path / "created"
    proc = subprocess.Popen(harness_cmd(tmp_path, "epochs=2", "progress=false"), cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**env_with(hook), "HARNESS_TEST_MARK": str(mark)})
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
    proc = subprocess.Popen(harness_cmd(tmp_path, "epochs=100000", "batch_size=8", "tracking.flush_seconds=0"),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_with())
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
    return subprocess.Popen(harness_cmd(tmp_path, "progress=false", *args, multirun=True), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_with(),
                            start_new_session=True)


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


@pytest.mark.parametrize("launcher, how", [("joblib", "group SIGINT"), ("joblib", "SIGTERM"), ("basic", "SIGTERM"),
                                           ("stacked", "group SIGINT"), ("stacked workers", "SIGTERM"),
                                           ("stacked workers", "group SIGINT")])
def test_a_stopped_sweep_closes_every_run_and_its_parent_and_leaves_no_worker(tmp_path, launcher, how):
    extra = {"joblib": ["hydra.launcher.n_jobs=2"], "stacked workers": ["hydra.launcher.workers=2", "hydra.launcher.max_members=2"]}.get(launcher, [])
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


# ---------------------------------------------------------------- 2. concurrent use

def test_two_sweeps_started_in_the_same_second_keep_their_own_jobs(tmp_path):
    procs = {loss: subprocess.Popen(harness_cmd(tmp_path, "progress=false", "hydra/launcher=basic", "task=regression",
                                                "epochs=1", f"loss={loss}", "seed=0,1", multirun=True),
                                    cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_with())
             for loss in ("mse", "mae")}
    outs = {loss: p.communicate(timeout=300) for loss, p in procs.items()}
    for loss, p in procs.items():
        assert p.returncode == 0, outs[loss][1][-3000:]
        assert "2 finished" in outs[loss][0]
    client, runs = mlflow_runs(tmp_path, "regression")
    parents = {r.info.run_id: r for r in runs if r.data.tags.get("harness.role") == "sweep"}
    assert len(parents) == 2
    assert len({r.data.tags["sweep_id"] for r in parents.values()}) == 2
    for pid, parent in parents.items():
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == pid]
        assert len(children) == 2 and {r.data.tags["sweep_id"] for r in children} == {parent.data.tags["sweep_id"]}
        loss = parent.data.tags["overrides"].split("loss=")[1].split()[0]
        assert {r.data.tags["loss"] for r in children} == {loss}  # no job filed under the other sweep
    assert len(list((tmp_path / "multirun").glob("*/*"))) == 2


OPEN_STORE = textwrap.dedent("""
    import sys
    from harness.tracking import MlflowTracker, open_store
    t = MlflowTracker(open_store(sys.argv[1]), "fresh", 0)
    t.start("r" + sys.argv[2], {"config_hash": sys.argv[2]}, {"seed": sys.argv[2]}, "seed: 0\\n")
    t.end("FINISHED", {"outcome": "finished"})
""")


@pytest.mark.extended  # a stress test (16 processes on 2 cores); two at once stays in the default suite:
@pytest.mark.parametrize("n", [16])  # test_two_single_runs_in_an_empty_folder_both_land
def test_processes_that_open_a_fresh_store_at_once_all_land(tmp_path, n):
    script = tmp_path / "open_store.py"
    script.write_text(OPEN_STORE)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    procs = [subprocess.Popen([sys.executable, str(script), uri, str(i)], cwd=tmp_path, env=env_with(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(n)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * n, "\n".join(e[-1500:] for e in errs)
    _, runs = mlflow_runs(tmp_path, "fresh")
    assert sorted(r.data.tags["config_hash"] for r in runs) == sorted(map(str, range(n)))
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_two_single_runs_in_an_empty_folder_both_land(tmp_path):
    procs = [subprocess.Popen(harness_cmd(tmp_path, "epochs=1", "progress=false", f"seed={i}"), cwd=tmp_path,
                              env=env_with(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert statuses(tmp_path, "imbalanced") == ["FINISHED", "FINISHED"]


def hold_lock(db: Path, seconds: float, started: threading.Event, release: threading.Event | None = None) -> None:
    """Hold an exclusive lock on the store for `seconds`, or until `release` is set."""
    con = sqlite3.connect(db, timeout=30, isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")
    started.set()
    if release is not None:
        release.wait(seconds)
    else:
        time.sleep(seconds)
    con.execute("COMMIT")
    con.close()


def test_a_store_locked_for_longer_than_lock_timeout_is_one_line(tmp_path):
    assert run_cli("epochs=1", cwd=tmp_path).returncode == 0  # the store exists
    started, release = threading.Event(), threading.Event()
    # held until the run has given up (at most 120 s), so a slow start on a loaded machine cannot outlast it
    holder = threading.Thread(target=hold_lock, args=(tmp_path / "mlflow.db", 120, started, release), daemon=True)
    holder.start()
    started.wait(10)
    t0 = time.monotonic()
    out = run_cli("epochs=1", "seed=1", "tracking.lock_timeout=3", cwd=tmp_path)
    took = time.monotonic() - t0
    still_held = holder.is_alive()
    release.set()
    holder.join()
    assert out.returncode != 0 and still_held and took < 120  # gave up while the lock was still held
    one_error_line(out.stderr, "locked", "lock_timeout")
    assert statuses(tmp_path, "imbalanced") == ["FINISHED"]  # nothing half-open left behind


def test_a_lock_taken_mid_training_is_waited_for_and_loses_nothing(tmp_path):
    assert run_cli("epochs=1", cwd=tmp_path).returncode == 0
    proc = subprocess.Popen(harness_cmd(tmp_path, "epochs=6", "seed=1", "batch_size=16", "tracking.flush_seconds=0",
                                        "tracking.lock_timeout=60"),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_with())
    started = threading.Event()
    for line in proc.stdout:
        if line.startswith("epoch 2/"):
            threading.Thread(target=hold_lock, args=(tmp_path / "mlflow.db", 5, started), daemon=True).start()
            break
    out, err = proc.communicate(timeout=300)
    assert started.is_set() and proc.returncode == 0, err[-3000:]
    client, runs = mlflow_runs(tmp_path, "imbalanced")
    run = [r for r in runs if r.data.params.get("seed") == "1"][0]
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2, 3, 4, 5, 6]


# ---------------------------------------------------------------- 3. a store that cannot be used

def test_a_corrupt_store_is_one_line_for_runs_sweeps_and_reports(tmp_path):
    (tmp_path / "mlflow.db").write_bytes(os.urandom(4096))
    for multirun in (False, True):
        out = subprocess.run(harness_cmd(tmp_path, "epochs=1", "seed=0,1" if multirun else "seed=0", multirun=multirun),
                             cwd=tmp_path, capture_output=True, text=True, env=env_with(), timeout=120)
        assert out.returncode == 2
        one_error_line(out.stderr, "is not an SQLite database")
    rep = subprocess.run([sys.executable, "-m", "harness.report", "imbalanced", "--tracking-uri",
                          f"sqlite:///{tmp_path}/mlflow.db", "--out", str(tmp_path / "rep")],
                         cwd=tmp_path, capture_output=True, text=True, env=env_with(), timeout=120)
    assert rep.returncode == 2 and not (tmp_path / "rep").exists()
    one_error_line(rep.stderr, "is not an SQLite database")
    assert not (tmp_path / "multirun").exists()


def test_a_report_on_a_folder_without_a_store_says_so_and_creates_nothing(tmp_path):
    rep = subprocess.run([sys.executable, "-m", "harness.report", "imbalanced", "--out", str(tmp_path / "rep")],
                         cwd=tmp_path, capture_output=True, text=True, env=env_with(), timeout=120)
    assert rep.returncode == 2
    one_error_line(rep.stderr, "there is no MLflow store at")
    assert list(tmp_path.iterdir()) == []


def test_unknown_scheme_and_refused_experiment_name(tmp_path):
    out = subprocess.run(harness_cmd(tmp_path, "epochs=1")[:-2] + ["tracking.uri=foo://bar", "epochs=1"], cwd=tmp_path,
                         capture_output=True, text=True, env=env_with(), timeout=120)
    assert out.returncode == 2
    one_error_line(out.stderr, "unknown scheme 'foo'", "sqlite")
    out = run_cli("epochs=1", "tracking.experiment=" + "x" * 600, cwd=tmp_path)
    assert out.returncode == 2
    one_error_line(out.stderr, "MLflow refused the experiment name", "500")
    assert statuses(tmp_path, "imbalanced") == []


def read_only(folder: Path, *cmd: str) -> subprocess.CompletedProcess:
    """Run cmd with `folder` read-only. As root, permissions do not stop writes: a private mount
    namespace binds the folder read-only instead (util-linux unshare, present on any Linux CI)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            return subprocess.run(list(cmd), cwd=folder, capture_output=True, text=True, env=env_with(), timeout=180)
        finally:
            folder.chmod(0o755)
    if subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("running as root where user namespaces are off: no way to make a folder read-only for root")
    script = f'mount --bind -o ro "{folder}" "{folder}" && cd "{folder}" && exec "$@"'
    return subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", *cmd], capture_output=True, text=True,
                          env=env_with(), timeout=180)


def test_a_read_only_working_folder_is_one_fast_line(tmp_path):
    t0 = time.monotonic()
    out = read_only(tmp_path, sys.executable, "-m", "harness", "epochs=1")
    assert out.returncode == 2 and time.monotonic() - t0 < 60
    one_error_line(out.stderr, "read-only")


def test_a_store_in_a_read_only_folder_is_one_line(tmp_path):
    assert run_cli("epochs=1", cwd=tmp_path).returncode == 0
    out = read_only(tmp_path, sys.executable, "-m", "harness", "epochs=1", "seed=1", "tracking.uri=sqlite:///mlflow.db")
    assert out.returncode == 2
    one_error_line(out.stderr, "read-only")
    assert statuses(tmp_path, "imbalanced") == ["FINISHED"]


# ---------------------------------------------------------------- 4./5. end to end (the rest in test_checks.py)

@pytest.mark.parametrize("args, message", [
    (["experiment=nosuch"], "experiment"),
    (["task.hidden=[8,-1]"], "task.hidden"),
    (["loss=ce", "loss.label_smoothing=2"], "loss.label_smoothing"),
    (["seed=18446744073709551616"], "seed must be"),
])
def test_bad_knobs_are_refused_before_a_run_opens(tmp_path, args, message):
    out = run_cli(*args, cwd=tmp_path)
    assert out.returncode == 2
    one_error_line(out.stderr, message)
    assert not (tmp_path / "mlflow.db").exists() or statuses(tmp_path, "imbalanced") == []


def test_a_target_that_is_not_a_loss_is_never_called(tmp_path):
    made = tmp_path / "made_by_target"
    out = run_cli("loss._target_=os.makedirs", f"+loss.name={made}", cwd=tmp_path)
    assert out.returncode == 2
    one_error_line(out.stderr, "loss._target_", "torch.nn.Module")
    assert not made.exists()


def test_a_swept_choice_that_does_not_exist_is_one_line_before_anything_is_written(tmp_path):
    # Hydra finds it only when it composes the jobs: before this check, after the parent run was made
    out = run_cli("--multirun", "task=regression", "loss=mse,mae", "optimizer=adam,lbfgs", "epochs=1", cwd=tmp_path)
    assert out.returncode == 2
    one_error_line(out.stderr, "optimizer=lbfgs is not an option (in optimizer=adam,lbfgs); available: adafactor, adagrad, adam")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no store, no sweep folder


def test_a_swept_key_that_does_not_exist_is_one_line_before_anything_is_written(tmp_path):
    out = run_cli("--multirun", "task=regression", "loss=mse,huber", "optimizer.nosuch=1,2", "epochs=1", cwd=tmp_path)
    assert out.returncode == 2
    one_error_line(out.stderr, "Could not override 'optimizer.nosuch'. No such key in the config (to add one: +optimizer.nosuch=1)")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no store, no sweep folder
