"""The bulk metric writer: what MLflow reads back is what log_batch would have left."""
import math

import pytest
from mlflow.entities import Metric, RunTag

from harness import sqlwrite
from harness.tracking import open_store


def metrics(epochs, keys=("train/loss", "val/acc"), t0=1000):
    return [Metric(k, 1.0 / (e + 1) + i, t0 + e, e) for e in range(epochs) for i, k in enumerate(keys)]


@pytest.fixture
def two_runs(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/mlflow.db")
    assert store.sql is not None  # a sqlite store takes the fast path
    eid = store.experiment_id("sqlwrite")
    fast, slow = (store.client.create_run(eid).info.run_id for _ in range(2))
    return store, fast, slow


def read(store, run_id):
    run = store.client.get_run(run_id)
    history = {k: [(m.step, m.timestamp, m.value) for m in store.client.get_metric_history(run_id, k)] for k in run.data.metrics}
    return run.data.metrics, history, run.data.tags


def test_rows_latest_values_and_tags_match_log_batch(two_runs):
    store, fast, slow = two_runs
    first, second = metrics(3), metrics(6)[6:]  # two flushes: epochs 0-2, then 3-5
    odd = [Metric("lr_step", v, 2000, 7) for v in (math.nan, math.inf)] + [Metric("lr_step", 0.5, 1500, 3)]
    for batch, tags in ((first, {"heartbeat": "1"}), (second + odd, {"heartbeat": "2", "outcome": "finished"})):
        assert sqlwrite.write(store.sql, fast, batch, tags)
        store.client.log_batch(slow, metrics=batch, tags=[RunTag(k, v) for k, v in tags.items()])
    latest_fast, history_fast, tags_fast = read(store, fast)
    latest_slow, history_slow, tags_slow = read(store, slow)
    assert latest_fast.keys() == latest_slow.keys() == {"train/loss", "val/acc", "lr_step"}
    for k in latest_slow:  # the newest by (step, timestamp, value), NaN and inf as MLflow stores them
        assert latest_fast[k] == latest_slow[k] or math.isnan(latest_fast[k]) and math.isnan(latest_slow[k])
    assert {k: sorted(v) for k, v in history_fast.items()}.keys() == history_slow.keys()
    for k in history_slow:
        assert len(history_fast[k]) == len(history_slow[k])
        assert sorted(map(str, history_fast[k])) == sorted(map(str, history_slow[k]))
    assert tags_fast["heartbeat"] == "2" and tags_fast["outcome"] == "finished"
    assert latest_fast["train/loss"] == pytest.approx(1.0 / 6)


def test_a_row_already_there_falls_back_to_log_batch_and_loses_nothing(two_runs):
    store, fast, _ = two_runs
    batch = metrics(2)
    assert sqlwrite.write(store.sql, fast, batch, {})
    assert not sqlwrite.write(store.sql, fast, batch + metrics(3)[4:], {})  # a duplicate: nothing written
    store.log(fast, batch + metrics(3)[4:], {"outcome": "finished"})       # the store's own path drops the duplicate
    _, history, tags = read(store, fast)
    assert [s for s, _, _ in sorted(history["train/loss"])] == [0, 1, 2]
    assert tags["outcome"] == "finished"
