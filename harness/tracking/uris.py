"""Checking an MLflow store before it is used, so that every problem with it is one line
(``HarnessError``): an unknown URI scheme, a server that does not answer, a sqlite file that is not a
database, that cannot be written, or whose folder cannot be; a store locked by another writer."""

from __future__ import annotations

import contextlib
import fcntl
import os
import urllib.error
import urllib.request
from pathlib import Path

from harness import HarnessError

PARAM_VALUE_LIMIT = 6000  # MLflow's cap on a param value
PARAMS_PER_BATCH = 100  # MLflow's cap on params per log_batch
METRICS_PER_BATCH = 1000  # MLflow's cap on metrics per log_batch
SQLITE_HEADER = b"SQLite format 3\x00"
KNOWN_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks", "file", "")


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
