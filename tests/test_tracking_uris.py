"""Tracking URIs that would lose records, and a bad cached empty store (issue 26): one line, or healed."""

import sqlite3

import pytest

from harness import HarnessError
from harness.tracking.uris import check_uri


@pytest.mark.parametrize(
    "uri, needle",
    [
        ("sqlite://", "is an in-memory database: every run would be lost"),
        ("sqlite:///:memory:", "is an in-memory database"),
        ("sqlite:///mlflow.db ", "begins or ends with white space"),
        (" sqlite:///mlflow.db", "begins or ends with white space"),
    ],
)
def test_uris_that_would_lose_records_are_refused(tmp_path, monkeypatch, uri, needle):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HarnessError, match=needle):
        check_uri(uri)
    assert list(tmp_path.iterdir()) == []


def test_a_bad_cached_template_is_dropped_and_the_store_made_by_mlflow(tmp_path, monkeypatch):
    """A template that passes the quick check (a whole sqlite file with MLflow's table names) but is not
    MLflow's schema: the copy made of it is removed, the template too, and MLflow creates the store."""
    from harness.tracking import fresh_store
    from harness.tracking import store as tracking

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    template = fresh_store.template_path()
    template.parent.mkdir(parents=True)
    with sqlite3.connect(template) as con:
        for table in fresh_store.TABLES:
            con.execute(f"create table {table} (x)")
        con.execute("insert into alembic_version values ('not-a-revision')")
    assert fresh_store.usable(template)
    uri = f"sqlite:///{tmp_path}/work/mlflow.db"
    (tmp_path / "work").mkdir()
    store = tracking.Store(uri, lock_timeout=5)
    assert store.experiment_id("fine")  # the store works: MLflow made it
    assert not template.exists()  # the bad template is gone; the next fresh folder builds a good one
    run = store.client.create_run(store.experiment_id("fine"))
    assert store.client.get_run(run.info.run_id).info.status == "RUNNING"
