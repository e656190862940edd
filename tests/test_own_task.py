"""Bring your own task (issue 11): the example under examples/own_task, copied to a folder outside
the repository, runs through `hydra.searchpath` as a user would run it: one run, a study of its own
(smoke mode), its own bad-input message; without the search path the error says what to add."""

import os
import shutil
import subprocess
import sys

from tests.conftest import ROOT, mlflow_runs, run_cli


def user_folder(tmp_path):
    """The example's files as the repository has them: what running it where it lies leaves there
    (git-ignored stores, sweep folders, reports) is not copied, so that the counts below hold."""
    folder = tmp_path / "my_project"
    listed = subprocess.run(["git", "ls-files", "examples/own_task"], cwd=ROOT, capture_output=True, text=True)
    tracked = [ROOT / f for f in listed.stdout.split()] if listed.returncode == 0 and listed.stdout.strip() else None
    if tracked is None:  # not a git checkout (an unpacked release): leave out what a run writes
        shutil.copytree(ROOT / "examples" / "own_task", folder, ignore=shutil.ignore_patterns(*LEFT_BY_RUNS))
        return folder
    for path in tracked:
        target = folder / path.relative_to(ROOT / "examples" / "own_task")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return folder


LEFT_BY_RUNS = ("mlflow.db*", "mlruns", "mlartifacts", "multirun", "outputs", "reports", "__pycache__")


def test_a_users_task_runs_from_their_own_folder(tmp_path):
    folder = user_folder(tmp_path)
    out = run_cli("hydra.searchpath=[file://conf]", "task=spirals", "epochs=20", "batch_size=64", "optimizer.lr=0.01", cwd=folder)
    assert out.returncode == 0, out.stderr[-2000:]
    _, runs = mlflow_runs(folder, "spirals")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = runs[0]
    assert run.data.tags["task"] == "spirals" and run.data.tags["primary_metric"] == "test/accuracy"
    assert run.data.params["task.turns"] == "1.0"
    assert run.data.metrics["test/accuracy"] > 0.8  # the spirals are learnable; chance is 0.5


def test_a_users_study_sweeps_and_declares_its_protocol(tmp_path):
    folder = user_folder(tmp_path)
    out = run_cli("--multirun", "hydra.searchpath=[file://conf]", "experiment=spirals_optimizers", "smoke=on", cwd=folder)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "3 finished" in out.stdout
    assert "experiment 'spirals_optimizers_smoke' (with tracking.experiment_suffix=_smoke, which smoke=on sets" in out.stdout
    _, runs = mlflow_runs(folder, "spirals_optimizers_smoke")
    parents = [r for r in runs if r.data.tags.get("harness.role") == "sweep"]
    jobs = [r for r in runs if r.data.tags.get("harness.role") != "sweep"]
    assert len(parents) == 1 and parents[0].data.tags["harness.compare"] == '["optimizer"]'
    assert sorted(r.data.params["optimizer"] for r in jobs) == ["adam", "momentum", "sgd"]
    # the report goes beside the user's store, into their folder's reports/, not into the harness checkout
    rep = subprocess.run(
        [sys.executable, "-m", "harness.report", "spirals_optimizers_smoke", "--no-log"],
        cwd=folder,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert rep.returncode == 0, rep.stderr[-2000:]
    assert (folder / "reports" / "spirals_optimizers_smoke" / "report.md").exists()
    assert not (ROOT / "reports" / "spirals_optimizers_smoke").exists()


def test_bad_input_to_a_users_task_and_a_missing_search_path_are_one_line(tmp_path):
    folder = user_folder(tmp_path)
    out = run_cli("hydra.searchpath=[file://conf]", "task=spirals", "task.noise=2", cwd=folder)
    assert out.returncode == 2 and out.stderr.strip() == "error: task.noise must be in [0, 1), got 2"
    out = run_cli("task=spirals", cwd=folder)
    assert out.returncode == 2
    line = out.stderr.strip()
    assert line.startswith("error: Could not find 'task/spirals'") and "hydra.searchpath=[file://YOUR_CONF_DIR]" in line
