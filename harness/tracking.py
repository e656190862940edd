"""MLflow runs: the store, start, params, buffered metrics, outcome, artifacts.

All writes go through ``MlflowClient`` (no global "active run" state). One client and store per
tracking URI per process (``open_store``), whatever the number of runs. Metrics are buffered and
written with ``log_batch``: one call per epoch or per ``flush_seconds``, never one per step (a
per-step ``log_metric`` cost 11 s per 1000 steps on sqlite here, one ``log_batch`` 0.14 s). On a
database store the metrics of a flush go in with one statement (``harness.sqlwrite``).

The store is checked before it is used, so that every problem with it is one line
(``HarnessError``): an unknown URI scheme, a server that does not answer, a sqlite file that is not
a database, that cannot be written, or whose folder cannot be; an experiment name MLflow refuses.
A fresh sqlite file is created under a lock, so that many processes opening it at once do not race
in MLflow's schema migration. A store locked by another writer is waited for, up to
``lock_timeout`` seconds, then one line; a flush that meets a lock mid-training keeps its metrics
and tries again at the next flush.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import HarnessError, fresh_store, sqlwrite

PARAM_VALUE_LIMIT = 6000  # MLflow's cap on a param value
PARAMS_PER_BATCH = 100  # MLflow's cap on params per log_batch
METRICS_PER_BATCH = 1000  # MLflow's cap on metrics per log_batch
SQLITE_HEADER = b"SQLite format 3\x00"
KNOWN_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks", "file", "")


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


# ---------------------------------------------------------------- checking a store before use


def quiet_mlflow() -> None:
    import logging

    # MLflow logs a whole traceback for a locked sqlite file before it raises; the harness says it in one line
    for name, level in (("mlflow", logging.WARNING), ("alembic", logging.WARNING), ("mlflow.store.db.utils", logging.CRITICAL)):
        logging.getLogger(name).setLevel(level)


def sqlite_path(uri: str) -> Path | None:
    """The file of a sqlite:/// URI (None for an in-memory database); a query (?timeout=30) is SQLAlchemy's, not the name's."""
    rest = uri[len("sqlite://") :].split("?", 1)[0]
    if rest in ("", "/", "/:memory:"):
        return None
    return Path(rest[1:] if rest.startswith("/") else rest).expanduser()


def runs_link(uri: str, experiment_id: str) -> str:
    """Where a person sees an experiment's runs in the MLflow UI (MLflow 3 opens an experiment on its
    GenAI overview; ``workflowType=machine_learning`` opens the runs table)."""
    page = f"#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{page}"
    return f"mlflow ui --backend-store-uri {uri}  then open  http://127.0.0.1:5000/{page}"


def check_sqlite(uri: str) -> None:
    path = sqlite_path(uri)
    if path is None:
        return
    folder = path.parent if str(path.parent) else Path(".")
    where = f"the MLflow store {path}"
    if path.exists():
        if path.is_dir():
            raise HarnessError(f"{where} is a folder, not a database file; point tracking.uri at a file (sqlite:///mlflow.db)")
        try:
            with open(path, "rb") as f:
                head = f.read(len(SQLITE_HEADER))
        except OSError as e:
            raise HarnessError(f"{where} cannot be read ({e.strerror})") from None
        if head and head != SQLITE_HEADER:
            raise HarnessError(
                f"{where} is not an SQLite database (corrupt, or another kind of file); "
                "move it aside or point tracking.uri at another file"
            )
        if not os.access(path, os.W_OK):
            raise HarnessError(
                f"{where} is read-only (no write permission, or a read-only file system); "
                "make it writable or point tracking.uri at another file"
            )
        if not os.access(folder, os.W_OK | os.X_OK):
            raise HarnessError(
                f"{where} is in a read-only folder ({folder}), where sqlite cannot write its journal; "
                "point tracking.uri at a file in a writable folder"
            )
    elif not folder.is_dir():
        raise HarnessError(f"{where} cannot be created: the folder {folder} does not exist")
    elif not os.access(folder, os.W_OK | os.X_OK):
        raise HarnessError(
            f"{where} cannot be created: the folder {folder.resolve()} is read-only; "
            "run from a writable folder or point tracking.uri at one (sqlite:////abs/path/mlflow.db)"
        )


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast with one line when an MLflow server URI does not answer (MLflow itself retries for minutes)."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).read()
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise HarnessError(
            f"the MLflow tracking server {uri} is not reachable ({reason}); start it "
            f"(mlflow server --host 127.0.0.1 --port PORT) or point at another tracking URI"
        ) from None


def known_schemes() -> set[str]:
    try:
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry

        return set(_tracking_store_registry._registry)
    except Exception:  # a private registry: fall back to what MLflow 3 ships
        return set(KNOWN_SCHEMES)


def check_uri(uri: str) -> None:
    """One line for a URI that cannot work, before MLflow is asked (it retries for minutes on some)."""
    if uri != uri.strip():
        raise HarnessError(
            f"tracking.uri={uri!r} begins or ends with white space, which would name another store "
            "(a file 'mlflow.db ' beside mlflow.db); remove it"
        )
    scheme = uri.split("://", 1)[0].split("+", 1)[0] if "://" in uri else ""
    allowed = known_schemes()
    if scheme not in allowed:
        raise HarnessError(
            f"tracking.uri={uri} has an unknown scheme {scheme!r}; allowed: "
            f"{', '.join(sorted(s for s in allowed if s))} (e.g. sqlite:///mlflow.db or http://host:5000)"
        )
    if scheme == "sqlite":
        if sqlite_path(uri) is None:
            raise HarnessError(
                f"tracking.uri={uri} is an in-memory database: every run would be lost when the process "
                "ends; use a file, e.g. sqlite:///mlflow.db"
            )
        check_sqlite(uri)
    check_reachable(uri)


def first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(getattr(e, "message", None) or e).splitlines() if ln.strip()]
    return lines[0][:300] if lines else type(e).__name__


def is_locked(e: BaseException) -> bool:
    return "database is locked" in str(e) or "database table is locked" in str(e)


@contextlib.contextmanager
def creation_lock(uri: str):
    """Serialise the first opening of a sqlite file among processes (MLflow's schema migration
    races itself: 'duplicate column name'). The lock is on the file's folder: no file is left behind."""
    path = sqlite_path(uri) if uri.startswith("sqlite:") else None
    if path is None:
        yield
        return
    fd = os.open(path.parent if str(path.parent) else ".", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# ---------------------------------------------------------------- the store: one per URI per process


def forget_engine(uri: str) -> None:
    """MLflow keeps one database engine per URI for the process; after the file under it was replaced, a
    new one must be made (the old engine's pooled connection still holds the removed file)."""
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        engine = SqlAlchemyStore._engine_map.pop(uri, None)  # a private map: where it moves, nothing is forgotten
        if engine is not None:
            engine.dispose()
    except Exception:  # noqa: BLE001
        pass


class Store:
    def __init__(self, uri: str, lock_timeout: float):
        from mlflow.tracking import MlflowClient

        quiet_mlflow()
        self.uri, self.lock_timeout = uri, lock_timeout
        self.experiments: dict[str, str] = {}
        with creation_lock(uri):  # one process at a time creates or migrates the tables
            path = sqlite_path(uri) if uri.startswith("sqlite:") else None
            seeded = path is not None and fresh_store.seed(path)  # a new file: copied in, not migrated (fresh_store.py)
            try:
                self.client = self.call(MlflowClient, tracking_uri=uri)  # (MLflow opens the store right here)
                self.call(self.client.search_experiments, max_results=1)
            except (HarnessError, Exception):
                if not seeded:
                    raise
                # the cached empty store was bad (it passed the quick check): drop it and the copy just made
                # of it (nothing can be in that yet), and let MLflow create the store itself
                fresh_store.discard(path)
                forget_engine(uri)
                self.client = self.call(MlflowClient, tracking_uri=uri)
                self.call(self.client.search_experiments, max_results=1)
        self.sql = sqlwrite.sql_store(self.client)  # a database store: metrics go in with one statement

    def __reduce__(self):  # a worker process that receives it opens its own (a database engine does not travel)
        return _open, (self.uri, self.lock_timeout)

    def log(self, run_id: str, metrics: list, tags: dict[str, str]) -> None:
        """Write metrics and tags to a run: one transaction on a database store, else log_batch calls."""
        from mlflow.entities import RunTag

        if self.sql is not None and self.call(sqlwrite.write, self.sql, run_id, metrics, tags):
            return
        extra = [RunTag(k, str(v)) for k, v in tags.items()]
        for i in range(0, max(1, len(metrics)), METRICS_PER_BATCH):
            self.call(self.client.log_batch, run_id, metrics=metrics[i : i + METRICS_PER_BATCH], tags=extra if i == 0 else [])

    def log_many(self, items: list[tuple[str, list, dict[str, str]]]) -> None:
        """``log`` for several runs, ``(run_id, metrics, tags)`` each: one transaction on a database store."""
        if self.sql is not None and len(items) > 1 and self.call(sqlwrite.write_many, self.sql, items):
            return
        for run_id, metrics, tags in items:
            self.log(run_id, metrics, tags)

    def call(self, fn: Callable, *args, **kwargs):
        """fn(*args), waiting out a store locked by another writer for up to lock_timeout seconds;
        any other MLflow error becomes one line."""
        from mlflow.exceptions import MlflowException

        deadline, pause = time.monotonic() + self.lock_timeout, 0.05
        while True:
            try:
                return fn(*args, **kwargs)
            except Exception as e:
                if not is_locked(e):
                    if isinstance(e, MlflowException) or type(e).__module__.startswith("sqlalchemy"):
                        raise HarnessError(f"the MLflow store {self.uri} refused a write: {first_line(e)}") from None
                    raise
                if time.monotonic() >= deadline:
                    raise HarnessError(
                        f"the MLflow store {self.uri} stayed locked by another writer for "
                        f"{self.lock_timeout:g} s (tracking.lock_timeout); try again when it is free"
                    ) from None
                time.sleep(pause)
                pause = min(1.0, pause * 2)

    def close_run(self, run_id: str, status: str, tags: dict[str, str]) -> None:
        """Set a run's outcome tags and close it (for runs whose own process cannot: it died, or was killed)."""
        from mlflow.entities import RunTag

        self.call(self.client.log_batch, run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        self.call(self.client.set_terminated, run_id, status=status)

    def experiment_id(self, name: str) -> str:
        if name not in self.experiments:
            found = self.call(self.client.get_experiment_by_name, name)
            if found is None:
                from mlflow.exceptions import MlflowException

                try:
                    self.call(self.client.create_experiment, name)
                except HarnessError as e:
                    found = self.call(self.client.get_experiment_by_name, name)  # created meanwhile by a parallel job?
                    if found is None:
                        raise HarnessError(
                            f"MLflow refused the experiment name {name!r}: {str(e).split('refused a write: ', 1)[-1]}"
                        ) from None
                except MlflowException as e:
                    raise HarnessError(f"MLflow refused the experiment name {name!r}: {first_line(e)}") from None
                found = self.call(self.client.get_experiment_by_name, name)
            if found.lifecycle_stage == "deleted":
                raise HarnessError(f"the MLflow experiment {name!r} is deleted; restore it or choose another tracking.experiment")
            check_artifact_location(found.artifact_location, name)
            self.experiments[name] = found.experiment_id
        return self.experiments[name]


def check_artifact_location(location: str, experiment: str) -> None:
    """A local artifact folder must be writable: config.yaml goes there right after a run opens."""
    if not location or "://" in location and not location.startswith("file://"):
        return
    path = Path(location[len("file://") :] if location.startswith("file://") else location)
    while not path.exists() and path.parent != path:
        path = path.parent
    if not os.access(path, os.W_OK | os.X_OK):
        raise HarnessError(
            f"the artifact folder of experiment {experiment!r} ({location}) is not writable; "
            "run from a writable folder or choose another tracking.experiment"
        )


@functools.lru_cache(maxsize=8)
def _open(uri: str, lock_timeout: float) -> Store:
    from mlflow.exceptions import MlflowException

    try:
        return Store(uri, lock_timeout)
    except MlflowException as e:
        raise HarnessError(f"cannot open the MLflow store {uri}: {first_line(e)}") from None
    except OSError as e:
        raise HarnessError(f"cannot open the MLflow store {uri}: {e.strerror or e}") from None


def open_store(uri: str, lock_timeout: float = 60.0) -> Store:
    """The process's store for this URI, checked and created once."""
    check_uri(uri)
    return _open(uri, float(lock_timeout))


# ---------------------------------------------------------------- which process a run belongs to


@functools.lru_cache(maxsize=1)
def process_tag() -> str:
    """host:pid:start-time of this process; a later sweep uses it to tell a dead run from a live one."""
    import psutil

    return f"{socket.gethostname()}:{os.getpid()}:{psutil.Process().create_time():.2f}"


STALE_AFTER = 1800.0  # seconds without a heartbeat after which a run of another machine counts as dead


def process_alive(tags: dict[str, str]) -> bool:
    """Whether the process that wrote a run may still be writing it: on this machine, its pid is
    alive with the same start time; on another machine, its heartbeat is younger than STALE_AFTER."""
    import psutil

    try:
        host, pid, started = tags["process"].rsplit(":", 2)
        pid, started = int(pid), float(started)
    except (KeyError, ValueError):
        return False  # written before runs carried their process: nobody can still be writing it
    if host != socket.gethostname():
        return time.time() - float(tags.get("heartbeat", 0)) < STALE_AFTER
    try:
        return abs(psutil.Process(pid).create_time() - started) < 1.0
    except psutil.Error:
        return False


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
