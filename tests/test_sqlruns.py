"""A bundle's runs created and ended in one transaction each (harness/tracking/sqlruns.py) read back through
MlflowClient exactly as runs logged through MLflow's public API with the same content."""

import time

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from harness.tracking.runs import MlflowTracker, end_many, start_many
from harness.tracking.store import open_store

PARAMS = {"loss": "mse", "optimizer.lr": "0.001", "task.outlier_fraction": "0.2", "seed": "3"}
CONFIG = "loss:\n  _target_: torch.nn.MSELoss\nseed: 3\n"
VOLATILE_TAGS = ("process", "heartbeat")  # the writing process and the time: differ between any two runs


def public_api(
    client: MlflowClient, experiment_id: str, name: str, tags: dict, metrics: list, end_tags: dict, status: str
) -> str:
    run = client.create_run(experiment_id, run_name=name, tags=tags)
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in PARAMS.items()])
    client.log_text(run.info.run_id, CONFIG, "config.yaml")
    client.log_batch(run.info.run_id, metrics=metrics, tags=[])
    client.set_tag(run.info.run_id, "outcome", end_tags["outcome"])
    client.set_tag(run.info.run_id, "train_seconds", end_tags["train_seconds"])
    client.set_terminated(run.info.run_id, status=status)
    return run.info.run_id


def seen(client: MlflowClient, run_id: str) -> dict:
    """Everything a user reads of a run through MlflowClient, less its id and times."""
    run = client.get_run(run_id)
    info = run.info
    return {
        "status": info.status,
        "lifecycle_stage": info.lifecycle_stage,
        "user_id": info.user_id,
        "run_name": info.run_name,
        "experiment_id": info.experiment_id,
        "artifact_uri": info.artifact_uri.replace(run_id, "RUN"),
        "ended": info.end_time is not None and info.end_time >= info.start_time,
        "tags": {k: v for k, v in run.data.tags.items() if k not in VOLATILE_TAGS},
        "params": run.data.params,
        "metrics": run.data.metrics,
        "history": {k: [(m.step, m.value) for m in client.get_metric_history(run_id, k)] for k in run.data.metrics},
        "artifacts": sorted(a.path for a in client.list_artifacts(run_id)),
        "config": client.download_artifacts(run_id, "config.yaml")
        and open(client.download_artifacts(run_id, "config.yaml")).read(),
    }


def test_batched_runs_read_back_as_runs_logged_through_the_public_api(tmp_path, monkeypatch):
    compare_with_public_api(tmp_path, monkeypatch, f"sqlite:///{tmp_path}/mlflow.db")


def compare_with_public_api(tmp_path, monkeypatch, uri: str) -> None:
    """Three runs opened and ended in one transaction each, then their twins through the public API: the same
    to a reader, field by field, on the store at ``uri`` (sqlite here, PostgreSQL in tests/test_postgres.py)."""
    monkeypatch.chdir(tmp_path)
    store = open_store(uri)
    assert store.sql is not None
    trackers = [MlflowTracker(store, "cmp") for _ in range(3)]
    names = ["loss=mse,seed=0", "loss=mae,seed=1", "loss=huber,seed=2"]
    tags = [{"task": "regression", "bundle": "b1", "outcome": "running", "mlflow.user": "someone"} for _ in names]
    start_many(trackers, [(n, t, PARAMS, CONFIG) for n, t in zip(names, tags)])
    now = int(time.time() * 1000)
    for i, t in enumerate(trackers):
        t.buffer = [Metric("val/mse", 1.0 / (s + i + 1), now, s) for s in range(1, 4)] + [Metric("lr", 0.1, now, 3)]
    statuses = ["FINISHED", "FAILED", "KILLED"]
    ends = [(s, {"outcome": s.lower(), "train_seconds": "1.500"}) for s in statuses]
    assert end_many(trackers, ends) == {}

    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.get_experiment_by_name("cmp").experiment_id
    for i, (t, name, tag) in enumerate(zip(trackers, names, tags)):
        metrics = [Metric("val/mse", 1.0 / (s + i + 1), now, s) for s in range(1, 4)] + [Metric("lr", 0.1, now, 3)]
        twin = public_api(client, experiment_id, name, tag, metrics, ends[i][1], statuses[i])
        assert seen(client, t.run_id) == seen(client, twin)
    assert {t.buffer == [] for t in trackers} == {True}


def test_a_single_run_opens_in_one_transaction_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = open_store(f"sqlite:///{tmp_path}/mlflow.db")
    (one,) = trackers = [MlflowTracker(store, "solo")]
    start_many(trackers, [("alone", {"outcome": "running"}, PARAMS, CONFIG)])
    assert one.run_id and MlflowClient(tracking_uri=store.uri).get_run(one.run_id).data.params == PARAMS
    assert end_many(trackers, [("FINISHED", {"outcome": "finished"})]) == {}
    assert MlflowClient(tracking_uri=store.uri).get_run(one.run_id).info.status == "FINISHED"
