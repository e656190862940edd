"""A new sqlite store is copied from a cached, fully migrated empty one (harness/tracking/fresh_store.py)."""

import sqlite3

from harness.tracking import fresh_store
from harness.tracking.store import Store


def experiments(db):
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT name, artifact_location FROM experiments ORDER BY experiment_id").fetchall()
    finally:
        con.close()


def test_a_fresh_store_is_copied_from_the_template_and_belongs_to_its_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    built = []
    make = fresh_store.make_template
    monkeypatch.setattr(fresh_store, "make_template", lambda p: (built.append(p), make(p)))
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)  # MLflow's artifact root for a sqlite store: ./mlruns
        store = Store(f"sqlite:///{tmp_path / name}/mlflow.db", 5.0)
        store.experiment_id("study")
    assert len(built) == 1 and built[0] == fresh_store.template_path()  # built once, then copied
    assert fresh_store.usable(built[0])
    for name in ("a", "b"):  # MLflow added its Default experiment to each copy, its artifacts in that folder
        found = dict(experiments(tmp_path / name / "mlflow.db"))
        assert set(found) == {"Default", "study"}
        assert all(str(tmp_path / name) in location for location in found.values())
    assert not list((tmp_path / "b").glob(".*seeding"))


def test_a_broken_template_is_rebuilt_a_cut_copy_redone_and_an_existing_store_never_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    template = fresh_store.template_path()
    template.parent.mkdir(parents=True)
    template.write_bytes(b"not a database")
    db = tmp_path / "mlflow.db"
    assert fresh_store.seed(db)
    assert fresh_store.usable(template) and fresh_store.usable(db)
    db.unlink()
    (tmp_path / ".mlflow.db.seeding").write_bytes(b"half a copy, cut off by kill -9")
    assert fresh_store.seed(db) and fresh_store.usable(db)
    assert not (tmp_path / ".mlflow.db.seeding").exists()
    db.write_bytes(b"someone's file")
    assert not fresh_store.seed(db)
    assert db.read_bytes() == b"someone's file"


def test_without_a_cache_folder_mlflow_creates_the_store_as_before(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("HARNESS_CACHE", str(blocker / "cache"))  # cannot be made: a file is in the way
    assert not fresh_store.seed(tmp_path / "x.db")
    assert not (tmp_path / "x.db").exists()
    monkeypatch.chdir(tmp_path)
    Store(f"sqlite:///{tmp_path}/mlflow.db", 5.0).experiment_id("study")
    assert dict(experiments(tmp_path / "mlflow.db")).keys() == {"Default", "study"}


def test_a_uri_with_a_query_seeds_the_file_it_names(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    Store(f"sqlite:///{tmp_path}/q.db?timeout=30", 5.0).experiment_id("study")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "q.db"]  # not a file named "q.db?timeout=30"
    assert dict(experiments(tmp_path / "q.db")).keys() == {"Default", "study"}
