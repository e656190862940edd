"""A new sqlite store copied from a cached empty one, instead of migrated from nothing.

MLflow creates a sqlite store by running its schema migrations one by one (69 in MLflow 3.17):
about 1 s on the project's 2-core machine, paid in every fresh folder (the README's first command,
each test in a temporary folder, each side of a bench row). For one MLflow version the result is
the same file every time, holding MLflow's tables at their newest revision and no row that depends
on where the store lives (MLflow adds its Default experiment, whose artifact folder is the store's
own, when it first opens the file). So the harness keeps one such file per MLflow version in its
cache folder ($HARNESS_CACHE, else $XDG_CACHE_HOME/harness, else ~/.cache/harness) and copies it
into place. Anything that goes wrong here (no cache folder, a private MLflow function renamed)
leaves MLflow to create the store itself, as before.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import tempfile
from pathlib import Path

TABLES = {"alembic_version", "experiments", "runs", "metrics", "latest_metrics", "params", "tags", "experiment_tags"}


def cache_dir() -> Path:
    if os.environ.get("HARNESS_CACHE"):
        return Path(os.environ["HARNESS_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "harness"


def template_path() -> Path:
    """The cached empty store for the installed MLflow: its version and migration files name it."""
    import mlflow
    import mlflow.store.db_migrations as migrations

    versions = sorted(p.name for p in (Path(migrations.__file__).parent / "versions").glob("*.py"))
    key = hashlib.sha256("\n".join([mlflow.__version__, sqlite3.sqlite_version, *versions]).encode()).hexdigest()[:12]
    return cache_dir() / f"mlflow-{mlflow.__version__}-{key}.db"


def make_template(path: Path) -> None:
    """MLflow's own table creation and migrations, run once on a file in the cache folder."""
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".building-", suffix=".db")
    os.close(fd)
    try:
        engine = sqlalchemy.create_engine(f"sqlite:///{tmp}")
        try:
            _initialize_tables(engine)
        finally:
            engine.dispose()
        os.replace(tmp, path)  # whole or not at all: a parallel process may be building the same one
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def usable(template: Path) -> bool:
    """A whole sqlite file with MLflow's revision table (a cache folder may hold anything)."""
    try:
        con = sqlite3.connect(f"{template.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return False
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return (
            con.execute("PRAGMA quick_check").fetchone()[0] == "ok"
            and TABLES <= tables
            and con.execute("SELECT count(*) FROM alembic_version").fetchone()[0] == 1
        )
    except sqlite3.Error:
        return False
    finally:
        con.close()


def seed(db: Path) -> bool:
    """Put an empty, fully migrated store at ``db`` if no file is there; True when it did.
    The caller holds the folder's creation lock; a file that appears meanwhile is never replaced."""
    if db.exists():
        return False
    try:
        template = template_path()
        if not usable(template):
            make_template(template)
        tmp = (
            db.parent / f".{db.name}.seeding"
        )  # one name: the folder's lock is held, and a copy cut off by kill -9 is overwritten next time
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)  # the mode sqlite itself would give
        try:
            with os.fdopen(fd, "wb") as out, open(template, "rb") as src:
                out.write(src.read())
            os.link(tmp, db)  # fails, replacing nothing, if a store appeared meanwhile
        finally:
            os.unlink(tmp)
        return True
    except Exception:  # noqa: BLE001 - a faster path only: MLflow creates the store as before
        return False


def discard(db: Path) -> None:
    """A store just seeded here did not open: remove it and the cached template it came from (the next
    fresh folder builds a new one). Called under the folder's creation lock, right after ``seed``."""
    for path in (db, db.with_name(db.name + "-journal")):
        try:
            path.unlink()
        except OSError:
            pass
    try:
        template_path().unlink()
    except Exception:  # noqa: BLE001 - gone already, or the cache cannot be written: MLflow creates the store anyway
        pass
