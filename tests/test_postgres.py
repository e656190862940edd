"""A real shared store (issue 11): a PostgreSQL server, `mlflow server` on it, a parallel sweep
(joblib, 4 processes) logging to that server, every run read back through MLflow's REST API.

Skips with one reason where PostgreSQL (initdb, pg_ctl) or its Python driver is not installed;
`.ci/run` installs Debian's postgresql package where apt can."""

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.test_sweeps import free_port, sweep

pytestmark = [pytest.mark.slow, pytest.mark.extended]  # real daemons: CI runs these after the default suite (pytest -m extended)


def postgres_bin() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, or Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def as_postgres_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the `postgres` user."""
    if os.geteuid() != 0:
        return cmd
    if shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: PostgreSQL cannot be started as root")
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no `postgres` user to start PostgreSQL as")
    return ["runuser", "-u", "postgres", "--", *cmd]


def wait_for(url: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            assert time.monotonic() < deadline, f"{url} did not come up"
            time.sleep(0.5)


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server for this module's tests: its URI (user harness, database postgres)."""
    folder = postgres_bin()
    if folder is None:
        pytest.skip("PostgreSQL is not installed (no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin)")
    pytest.importorskip(
        "psycopg", reason="psycopg (the PostgreSQL driver SQLAlchemy uses for postgresql:// URIs) is not installed"
    )
    # the server's own folder outside pytest's (which only root may enter), owned by the user it runs as
    pg_home = Path(tempfile.mkdtemp(prefix="harness-pg-"))
    data, sockets = pg_home / "data", pg_home / "sock"
    data.mkdir(), sockets.mkdir()
    if os.geteuid() == 0:
        for path in (pg_home, data, sockets):
            shutil.chown(path, "postgres")
    pg_port = free_port()
    subprocess.run(
        as_postgres_user([str(folder / "initdb"), "-D", str(data), "-U", "harness", "--auth=trust"]),
        check=True,
        capture_output=True,
        timeout=120,
    )
    subprocess.run(
        as_postgres_user(
            [
                str(folder / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(pg_home / "pg.log"),
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {pg_port} -h 127.0.0.1 -k {sockets}",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        yield f"postgresql://harness@127.0.0.1:{pg_port}/postgres"
    finally:
        subprocess.run(
            as_postgres_user([str(folder / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]), capture_output=True, timeout=60
        )
        shutil.rmtree(pg_home, ignore_errors=True)


def test_a_parallel_sweep_into_mlflow_server_on_postgresql(tmp_path, postgres):
    server, port = None, free_port()
    try:
        backend = postgres
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
                backend,
                "--artifacts-destination",
                str(tmp_path / "artifacts"),
                "--workers",
                "2",
            ],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        uri = f"http://127.0.0.1:{port}"
        wait_for(uri + "/health")
        out = sweep(
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=4",
            "task=regression",
            "task.n_train=300",
            "epochs=2",
            "loss=mse,huber",
            "seed=0,1,2,3",
            cwd=tmp_path,
            uri=uri,
        )
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
        assert "8 finished, 0 diverged, 0 failed" in out.stdout
        exp = json.load(urllib.request.urlopen(f"{uri}/api/2.0/mlflow/experiments/get-by-name?experiment_name=regression"))
        req = urllib.request.Request(
            f"{uri}/api/2.0/mlflow/runs/search",
            method="POST",
            headers={"Content-Type": "application/json"},
            data=json.dumps({"experiment_ids": [exp["experiment"]["experiment_id"]], "max_results": 100}).encode(),
        )
        runs = json.load(urllib.request.urlopen(req))["runs"]
        tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
        jobs = [(r, t) for r, t in zip(runs, tags) if t.get("harness.role") != "sweep"]
        assert len(runs) == 9 and len(jobs) == 8  # 8 jobs and the sweep's parent
        assert sorted((t["loss"], t["seed"]) for _, t in jobs) == sorted(
            (loss, str(s)) for loss in ("mse", "huber") for s in range(4)
        )
        for r, t in jobs:
            assert r["info"]["status"] == "FINISHED" and t["outcome"] == "finished"
            assert {m["key"] for m in r["data"]["metrics"]} >= {"test/mse", "val/loss", "train/loss"}
            assert t["mlflow.parentRunId"] == next(
                r2["info"]["run_id"] for r2, t2 in zip(runs, tags) if t2.get("harness.role") == "sweep"
            )
    finally:
        if server is not None:
            os.killpg(server.pid, 15)
            server.wait(timeout=30)


def test_batched_runs_on_postgresql_read_back_as_runs_logged_through_the_public_api(tmp_path, monkeypatch, postgres):
    """The rows harness/tracking/sqlruns.py and sqlwrite.py write themselves, on a PostgreSQL store (not
    only sqlite): read back through MlflowClient as runs logged through MLflow's public API."""
    from tests.test_sqlruns import compare_with_public_api

    compare_with_public_api(tmp_path, monkeypatch, postgres)
