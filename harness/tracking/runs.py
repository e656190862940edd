"""One MLflow run's record: params (flattened config), buffered metrics written with ``log_batch``
(one call per epoch or per ``flush_seconds``, never one per step), tags, artifacts and its end;
``FlushGroup`` writes the metrics of a bundle's members in one transaction, ``start_many`` and
``end_many`` open and close their runs in one each."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omegaconf import DictConfig

from harness import HarnessError
from harness.tracking import sqlruns
from harness.tracking.store import Store, process_tag
from harness.tracking.uris import PARAM_VALUE_LIMIT, PARAMS_PER_BATCH, first_line


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """{'a': {'b': 1}, 'c': [1, 2]} -> {'a.b': '1', 'c': '[1, 2]'} (lists stay whole, as one value)."""
    if isinstance(tree, dict):
        out: dict[str, str] = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    value = "null" if tree is None else str(tree)
    if len(value) > PARAM_VALUE_LIMIT:
        value = value[: PARAM_VALUE_LIMIT - 20] + "...(see config.yaml)"
    return {prefix[:-1]: value}


# ---------------------------------------------------------------- one run


class NullTracker:
    """Tracking off (tracking.enabled=false): the same interface, nothing written."""

    run_id = None

    def start(self, run_name: str, tags: dict[str, str], params: dict[str, str], config_yaml: str) -> None:
        pass

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def flush(self) -> None:
        pass

    def end(self, status: str, tags: dict[str, str]) -> None:
        pass


def write_buffers(store: Store, trackers: list, tags: dict[str, str], during_training: bool, metrics: bool = True) -> None:
    """Write the trackers' buffered metrics (all in one transaction on a database store) and ``tags``
    to each of their runs. Mid-training, a store that refuses keeps the metrics for the next flush
    (one warning); otherwise its error is raised."""
    try:
        store.log_many([(t.run_id, t.buffer if metrics else [], tags) for t in trackers])
    except HarnessError as e:
        if not during_training:
            raise
        if not any(t.warned for t in trackers):
            print(f"warning: {e}; training goes on and the metrics are kept for the next write", file=sys.stderr, flush=True)
        for t in trackers:
            t.warned, t.last_flush = True, time.monotonic()
        return
    for t in trackers:
        if metrics:
            t.buffer = []
        t.last_flush = time.monotonic()


class FlushGroup:
    """Trackers of one store that write together: when the first of them is due, all their buffered
    metrics go to the store in one transaction (a stacked bundle's members: one commit per flush,
    not one per member). A tracker leaves the group when its run ends; one of another store (or
    tracking off) does not join, and flushes alone."""

    def __init__(self) -> None:
        self.trackers: list[MlflowTracker] = []

    def join(self, tracker) -> None:
        if isinstance(tracker, MlflowTracker) and (not self.trackers or tracker.store is self.trackers[0].store):
            tracker.group = self
            self.trackers.append(tracker)

    def flush(self, during_training: bool = True) -> None:
        open_ = [t for t in self.trackers if t.run_id is not None and t.group is self]
        if open_:
            write_buffers(open_[0].store, open_, {"heartbeat": f"{time.time():.0f}"}, during_training)


class MlflowTracker:
    def __init__(self, store: Store, experiment: str, flush_seconds: float = 5.0):
        self.store, self.client = store, store.client
        self.experiment_id = store.experiment_id(experiment)
        self.flush_seconds = flush_seconds
        self.buffer: list = []
        self.last_flush = time.monotonic()
        self.run_id: str | None = None
        self.warned = False
        self.group: FlushGroup | None = None

    def start(self, run_name: str, tags: dict[str, str], params: dict[str, str], config_yaml: str) -> None:
        """Create the run with its tags, then params and config.yaml in as few writes as MLflow allows.
        Once the run exists, a failure here ends it FAILED before the error goes on."""
        from mlflow.entities import Param, RunTag

        tags = {**tags, "process": process_tag(), "heartbeat": f"{time.time():.0f}"}
        run = self.store.call(self.client.create_run, self.experiment_id, run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        try:
            items = [Param(k, v) for k, v in params.items()]
            for i in range(0, max(1, len(items)), PARAMS_PER_BATCH):
                self.store.call(self.client.log_batch, self.run_id, params=items[i : i + PARAMS_PER_BATCH])
            self.store.call(self.client.log_text, self.run_id, config_yaml, "config.yaml")
        except BaseException as e:
            with contextlib.suppress(Exception):
                self.store.call(
                    self.client.log_batch, self.run_id, tags=[RunTag("outcome", "failed"), RunTag("error", first_line(e))]
                )
                self.store.call(self.client.set_terminated, self.run_id, status="FAILED")
            raise

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.buffer += [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if time.monotonic() - self.last_flush >= self.flush_seconds:
            (self.group or self).flush(during_training=True)

    def flush(self, during_training: bool = False, tags: dict[str, str] | None = None, metrics: bool = True) -> None:
        """Write the buffered metrics, a heartbeat and `tags`. Mid-training, a locked store keeps the
        metrics for the next flush."""
        extra = {"heartbeat": f"{time.time():.0f}", **{k: str(v) for k, v in (tags or {}).items()}}
        write_buffers(self.store, [self], extra, during_training, metrics)

    def end(self, status: str, tags: dict[str, str]) -> None:
        """Write what is buffered, set the outcome tags and close the run (FINISHED, FAILED or KILLED).
        If the store cannot take the metrics, they are saved to a JSON file beside it and the run is still closed."""
        if self.run_id is None:
            return
        self.group = None  # its last metrics go with its outcome, below
        try:
            self.flush(tags=tags)  # the outcome tags ride with the last metrics: one write fewer
        except HarnessError as e:
            saved = self.save_unwritten()
            tags = {**tags, "error": f"{e}; unwritten metrics saved to {saved}"}
            print(f"error: {e}; this run's unwritten metrics are saved in {saved}", file=sys.stderr, flush=True)
            self.flush(tags=tags, metrics=False)
        self.store.call(self.client.set_terminated, self.run_id, status=status)

    def save_unwritten(self) -> Path:
        path = Path(f"harness-unwritten-{self.run_id}.json").resolve()
        path.write_text(
            json.dumps([{"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step} for m in self.buffer])
        )
        return path


# ---------------------------------------------------------------- a bundle's runs together


def start_many(trackers: list, starts: list[tuple[str, dict[str, str], dict[str, str], str]]) -> None:
    """Open one run per tracker, ``(run name, tags, params, config yaml)`` each: on a database store all of
    them, with their tags and params, in one transaction (``sqlruns``), their config.yaml written after;
    else one tracker after another (``MlflowTracker.start``)."""
    store = shared_sql_store(trackers)
    items = [
        (name, {**tags, "process": process_tag(), "heartbeat": f"{time.time():.0f}"}, params) for name, tags, params, _ in starts
    ]
    if store is None or not sqlruns.usable(store.sql, items):
        for t, start in zip(trackers, starts):
            t.start(*start)
        return
    created = store.call(sqlruns.create_many, store.sql, trackers[0].experiment_id, items, int(time.time() * 1000))
    for t, (run_id, _) in zip(trackers, created):
        t.run_id = run_id
    try:
        for t, (run_id, artifact_uri), (*_, config_yaml) in zip(trackers, created, starts):
            sqlruns.write_text(t.client, run_id, artifact_uri, config_yaml, "config.yaml")
    except BaseException as e:  # the runs exist: they end FAILED (as MlflowTracker.start's) before the error goes on
        why = f"cannot write config.yaml into {artifact_uri}: {e.strerror or e}" if isinstance(e, OSError) else first_line(e)
        with contextlib.suppress(Exception):
            store.call(
                sqlruns.end_many,
                store.sql,
                [(i, [], {"outcome": "failed", "error": why}, "FAILED") for i, _ in created],
                int(time.time() * 1000),
            )
        if isinstance(e, OSError):
            raise HarnessError(why) from None
        raise


def end_many(trackers: list, ends: list[tuple[str, dict[str, str]]]) -> dict[str, str]:
    """Close one run per tracker, ``(status, tags)`` each, with its unwritten metrics: on a database store
    all in one transaction; else (or if that fails) one after another, each as ``MlflowTracker.end``.
    Returns {run id: why} for the runs the store would not close (a later sweep closes them)."""
    store = shared_sql_store(trackers)
    open_ = [(t, end) for t, end in zip(trackers, ends) if t.run_id is not None]
    if store is not None and len(open_) > 1:
        try:
            store.call(
                sqlruns.end_many,
                store.sql,
                [(t.run_id, t.buffer, {"heartbeat": f"{time.time():.0f}", **tags}, status) for t, (status, tags) in open_],
                int(time.time() * 1000),
            )
        except HarnessError:
            pass  # each run alone below: what one cannot take is saved beside the store, the others close
        else:
            for t, _ in open_:
                t.buffer, t.group = [], None
            return {}
    failed = {}
    for t, (status, tags) in open_:
        try:
            t.end(status, tags)
        except HarnessError as e:
            failed[t.run_id] = str(e)
    return failed


def shared_sql_store(trackers: list) -> Store | None:
    """The database store all ``trackers`` write to (one experiment), or None."""
    if not trackers or not all(isinstance(t, MlflowTracker) for t in trackers):
        return None
    store = trackers[0].store
    if store.sql is None or any(t.store is not store or t.experiment_id != trackers[0].experiment_id for t in trackers):
        return None
    return store


def experiment_name(cfg: DictConfig, task_choice: str, task_is_swept: bool = False) -> str:
    """tracking.experiment, else the task's name ("multitask" for a sweep over tasks), + the suffix."""
    name = cfg.tracking.experiment or ("multitask" if task_is_swept else task_choice)
    return f"{name}{cfg.tracking.get('experiment_suffix') or ''}"
