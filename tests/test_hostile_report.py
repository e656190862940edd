"""A hostile user against the report command (issue 26): it never deletes or overwrites what it did
not write, never writes outside its folder, and says in one line what is wrong with a folder, a
flag or a locked store."""

import sqlite3
import threading
import time

import pytest

from harness.report import access, build, folder
from harness.report.__main__ import main
from tests.test_report import store  # noqa: F401  (the fixture: a small store with known values)


def one_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    for n in needles:
        assert n in err[0], err[0]
    return err[0]


def test_a_report_into_a_users_folder_deletes_nothing_of_theirs(store, monkeypatch):  # noqa: F811
    uri, _, _, _, tmp = store
    work = tmp / "work"
    work.mkdir()
    (work / "keep.png").write_bytes(b"a user's figure")
    (work / "notes.md").write_text("mine")
    monkeypatch.chdir(work)
    assert main(["study", "--tracking-uri", uri, "--out", ".", "--no-log"]) == 0
    assert (work / "keep.png").read_bytes() == b"a user's figure" and (work / "notes.md").read_text() == "mine"
    made = folder.read_record(work)["files"]
    assert "report.md" in made and "keep.png" not in made and any(f.endswith(".png") for f in made)
    assert main(["study", "--tracking-uri", uri, "--out", ".", "--no-log"]) == 0  # the same runs again: replaced
    assert (work / "keep.png").exists() and (work / "notes.md").exists()


def test_a_figure_the_report_no_longer_makes_is_removed_and_only_that(store):  # noqa: F811
    uri, _, _, _, tmp = store
    out = tmp / "out"
    assert main(["study", "--tracking-uri", uri, "--out", str(out), "--no-log"]) == 0
    record = folder.read_record(out)
    record["files"].append("old_figure.png")  # as if an earlier report had made one more figure
    (out / folder.RECORD).write_text(__import__("json").dumps(record))
    (out / "old_figure.png").write_bytes(b"x")
    (out / "mine.png").write_bytes(b"x")
    assert main(["study", "--tracking-uri", uri, "--out", str(out), "--no-log"]) == 0
    assert not (out / "old_figure.png").exists() and (out / "mine.png").exists()


def test_an_experiment_named_dot_dot_writes_inside_reports(store, monkeypatch):  # noqa: F811
    uri, client, _, _, tmp = store
    exp = client.create_experiment("..")
    from tests.test_report import add_run

    add_run(client, exp, "mnist", "sgd", "0.1", 0, 0.9)
    work = tmp / "work"
    (work / "reports").mkdir(parents=True)
    (work / "keep.png").write_bytes(b"x")
    monkeypatch.chdir(work)
    assert main(["..", "--tracking-uri", uri, "--no-log"]) == 0
    assert (work / "keep.png").exists() and not (work / "report.md").exists()
    assert (work / "reports" / "__" / "report.md").exists()
    assert folder.safe_name("..") == "__" and folder.safe_name(".hidden") == "_hidden" and folder.safe_name("a/b") == "a_b"


def test_a_report_made_from_other_runs_is_not_overwritten_without_force(store, capsys):  # noqa: F811
    uri, client, exp, _, tmp = store
    out = tmp / "out"
    assert main(["study", "--tracking-uri", uri, "--out", str(out), "--no-log"]) == 0
    other = client.create_experiment("other")
    from tests.test_report import add_run

    add_run(client, other, "mnist", "sgd", "0.1", 0, 0.9)
    capsys.readouterr()
    assert main(["other", "--tracking-uri", uri, "--out", str(out), "--no-log"]) == 2
    one_error(capsys, "holds a report made from other runs", "'study'", "--force")
    assert "study" in (out / folder.RECORD).read_text()
    add_run(client, exp, "mnist", "sgd", "0.1", 7, 0.95)  # the same study with one more run: it may grow
    assert main(["study", "--tracking-uri", uri, "--out", str(out), "--no-log"]) == 0
    assert main(["other", "--tracking-uri", uri, "--out", str(out), "--no-log", "--force"]) == 0
    (out / folder.RECORD).unlink()  # a report.md the command did not record writing (e.g. an older version's)
    capsys.readouterr()
    assert main(["other", "--tracking-uri", uri, "--out", str(out), "--no-log"]) == 2
    one_error(capsys, "did not record writing", "--force")


@pytest.mark.parametrize("gallery", [False, True])
def test_an_output_folder_that_is_a_file_is_one_line(store, capsys, gallery):  # noqa: F811
    uri, _, _, _, tmp = store
    (tmp / "afile").write_text("x")
    for out in ("afile", "afile/sub"):
        args = ["--gallery"] if gallery else ["study", "--tracking-uri", uri, "--no-log"]
        assert main([*args, "--out", str(tmp / out)]) == 2
        one_error(capsys, "is a file, not a folder")
    assert (tmp / "afile").read_text() == "x"


def test_an_output_folder_that_cannot_be_written_is_one_line(store, capsys, monkeypatch):  # noqa: F811
    uri, _, _, _, tmp = store
    (tmp / "ro").mkdir()
    access = folder.os.access  # as a read-only folder is to a non-root user (the tests may run as root)
    monkeypatch.setattr(folder.os, "access", lambda path, mode: access(path, mode) and not str(path).endswith("ro"))
    assert main(["study", "--tracking-uri", uri, "--no-log", "--out", str(tmp / "ro")]) == 2
    one_error(capsys, "permission denied")
    monkeypatch.undo()

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied", "report.md")

    monkeypatch.setattr(build, "markdown", refuse)  # the folder turns read-only while the report is written
    assert main(["study", "--tracking-uri", uri, "--no-log", "--out", str(tmp / "x")]) == 2
    one_error(capsys, "cannot write the report", "Permission denied")


@pytest.mark.parametrize("value", ["nan", "inf", "-0.1", "1.5"])
def test_a_bad_tolerance_is_one_line(store, capsys, value):  # noqa: F811
    uri, _, _, _, tmp = store
    assert main(["study", "--tracking-uri", uri, "--no-log", "--out", str(tmp / "o"), "--tolerance", value]) == 2
    one_error(capsys, "--tolerance must be a number in [0, 1)")
    assert not (tmp / "o").exists()


def test_a_locked_store_is_waited_for_then_one_line(store, capsys, monkeypatch):  # noqa: F811
    uri, _, _, _, tmp = store
    db = str(tmp / "mlflow.db")
    held = threading.Event()
    release = threading.Event()

    def hold(seconds: float):
        con = sqlite3.connect(db, timeout=0, check_same_thread=False)
        con.execute("begin exclusive")
        held.set()
        release.wait(seconds)
        con.rollback()
        con.close()

    thread = threading.Thread(target=hold, args=(60,))
    thread.start()
    held.wait(10)
    monkeypatch.setattr(access.waiting_out_locks, "__defaults__", (2.0,))
    t0 = time.monotonic()
    try:
        assert main(["study", "--tracking-uri", uri + "?timeout=0.2", "--no-log", "--out", str(tmp / "o")]) == 2
    finally:
        release.set()
        thread.join()
    assert time.monotonic() - t0 >= 2.0
    one_error(capsys, "stayed locked by another process")
    # a lock that goes away while the report waits: the report is made
    release.clear()
    held.clear()
    thread = threading.Thread(target=hold, args=(1.5,))
    thread.start()
    held.wait(10)
    monkeypatch.setattr(access.waiting_out_locks, "__defaults__", (30.0,))
    try:
        assert main(["study", "--tracking-uri", uri + "?timeout=0.2", "--no-log", "--out", str(tmp / "o2")]) == 0
    finally:
        release.set()
        thread.join()
    assert (tmp / "o2" / "report.md").exists()


def test_untestable_verdicts_are_named_once_not_once_per_method():
    from harness.report.wording import join_verdicts

    items = [
        "sgd: too few seeds for a test (n = 1)",
        "adam: too few seeds for a test (n = 1)",
        "lion is worse",
        "nadam: too few seeds for a test (n = 1)",
    ]
    assert join_verdicts(items) == "sgd, adam, nadam: too few seeds for a test (n = 1); lion is worse"


def test_no_marker_of_a_method_looks_like_the_diverged_cross():
    from harness.report import figures

    assert not set(figures.MARKERS) & set("xX")


def test_no_experiment_lists_the_store(store, capsys):  # noqa: F811
    uri, _, _, _, _ = store
    assert main(["--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert "study: 16 run(s), 1 sweep(s)" in out and "sweep x" in out
    assert main(["--list", "--tracking-uri", uri]) == 0


def two_sweeps(tmp, declared: bool = False):
    """An experiment with an older grid sweep (3 runs) and a newer one (2 runs) that reused one run of the first on resume."""
    from mlflow.tracking import MlflowClient

    from tests.test_report import add_run

    uri = f"sqlite:///{tmp}/two.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("two")
    study = {"harness.compare": '["optimizer"]', "harness.tune": "[]"} if declared else {}
    old = client.create_run(
        exp, run_name="sweep: old", tags={"harness.role": "sweep", "sweep_id": "old-sweep", **study}
    ).info.run_id
    kept = [
        add_run(client, exp, "mnist", opt, "0.1", seed, v, parent=old)
        for opt, seed, v in (("sgd", 0, 0.90), ("sgd", 1, 0.91), ("adam", 0, 0.95))
    ]
    client.set_terminated(old, "FINISHED")
    time.sleep(0.01)
    new = client.create_run(
        exp, run_name="sweep: new", tags={"harness.role": "sweep", "sweep_id": "new-sweep", **study}
    ).info.run_id
    for opt, seed, v in (("adam", 1, 0.96), ("lion", 0, 0.80)):
        add_run(client, exp, "mnist", opt, "0.1", seed, v, parent=new)
    from harness.report.load import REUSED_FILE

    client.log_dict(new, {"runs": [kept[2]]}, REUSED_FILE)  # adam seed 0 was skipped on resume: the new sweep reused it
    client.set_terminated(new, "FINISHED")
    return uri, client, old, new


def test_a_report_reads_the_newest_sweep_with_what_it_reused(tmp_path):
    uri, client, old, new = two_sweeps(tmp_path)
    assert main(["two", "--tracking-uri", uri, "--out", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert "3 runs from the newest sweep: new-sweep (1 of them reused on resume); 2 other runs" in md
    assert "lion" in md and "sgd" not in md
    assert [a.path for a in client.list_artifacts(new, "report")] and not client.list_artifacts(old, "report")
    assert main(["two", "--tracking-uri", uri, "--out", str(tmp_path / "o"), "--sweep", "old-sweep", "--no-log"]) == 0
    md = (tmp_path / "o" / "report.md").read_text()
    assert "3 runs from the sweep asked for: old-sweep" in md and "lion" not in md
    assert main(["two", "--tracking-uri", uri, "--out", str(tmp_path / "w"), "--where", f"sweep_id={old}", "--no-log"]) == 0
    assert main(["two", "--tracking-uri", uri, "--out", str(tmp_path / "a"), "--all-sweeps", "--no-log"]) == 0
    md = (tmp_path / "a" / "report.md").read_text()
    assert "all 5 runs of the experiment (--all-sweeps)" in md and "lion" in md and "sgd" in md


def test_a_declared_study_reads_all_the_sweeps_of_its_declaration(tmp_path, capsys):
    uri, _, _, _ = two_sweeps(tmp_path, declared=True)
    assert main(["two", "--tracking-uri", uri, "--out", str(tmp_path / "r"), "--no-log"]) == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert "5 runs from the sweeps of the study's declaration: new-sweep, old-sweep" in md
    capsys.readouterr()
    assert main(["two", "--tracking-uri", uri, "--sweep", "nosuch", "--no-log", "--out", str(tmp_path / "x")]) == 2
    one_error(capsys, "no sweep 'nosuch' in this experiment; its sweeps, newest first: new-sweep, old-sweep")


def test_a_report_on_a_deleted_experiment_says_it_is_deleted(store, capsys):  # noqa: F811
    uri, client, exp, _, tmp = store
    client.delete_experiment(exp)
    assert main(["study", "--tracking-uri", uri, "--no-log", "--out", str(tmp / "d")]) == 2
    one_error(capsys, "experiment 'study'", "is deleted (in MLflow's trash)", f"mlflow experiments restore --experiment-id {exp}")
