"""Helpers of the hostile suites (tests/test_hostile_*.py): run the CLI as a user would, read the
store afterwards with plain sqlite, and check that an error is one line."""

import os
import sqlite3
import sys
import time
from pathlib import Path

from tests.conftest import ROOT, mlflow_runs


def env_with(*paths: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*map(str, paths), str(ROOT)])}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def harness_cmd(tmp_path: Path, *args: str, multirun: bool = False) -> list[str]:
    return [
        sys.executable,
        "-m",
        "harness",
        *(["--multirun"] if multirun else []),
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        *args,
    ]


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
                "(select run_uuid from tags where key = 'harness.role' and value = 'sweep')",
                (experiment,),
            ).fetchone()[0]
    except sqlite3.Error:
        return 0
