"""The bulk metric writer: what MLflow reads back is what log_batch would have left."""

import math

import pytest
from mlflow.entities import Metric, RunTag

from harness.tracking import sqlwrite
from harness.tracking.store import open_store


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
    store.log(fast, batch + metrics(3)[4:], {"outcome": "finished"})  # the store's own path drops the duplicate
    _, history, tags = read(store, fast)
    assert [s for s, _, _ in sorted(history["train/loss"])] == [0, 1, 2]
    assert tags["outcome"] == "finished"


def test_several_runs_in_one_transaction_read_back_as_written_one_by_one(tmp_path):
    """write_many (a stacked bundle's flush): each run gets its own rows, latest values and tags."""
    store = open_store(f"sqlite:///{tmp_path}/mlflow.db")
    eid = store.experiment_id("sqlwrite")
    together, alone = ([store.client.create_run(eid).info.run_id for _ in range(3)] for _ in range(2))
    for t0 in (1000, 5000):  # two flushes, the second moves each run's latest values on
        batches = [
            [Metric(m.key, m.value + r, m.timestamp, m.step + (t0 > 1000) * 3) for m in metrics(3, t0=t0)] for r in range(3)
        ]
        assert sqlwrite.write_many(
            store.sql, [(run, b, {"heartbeat": str(t0), "member": str(r)}) for r, (run, b) in enumerate(zip(together, batches))]
        )
        for r, (run, b) in enumerate(zip(alone, batches)):
            assert sqlwrite.write(store.sql, run, b, {"heartbeat": str(t0), "member": str(r)})
    for a, b in zip(together, alone):
        (latest_a, history_a, tags_a), (latest_b, history_b, tags_b) = read(store, a), read(store, b)
        assert (latest_a, history_a) == (latest_b, history_b)
        assert {k: v for k, v in tags_a.items() if k != "mlflow.runName"} == {
            k: v for k, v in tags_b.items() if k != "mlflow.runName"
        }
    assert read(store, together[2])[0]["train/loss"] == pytest.approx(2 + 1.0 / 3)


def test_a_flush_group_writes_its_members_together_and_each_ends_alone(tmp_path, monkeypatch):
    from harness.tracking.runs import FlushGroup, MlflowTracker

    store = open_store(f"sqlite:///{tmp_path}/mlflow.db")
    group, trackers = FlushGroup(), [MlflowTracker(store, "grouped", flush_seconds=0.0) for _ in range(3)]
    for t in trackers:
        group.join(t)
        t.start("member", {}, {"lr": "0.1"}, "lr: 0.1\n")
    calls = []
    monkeypatch.setattr(store, "log_many", lambda items, _f=store.log_many: calls.append(len(items)) or _f(items))
    trackers[0].log({"train/loss": 1.0}, step=1)  # due at once: the group writes every member's buffer
    assert calls == [3] and all(t.buffer == [] for t in trackers)
    for i, t in enumerate(trackers[1:], 1):
        t.buffer.append(Metric("train/loss", float(i), 1, 1))
    trackers[0].end("FINISHED", {"outcome": "finished"})  # leaves the group; the others still flush together
    trackers[1].log({"val/loss": 2.0}, step=1)
    assert calls == [3, 1, 2]  # the group's write, the ended member's own last write, the group (less it)
    for t in trackers[1:]:
        t.end("FINISHED", {"outcome": "finished"})
    runs = [store.client.get_run(t.run_id) for t in trackers]
    assert [r.info.status for r in runs] == ["FINISHED"] * 3
    assert [r.data.metrics["train/loss"] for r in runs] == [1.0, 1.0, 2.0]
    assert runs[1].data.metrics["val/loss"] == 2.0
