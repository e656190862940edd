"""A bundle's member runs created, and ended, in one transaction each on an MLflow SQL store.

``MlflowClient`` creates a run in one transaction, gives it its params in another and closes it in a third,
so a bundle of 20 members paid some 60 commits and as many ORM round trips for its bookkeeping alone. For
the stores MLflow keeps in a database (``sqlwrite.sql_store``), this module writes the same rows through
MLflow's own table classes, as ``SqlAlchemyStore.create_run``, ``log_batch`` and ``update_run_info`` do:
every member's run, tags and params in one transaction; at the end, every member's last metrics, outcome
tags, status and end time in one more. Keys and values are checked with MLflow's own validators first;
anything they refuse, or a schema this module does not know, goes through ``MlflowClient`` as before.
``tests/test_sqlruns.py`` reads runs made both ways back through ``MlflowClient`` and compares them field by field.
"""

from __future__ import annotations

import uuid
from typing import Any


def usable(store: Any, items: list[tuple[str, dict[str, str], dict[str, str]]]) -> bool:
    """Whether MLflow's validators accept every tag and param (else the caller takes the public API's path)."""
    try:
        from mlflow.store.tracking.dbmodels.models import SqlParam, SqlRun, SqlTag  # noqa: F401
        from mlflow.utils.validation import _validate_param, _validate_tag
    except ImportError:
        return False
    if not (hasattr(store, "_check_experiment_is_active") and hasattr(store, "ARTIFACTS_FOLDER_NAME")):
        return False  # an MLflow whose SqlAlchemyStore this module was not written against
    try:
        for _, tags, params in items:
            for k, v in tags.items():
                _validate_tag(k, v)
            for k, v in params.items():
                _validate_param(k, v)
    except Exception:  # noqa: BLE001  MLflow refuses it: its own path says why
        return False
    return True


def create_many(
    store: Any, experiment_id: str, items: list[tuple[str, dict[str, str], dict[str, str]]], start_time: int
) -> list[tuple[str, str]]:
    """Create one RUNNING run per ``(run name, tags, params)`` in one transaction; returns their (id, artifact URI)."""
    import sqlalchemy as sa
    from mlflow.entities import LifecycleStage, RunStatus, SourceType
    from mlflow.store.tracking.dbmodels.models import SqlParam, SqlRun, SqlTag
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME, MLFLOW_USER
    from mlflow.utils.uri import append_to_uri_path

    experiment = store.get_experiment(experiment_id)
    store._check_experiment_is_active(experiment)
    ids, runs, tag_rows, param_rows = [], [], [], []
    for name, tags, params in items:
        run_id = uuid.uuid4().hex
        artifact_uri = append_to_uri_path(experiment.artifact_location, run_id, store.ARTIFACTS_FOLDER_NAME)
        runs.append(
            {
                "name": name,
                "artifact_uri": artifact_uri,
                "run_uuid": run_id,
                "experiment_id": int(experiment_id),
                "source_type": SourceType.to_string(SourceType.UNKNOWN),
                "source_name": "",
                "entry_point_name": "",
                "user_id": tags.get(MLFLOW_USER, "unknown"),
                "status": RunStatus.to_string(RunStatus.RUNNING),
                "start_time": start_time,
                "end_time": None,
                "deleted_time": None,
                "source_version": "",
                "lifecycle_stage": LifecycleStage.ACTIVE,
            }
        )
        tag_rows += [{"key": k, "value": v, "run_uuid": run_id} for k, v in {**tags, MLFLOW_RUN_NAME: name}.items()]
        param_rows += [{"key": k, "value": v, "run_uuid": run_id} for k, v in params.items()]
        ids.append((run_id, str(artifact_uri)))
    with store.ManagedSessionMaker(read_only=False) as session:  # three statements, each many rows (no ORM objects)
        session.execute(sa.insert(SqlRun.__table__), runs)
        for table, rows in ((SqlTag.__table__, tag_rows), (SqlParam.__table__, param_rows)):
            if rows:
                session.execute(sa.insert(table), rows)
    return ids


def end_many(store: Any, items: list[tuple[str, list, dict[str, str], str]], end_time: int) -> None:
    """End runs in one transaction: each ``(run id, its unwritten metrics, tags, status)``, as a flush
    (``sqlwrite``) and ``set_terminated`` would, one after the other."""
    from mlflow.store.tracking.dbmodels.models import SqlRun

    from harness.tracking.sqlwrite import insert, rows_of

    rows, newest, tags = rows_of(store, [(run_id, metrics, run_tags) for run_id, metrics, run_tags, _ in items])
    with store.ManagedSessionMaker(read_only=False) as session:
        insert(session, rows, newest, tags)
        for status in {s for *_, s in items}:
            ids = [run_id for run_id, _, _, s in items if s == status]
            session.query(SqlRun).filter(SqlRun.run_uuid.in_(ids), SqlRun.lifecycle_stage == "active").update(
                {SqlRun.status: status, SqlRun.end_time: end_time}, synchronize_session=False
            )


def write_text(client: Any, run_id: str, artifact_uri: str, text: str, name: str) -> None:
    """A small text artifact: written straight into a local artifact folder (what ``log_text`` does there,
    without its temporary file and copy), else through ``log_text``."""
    from pathlib import Path

    if artifact_uri.startswith("file://") or "://" not in artifact_uri:
        from mlflow.utils.file_utils import local_file_uri_to_path

        folder = Path(local_file_uri_to_path(artifact_uri))
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(folder / name)
        return
    client.log_text(run_id, text, name)
