"""--multirun end to end: parent runs, parallel logging, resume, fault isolation, submitit, a real MLflow server."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from harness.engine.job import compose
from tests.conftest import ROOT, mlflow_runs, write_idx_mnist

pytestmark = pytest.mark.slow
STUDIES = sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml"))


def sweep(*args, cwd: Path, uri: str | None = None, timeout: float = 600):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [
        sys.executable,
        "-m",
        "harness",
        "--multirun",
        f"tracking.uri={uri or f'sqlite:///{cwd}/mlflow.db'}",
        "progress=false",
        *args,
    ]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def split_runs(runs):
    parents = [r for r in runs if r.data.tags.get("harness.role") == "sweep"]
    return parents, [r for r in runs if r.data.tags.get("harness.role") != "sweep"]


def test_sweep_groups_jobs_under_a_parent_and_isolates_faults(tmp_path):
    out = sweep("task=regression", "optimizer=sgd", "optimizer.lr=0.01,1e6", "loss=mse,focal", "epochs=2", cwd=tmp_path)
    assert out.returncode == 1, out.stderr  # a job failed (focal does not fit regression)
    assert "sweep done: 1 finished, 1 diverged, 2 failed, 0 killed, 0 skipped" in out.stdout
    assert "losses that fit regression" in out.stderr
    _, runs = mlflow_runs(tmp_path, "regression")
    (parent,), jobs = split_runs(runs)
    assert len(jobs) == 2  # the two refused jobs never opened a run
    assert {r.data.tags["mlflow.parentRunId"] for r in jobs} == {parent.info.run_id}
    assert {r.data.tags["sweep_id"] for r in jobs} == {parent.data.tags["sweep_id"]}
    assert sorted(r.data.tags["outcome"] for r in jobs) == ["diverged", "finished"]
    # children are named by what the sweep varies; all their overrides are in a tag; the parent by its axes
    assert {r.info.run_name for r in jobs} == {"optimizer.lr=0.01,loss=mse", "optimizer.lr=1000000.0,loss=mse"}
    assert {r.data.tags["harness.overrides"].split(",progress=False,")[1] for r in jobs} == {
        "task=regression,optimizer=sgd,optimizer.lr=0.01,loss=mse,epochs=2",
        "task=regression,optimizer=sgd,optimizer.lr=1000000.0,loss=mse,epochs=2",
    }
    assert parent.info.run_name == "sweep: optimizer.lr x loss (4 jobs)" and parent.data.tags["jobs"] == "4"
    assert parent.info.status == "FAILED"
    assert parent.data.metrics["jobs_finished"] == 1 and parent.data.metrics["jobs_diverged"] == 1
    assert parent.data.metrics["jobs_failed"] == 2 and parent.data.metrics["jobs_skipped"] == 0


def test_a_glob_over_a_group_sweeps_its_matching_options(tmp_path):
    # Hydra's glob() needs the config loader to list a group's options; the parent run's name and job count read it too
    out = sweep("task=glob(*regression)", "epochs=1", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    parents, jobs = split_runs(mlflow_runs(tmp_path, "multitask")[1])
    assert [p.info.run_name for p in parents] == ["sweep: task (2 jobs)"]
    assert sorted(r.info.run_name for r in jobs) == ["task=regression", "task=tabular_regression"]


@pytest.mark.parametrize("launcher", ["basic", "stacked"])
def test_the_same_job_twice_in_a_sweep_is_two_jobs(tmp_path, launcher):
    out = sweep(f"hydra/launcher={launcher}", "task=regression", "seed=0,0", "epochs=1", cwd=tmp_path)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
    journal = sorted(p.name for p in tmp_path.glob("multirun/*/*/harness_jobs/*.json"))
    assert journal == ["0.json", "1.json"]
    # one after another, the second finds the first finished and is skipped (resume); in one bundle both train
    assert (
        "sweep done: "
        + (
            "1 finished, 0 diverged, 0 failed, 0 killed, 1 skipped"
            if launcher == "basic"
            else "2 finished, 0 diverged, 0 failed, 0 killed, 0 skipped"
        )
        in out.stdout
    )


def test_diverged_jobs_are_an_outcome_and_the_sweep_exits_zero(tmp_path):
    out = sweep("task=regression", "optimizer=sgd", "optimizer.lr=0.01,1e6", "epochs=2", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "1 finished, 1 diverged, 0 failed" in out.stdout


def test_resume_skips_finished_configs_and_resume_false_reruns(tmp_path):
    args = ("task=regression", "loss=mse,mae,huber,log_cosh", "epochs=2")
    assert sweep(*args, cwd=tmp_path).returncode == 0
    again = sweep(*args, cwd=tmp_path)
    assert again.returncode == 0 and "0 finished, 0 diverged, 0 failed, 0 killed, 4 skipped" in again.stdout
    # the first skipped jobs are named, the rest summed up in one line (a resumed study printed 270 lines)
    assert again.stdout.count("skipped: run ") == 3 and again.stdout.count("not listed one by one") == 1
    forced = sweep(*args, "resume=false", cwd=tmp_path)
    assert "4 finished" in forced.stdout
    _, runs = mlflow_runs(tmp_path, "regression")
    parents, jobs = split_runs(runs)
    assert len(parents) == 3 and len(jobs) == 8


@pytest.mark.parametrize("launcher, running", [("basic", 1), ("stacked", 2)])
def test_kill_then_rerun_marks_the_dead_runs_failed(tmp_path, launcher, running):
    """The sweep is killed (-9) in the middle of a job (basic) or of a bundle (stacked: both seeds train
    together); the same sweep run again closes the dead runs as FAILED, closes the dead sweep's parent,
    and trains only what did not finish."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [f"hydra/launcher={launcher}", "task=imbalanced", "epochs=2", "task.n_train=3000", "batch_size=4", "seed=0,1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "--multirun", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", "progress=true", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for line in proc.stdout:
            if "epoch 1/2" in line:  # "epoch 1/2 ..." alone, "bundle ... epoch 1/2 ..." stacked
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    _, runs = mlflow_runs(tmp_path, "imbalanced")
    parents, jobs = split_runs(runs)
    assert [r.info.status for r in jobs] == ["RUNNING"] * running and parents[0].info.status == "RUNNING"
    dead = [r.info.run_id for r in jobs]
    out = sweep(*args, cwd=tmp_path)
    assert out.returncode == 0 and "2 finished" in out.stdout, out.stdout + out.stderr
    client, runs = mlflow_runs(tmp_path, "imbalanced")
    for run_id in dead:
        killed = client.get_run(run_id)
        assert killed.info.status == "FAILED" and killed.data.tags["outcome"] == "failed"
        assert "process died" in killed.data.tags["error"]
    assert client.get_run(parents[0].info.run_id).info.status != "RUNNING"
    assert not [r for r in runs if r.info.status == "RUNNING"]


@pytest.mark.extended  # 100 s; two processes on a fresh store stay in the default suite (tests/test_hostile_stores.py)
def test_eight_parallel_jobs_into_a_fresh_sqlite_store_lose_nothing(tmp_path):
    # 8 joblib workers on the sweep's path (16 processes racing to create one store: tests/test_hostile_stores.py)
    out = sweep(
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=8",
        "task=regression",
        "task.n_train=200",
        "epochs=3",
        "seed=range(8)",
        cwd=tmp_path,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "8 finished, 0 diverged, 0 failed" in out.stdout
    client, runs = mlflow_runs(tmp_path, "regression")
    _, jobs = split_runs(runs)
    assert len(jobs) == 8 and all(r.info.status == "FINISHED" for r in jobs)
    cores = len(os.sched_getaffinity(0))
    for r in jobs:
        assert [m.step for m in client.get_metric_history(r.info.run_id, "test/mse")] == [1, 2, 3]
        assert r.data.tags["threads"] == str(max(1, cores // 8))  # joblib shares the cores among its 8 jobs: never oversubscribed


@pytest.mark.extended  # a launcher's integration, as the SLURM tests (which run submitit for real): CI runs it after the default suite
def test_submitit_local_launcher(tmp_path):
    out = sweep("hydra/launcher=submitit_local", "task=regression", "epochs=2", "loss=mse,mae", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "2 finished" in out.stdout
    _, runs = mlflow_runs(tmp_path, "regression")
    parents, jobs = split_runs(runs)
    assert len(jobs) == 2 and {r.data.tags["mlflow.parentRunId"] for r in jobs} == {parents[0].info.run_id}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.extended  # a real daemon (mlflow server), as the PostgreSQL test: CI runs it after the default suite
def test_sweep_logs_to_a_real_mlflow_server(tmp_path):
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{tmp_path}/server.db",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--workers",
            "1",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(uri + "/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "mlflow server did not come up"
                time.sleep(0.5)
        out = sweep("task=regression", "epochs=2", "loss=mse,huber", cwd=tmp_path, uri=uri)
        assert out.returncode == 0, out.stderr[-3000:]
        import json

        exp = json.load(urllib.request.urlopen(f"{uri}/api/2.0/mlflow/experiments/get-by-name?experiment_name=regression"))
        req = urllib.request.Request(
            f"{uri}/api/2.0/mlflow/runs/search",
            method="POST",
            headers={"Content-Type": "application/json"},
            data=json.dumps({"experiment_ids": [exp["experiment"]["experiment_id"]]}).encode(),
        )
        runs = json.load(urllib.request.urlopen(req))["runs"]
        jobs = [r for r in runs if {"key": "harness.role", "value": "sweep"} not in r["data"].get("tags", [])]
        assert len(jobs) == 2 and len(runs) == 3
        for r in jobs:
            params = {p["key"]: p["value"] for p in r["data"]["params"]}
            metrics = {m["key"]: m["value"] for m in r["data"]["metrics"]}
            assert params["task"] == "regression" and "test/mse" in metrics
            assert r["info"]["status"] == "FINISHED"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.mark.parametrize("study", STUDIES)
def test_every_study_runs_in_smoke_mode(tmp_path, study):
    data = write_idx_mnist(tmp_path / "data", n_train=600, n_test=100)
    write_idx_mnist(data, n_train=600, n_test=100, folder="FashionMNIST")
    task = compose(f"experiment={study}").task  # a study may inherit its task from another
    images = task._target_.endswith(".MNIST") or task.get("dataset") in ("mnist_lt", "fashion_mnist_lt")
    extra = [f"data_dir={data}", "task.val_size=100"] if images else []
    if task._target_.endswith(".Sequence") and task.get("dataset") == "mnist":  # digit strings built from MNIST's images
        extra = [f"data_dir={data}"]
    out = sweep(f"experiment={study}", "smoke=on", *extra, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert " 0 failed" in out.stdout
    _, runs = mlflow_runs(tmp_path, f"{study}_smoke")
    parents, jobs = split_runs(runs)
    assert len(parents) == 1 and len(jobs) >= 2 and {r.data.tags["seed"] for r in jobs} == {"0"}
    assert all(r.data.params["epochs"] == "1" for r in jobs)


def test_stacked_members_read_like_solo_jobs_and_resume(tmp_path):
    """The same sweep through the basic launcher (one job after another) and the stacked one (one
    bundle): a reader of the store sees the same runs, save the two bundle tags."""
    args = ("task=regression", "loss=mse,huber", "seed=0,1", "epochs=2", "schedule=onecycle")
    for name in ("basic", "stacked", "workers"):
        (tmp_path / name).mkdir()
    assert sweep("hydra/launcher=basic", *args, cwd=tmp_path / "basic").returncode == 0
    out = sweep("hydra/launcher=stacked", *args, cwd=tmp_path / "stacked")
    assert out.returncode == 0 and "4 of 4 jobs in 1 bundle(s)" in out.stdout, out.stdout + out.stderr
    # two bundles of two, trained side by side in two worker processes
    out = sweep(
        "hydra/launcher=stacked", "hydra.launcher.workers=2", "hydra.launcher.max_members=2", *args, cwd=tmp_path / "workers"
    )
    assert out.returncode == 0 and "4 of 4 jobs in 2 bundle(s) (2 at a time, each in its own process)" in out.stdout, (
        out.stdout + out.stderr
    )
    by_hash = {}
    for name in ("basic", "stacked", "workers"):
        client, runs = mlflow_runs(tmp_path / name, "regression")
        _, jobs = split_runs(runs)
        by_hash[name] = {r.data.tags["config_hash"]: (client, r) for r in jobs}
    assert len(by_hash["basic"]) == 4 and set(by_hash["basic"]) == set(by_hash["stacked"]) == set(by_hash["workers"])
    assert len({r.data.tags["process"] for _, r in by_hash["workers"].values()}) == 2  # each bundle's own process
    volatile = {
        "mlflow.parentRunId",
        "sweep_id",
        "train_seconds",
        "process",
        "heartbeat",
        "mlflow.runName",
        "harness.overrides",
        "harness.overrides_json",
    }
    for chash, (c0, solo) in by_hash["basic"].items():
        for name, size in (("stacked", "4"), ("workers", "2")):
            c1, member = by_hash[name][chash]
            differ = {k for k in solo.data.params if member.data.params.get(k) != solo.data.params[k]}
            assert set(member.data.params) == set(solo.data.params) and not differ
            assert set(member.data.tags) - set(solo.data.tags) == {"bundle", "bundle_size"}
            assert member.data.tags["bundle_size"] == size
            skip = volatile | ({"threads"} if name == "workers" else set())  # a worker's bundle gets its share of the cores
            assert {k: v for k, v in member.data.tags.items() if k in solo.data.tags and k not in skip} == {
                k: v for k, v in solo.data.tags.items() if k not in skip
            }
            assert member.info.status == solo.info.status == "FINISHED"
            assert set(member.data.metrics) == set(solo.data.metrics)
            for key in ("test/mse", "train/loss", "lr_step"):
                h0 = c0.get_metric_history(solo.info.run_id, key)
                h1 = c1.get_metric_history(member.info.run_id, key)
                assert [m.step for m in h1] == [m.step for m in h0]
                assert [m.value for m in h1] == pytest.approx([m.value for m in h0], rel=1e-4)
    again = sweep("hydra/launcher=stacked", *args, cwd=tmp_path / "stacked")
    assert again.returncode == 0 and "4 skipped" in again.stdout, again.stdout
