"""The MLflow store: one client per tracking URI per process, and which process a run belongs to.

All writes go through ``MlflowClient`` (no global "active run" state). One client and store per
tracking URI per process (``open_store``), whatever the number of runs. Metrics are buffered and
written with ``log_batch``: one call per epoch or per ``flush_seconds``, never one per step (a
per-step ``log_metric`` cost 11 s per 1000 steps on sqlite here, one ``log_batch`` 0.14 s). On a
database store the metrics of a flush go in with one statement (``harness.tracking.sqlwrite``).

The store is checked before it is used, so that every problem with it is one line
(``HarnessError``): an unknown URI scheme, a server that does not answer, a sqlite file that is not
a database, that cannot be written, or whose folder cannot be; an experiment name MLflow refuses.
A fresh sqlite file is created under a lock, so that many processes opening it at once do not race
in MLflow's schema migration. A store locked by another writer is waited for, up to
``lock_timeout`` seconds, then one line; a flush that meets a lock mid-training keeps its metrics
and tries again at the next flush.
"""

from __future__ import annotations

import functools
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from harness import HarnessError
from harness.tracking import fresh_store, sqlwrite
from harness.tracking.uris import METRICS_PER_BATCH, check_uri, creation_lock, first_line, is_locked, quiet_mlflow, sqlite_path

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
                assert path is not None  # seeded: a sqlite file
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
        host, pid_text, started_text = tags["process"].rsplit(":", 2)
        pid, started = int(pid_text), float(started_text)
    except (KeyError, ValueError):
        return False  # written before runs carried their process: nobody can still be writing it
    if host != socket.gethostname():
        return time.time() - float(tags.get("heartbeat", 0)) < STALE_AFTER
    try:
        return abs(psutil.Process(pid).create_time() - started) < 1.0
    except psutil.Error:
        return False
