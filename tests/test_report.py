"""Reports from a small MLflow store with known values: aggregates, ranking, figures, robustness."""

import base64
import math
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from harness.report.__main__ import main
from tests.conftest import ROOT

# final test/accuracy per (optimizer, lr) over seeds 0, 1, 2
FINAL = {
    ("sgd", "0.01"): [0.90, 0.92, 0.91],
    ("sgd", "0.1"): [0.95, 0.96, 0.97],
    ("adam", "0.01"): [0.97, 0.975, 0.98],
    ("adam", "0.1"): [0.93, 0.91, 0.95],
}


def add_run(
    client,
    exp_id,
    task,
    optimizer,
    lr,
    seed,
    final,
    outcome="finished",
    status="FINISHED",
    metric="test/accuracy",
    mode="max",
    epochs=3,
    parent=None,
):
    tags = {
        "task": task,
        "loss": "ce",
        "optimizer": optimizer,
        "schedule": "constant",
        "seed": str(seed),
        "primary_metric": metric,
        "primary_mode": mode,
        "outcome": outcome,
        "harness_version": "0.1.0",
        "train_seconds": "3.0",
    }
    if parent:
        tags["mlflow.parentRunId"] = parent
    run = client.create_run(exp_id, run_name=f"optimizer={optimizer},optimizer.lr={lr},seed={seed}", tags=tags)
    rid = run.info.run_id
    params = {
        "seed": str(seed),
        "optimizer.lr": lr,
        "optimizer._target_": f"torch.optim.{optimizer}",
        "loss._target_": "ce",
        "task._target_": task,
        "epochs": str(epochs),
        "batch_size": "128",
        "tracking.uri": "x",
        "data_dir": "d",
    }
    metrics = []
    for step in range(1, epochs + 1):
        if final is not None:
            value = final if step == epochs else final * step / epochs  # rising to the final value
            metrics += [Metric(metric, value, 0, step), Metric("val/" + metric.split("/")[1], value, 0, step)]
        metrics += [Metric("train/loss", 1.0 / step, 0, step), Metric("epoch_seconds", 1.0, 0, step)]
    client.log_batch(rid, metrics=metrics, params=[Param(k, v) for k, v in params.items()])
    if status != "RUNNING":
        client.set_terminated(rid, status)
    return rid


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("study")
    parent = client.create_run(exp, run_name="sweep x", tags={"harness.role": "sweep"}).info.run_id
    for (opt, lr), values in FINAL.items():
        for seed, v in enumerate(values):
            add_run(client, exp, "mnist", opt, lr, seed, v, parent=parent)
    add_run(client, exp, "mnist", "sgd", "1.0", 0, float("nan"), outcome="diverged", parent=parent)
    add_run(client, exp, "mnist", "sgd", "1.0", 1, float("nan"), outcome="diverged", parent=parent)
    add_run(client, exp, "mnist", "adam", "0.01", 3, 0.5, outcome="running", status="RUNNING", parent=parent)
    add_run(client, exp, "mnist", "adam", "0.1", 3, None, parent=parent)  # finished without its primary metric
    client.set_terminated(parent, "FINISHED")
    return uri, client, exp, parent, tmp_path


def test_aggregates_equal_hand_computed_values(store):
    uri, client, exp, parent, tmp = store
    out = tmp / "report"
    assert main(["study", "--tracking-uri", uri, "--out", str(out), "--target", "mnist=0.95"]) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns[:6]) == ["configuration", "problem", "metric", "mean", "ci95_low", "ci95_high"]  # numbers first
    for (opt, lr), values in FINAL.items():
        row = summary[(summary.optimizer == opt) & (summary["optimizer.lr"] == float(lr))].iloc[0]
        assert row["mean"] == pytest.approx(statistics.mean(values))
        assert row["std"] == pytest.approx(statistics.stdev(values))
        assert row["n"] == 3
        # Student's t interval over 3 seeds: mean +- t(0.975, 2 df) * sd / sqrt(3), t = 4.30265272974946
        half = 4.30265272974946 * statistics.stdev(values) / 3**0.5
        assert (row["ci95_low"], row["ci95_high"]) == pytest.approx(
            (statistics.mean(values) - half, statistics.mean(values) + half)
        )
        assert row["best_epoch"] == 3
    order = [(r.optimizer, str(r["optimizer.lr"])) for _, r in summary.iterrows()]
    expected = sorted(FINAL, key=lambda k: -statistics.mean(FINAL[k]))
    assert order[:4] == expected and summary.iloc[0]["winner"] == "*"
    diverged = summary[(summary.optimizer == "sgd") & (summary["optimizer.lr"] == 1.0)].iloc[0]
    assert diverged["diverged"] == 2 and diverged["n"] == 0 and math.isnan(diverged["mean"])
    # time to target 0.95: adam/0.01 reaches it only at epoch 3 (2/3 of 0.975 < 0.95) -> 3 s of training
    best = summary.iloc[0]
    assert best["time_to_target_s"] == pytest.approx(3.0) and best["reached_target"] == "3/3"


def test_report_files_figures_and_findings(store):
    uri, client, exp, parent, tmp = store
    out = tmp / "report"
    assert main(["study", "--tracking-uri", uri, "--out", str(out)]) == 0
    for name in ("report.md", "report.html", "mnist_curves.png", "mnist_heatmap.png", "mnist_lr_sensitivity.png"):
        assert (out / name).stat().st_size > 1000, name
    assert len(pd.read_csv(out / "summary.csv")) == 5  # 4 configurations + the diverged one
    md = (out / "report.md").read_text()
    assert "best is optimizer=adam, optimizer.lr=0.01 with test/accuracy 0.9750 +- 0.0050 (std) over 3 seeds" in md
    assert "Worst: optimizer=sgd, optimizer.lr=0.01 at 0.9100" in md
    assert "2 run(s) diverged" in md and "1 run(s) are still RUNNING" in md
    assert "1 finished run(s) logged no value of their primary metric" in md
    assert "runs**: 16 (" in md and "2 diverged" in md and "1 running" in md
    assert "incomplete" not in md  # the sweep has ended (one run of it left RUNNING is counted above)
    html = (out / "report.html").read_text()
    figures = re.findall(r"<img alt='[^']*' src='([^']*)'>", html)  # curves, forest, heatmap, LR sensitivity: the files beside it
    assert len(figures) == 4 and all((out / f).stat().st_size > 1000 for f in figures) and "<table" in html
    assert "base64" not in html and "mnist_forest.png" in figures
    artifacts = [a.path for a in client.list_artifacts(parent, "report")]
    assert "report/report.md" in artifacts and "report/mnist_heatmap.png" in artifacts
    logged = Path(client.download_artifacts(parent, "report/report.html", str(tmp))).read_text()  # MLflow's copy: one file
    assert logged.count("data:image/png;base64,") == 4
    for f in figures:
        embedded = base64.b64encode((out / f).read_bytes()).decode()
        assert f"src='data:image/png;base64,{embedded}'" in logged
    note = client.get_run(parent).data.tags["mlflow.note.content"]  # the parent's description in the MLflow UI
    assert note.startswith("**mnist**: best is optimizer=adam")
    assert f"(#/experiments/{exp}/runs/{parent}/artifacts)" in note and "report/report.html" in note


def test_a_report_on_a_slice_of_the_store(store, capsys):
    uri, client, exp, parent, tmp = store
    out = tmp / "slice"
    assert main(["study", "--tracking-uri", uri, "--out", str(out), "--where", "optimizer.lr=0.10"]) == 0  # 0.10 matches 0.1
    summary = pd.read_csv(out / "summary.csv")
    assert sorted(summary["optimizer"]) == ["adam", "sgd"] and "optimizer.lr" not in summary  # lr 0.1 only: not a factor
    md = (out / "report.md").read_text()
    assert "best is optimizer=sgd" in md and "- **slice**: only the runs with optimizer.lr=0.10" in md
    assert "report/report.md" not in [
        a.path for a in client.list_artifacts(parent, "report")
    ]  # a slice is not the study's report
    # another slice into the same folder replaces the first only when asked (it was made from other runs)
    assert (
        main(["study", "--tracking-uri", uri, "--out", str(out), "--where", "optimizer=adam", "--where", "optimizer.lr=0.01"])
        == 2
    )
    assert (
        main(
            [
                "study",
                "--tracking-uri",
                uri,
                "--out",
                str(out),
                "--where",
                "optimizer=adam",
                "--where",
                "optimizer.lr=0.01",
                "--force",
            ]
        )
        == 0
    )
    assert len(pd.read_csv(out / "summary.csv")) == 1
    capsys.readouterr()
    assert main(["study", "--tracking-uri", uri, "--where", "optimizer.momentum=0.9"]) == 2
    assert "error: --where optimizer.momentum=0.9: no run logged optimizer.momentum; its runs log:" in capsys.readouterr().err
    assert main(["study", "--tracking-uri", uri, "--where", "optimizer.lr=3"]) == 2
    assert "error: --where optimizer.lr=3: no run has that value; values logged: 0.01, 0.1, 1.0" in capsys.readouterr().err
    assert main(["study", "--tracking-uri", uri, "--where", "optimizer.lr"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_the_link_to_the_runs_opens_the_runs_table():
    from harness.tracking.uris import runs_link

    assert runs_link("http://host:5000/", "7") == "http://host:5000/#/experiments/7/runs?workflowType=machine_learning"
    assert runs_link("sqlite:///mlflow.db", "7").startswith("mlflow ui --backend-store-uri sqlite:///mlflow.db")


def test_unknown_and_empty_experiments_are_one_clear_line(store, capsys):
    uri, client, exp, parent, tmp = store
    assert main(["nope", "--tracking-uri", uri, "--out", str(tmp / "x")]) == 2
    assert "error: no experiment 'nope'" in capsys.readouterr().err
    client.create_experiment("empty")
    assert main(["empty", "--tracking-uri", uri, "--out", str(tmp / "y")]) == 2
    assert "error: experiment 'empty' has no runs yet" in capsys.readouterr().err
    assert main(["study", "--tracking-uri", uri, "--target", "mnist=high"]) == 2


def test_single_seed_reports_no_spread(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("one")
    add_run(client, exp, "regression", "sgd", "0.1", 0, 0.30, metric="test/mse", mode="min")
    add_run(client, exp, "regression", "adam", "0.1", 0, 0.20, metric="test/mse", mode="min")
    assert main(["one", "--tracking-uri", uri, "--out", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert "best is optimizer=adam with test/mse 0.2000 from a single seed" in md
    assert "runner-up optimizer=sgd at 0.3000 (lower is better)." in md and "Worst" not in md  # two: the runner-up is the worst
    assert "n/a" in md


def test_several_tasks_get_performance_profiles(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("multi")
    for task, metric, mode, values in (
        ("mnist", "test/accuracy", "max", (0.9, 0.95)),
        ("regression", "test/mse", "min", (0.3, 0.2)),
    ):
        for opt, v in zip(("sgd", "adam"), values):
            for seed in (0, 1):
                add_run(client, exp, task, opt, "0.1", seed, v + 0.001 * seed, metric=metric, mode=mode)
    assert main(["multi", "--tracking-uri", uri, "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "performance_profiles.png").stat().st_size > 1000
    from harness.report.aggregate import performance_profile, rank
    from harness.report.load import factors, histories, load_runs

    runs, _ = load_runs(client, "multi")
    table = rank(runs, histories(client, runs, ["epoch_seconds"]), factors(runs), {})
    profile = performance_profile(table, factors(runs), [1.0, 1.1, 2.0])
    assert profile.loc[1.0, "optimizer=adam"] == 1.0 and profile.loc[1.0, "optimizer=sgd"] == 0.0
    assert profile.loc[2.0, "optimizer=sgd"] == 1.0  # sgd is within 2x of the best on both tasks


def test_gallery_plots_every_loss(tmp_path):
    assert main(["--gallery", "--out", str(tmp_path)]) == 0
    for name in ("regression_losses.png", "classification_losses.png"):
        assert (tmp_path / name).stat().st_size > 10000


@pytest.mark.slow
def test_report_of_a_real_sweep(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sweep = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "--multirun",
            "experiment=imbalanced_losses",
            "smoke=on",
            "hydra/launcher=basic",
            f"tracking.uri={uri}",
            "progress=false",
            "seed=0,1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.report",
            "imbalanced_losses_smoke",
            "--tracking-uri",
            uri,
            "--out",
            str(tmp_path / "rep"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    summary = pd.read_csv(tmp_path / "rep" / "summary.csv")
    assert len(summary) == 14 and set(summary["n"]) == {2}  # 7 losses x 2 ratios (one LR in smoke mode), 2 seeds each
    assert (tmp_path / "rep" / "tuned.csv").exists()  # the study declares what it compares: a tuned report
    assert (tmp_path / "rep" / "imbalanced_heatmap.png").exists()
    import torch

    from harness.engine.device import device_name

    # the header names where the runs trained (the device and its model, from each run's tags)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert f"- **devices**: cpu ({device_name(torch.device('cpu'))})" in md
    # a choice's name explains itself: its class and knobs, in a table of the names
    named = [line for line in md.splitlines() if "| focal_g5 " in line and "## What the names mean" in md]
    assert len(named) == 1 and "FocalLoss" in named[0] and "gamma=5.0" in named[0], md


def test_seeds_per_configuration_reads_as_counts_not_seed_ids():
    from harness.report.render import seed_counts

    # a study selects on 5 seeds (0-4) and confirms on up to 20 more: '5-25' read like the seed ids 5 to 25
    assert seed_counts(pd.Series([5, 25, 15, 5])) == "5 to 25"
    assert seed_counts(pd.Series([10, 10])) == "10"


def test_runs_on_several_devices_are_counted_and_flagged():
    from harness.report.render import devices

    runs = pd.DataFrame({"device": ["cpu", "cpu", "cuda:0", None], "device_name": ["Xeon", "Xeon", "NVIDIA H100", None]})
    assert devices(runs) == (
        "cpu (Xeon): 2 runs, cuda (NVIDIA H100): 1 run, unknown: 1 run; times are comparable only between runs on one device"
    )
    assert devices(runs.iloc[:2]) == "cpu (Xeon)"
    older = pd.DataFrame({"device": ["cpu", "cpu"], "device_name": ["Xeon", None]})  # a run logged before device_name existed
    assert devices(older) == (
        "cpu (Xeon): 1 run, cpu (model not recorded): 1 run; times are comparable only between runs on one device"
    )


def test_a_method_keeps_its_colour_and_marker_across_figures():
    from harness.report import figures

    figures.reset_styles()
    first = figures.style("loss=mse")
    figures.style("loss=mae")
    assert figures.style("loss=mse") == first and figures.style("loss=mae") != first
    figures.reset_styles()
    assert figures.style("loss=mae") == first  # a new report starts afresh


def test_columns_the_same_in_every_row_move_to_the_caption():
    from harness.report.render import constant_columns

    show = pd.DataFrame({"method": ["a", "b"], "n": [5, 5], "grid": [4, 6], "at grid edge": ["", ""]})
    table, phrases = constant_columns(show, {"n": "seeds per method", "grid": "settings"}, ("at grid edge",))
    assert list(table.columns) == ["method", "grid"] and phrases == ["5 seeds per method"]


def test_a_store_spanning_the_params_change_gives_the_same_factors():
    from harness.report.load import factors

    old = {
        "task": "regression",
        "loss": "mse",
        "optimizer": "adam",
        "schedule": "constant",
        "param:loss._target_": "torch.nn.MSELoss",
        "param:optimizer.lr": "0.01",
    }
    new = {
        "task": "regression",
        "loss": "mae",
        "optimizer": "adam",
        "schedule": "constant",
        "param:loss": "mae",
        "param:optimizer.lr": "0.001",
    }
    runs = pd.DataFrame([old, new])
    assert factors(runs) == ["loss", "param:optimizer.lr"]
    # a knob the harness gained between a selection and its confirmation: absent from the older runs, one value
    # in the newer ones; no factor (it would split each setting in two), while a knob at two values stays one
    gained = pd.DataFrame([old, new | {"param:task.init": "torch"}])
    assert factors(gained) == ["loss", "param:optimizer.lr"]
    two = pd.DataFrame([old | {"param:task.init": "keras"}, new | {"param:task.init": "torch"}])
    assert factors(two) == ["loss", "param:optimizer.lr", "param:task.init"]


def test_the_heatmap_colours_span_the_better_half_so_good_cells_differ():
    import numpy as np

    from harness.report.views import color_range

    cells = np.array([0.10, 0.11, 0.95, 0.96, 0.97, 0.975])  # two collapsed cells, four good ones
    assert color_range(cells, "max") == (0.955, 0.975)
    assert color_range(cells, "min") == (0.10, 0.955)
    assert color_range(np.array([0.5, 0.6]), "max") == (None, None)  # too few cells: the matplotlib default


def test_a_heatmap_of_two_or_three_cells_draws_on_the_default_scale(tmp_path):
    """A study whose grid leaves few (rows, cols) cells (a tuned knob only one method has: mse's cells say '-')
    drew nothing and crashed the whole report with a TypeError (None against a float)."""
    from harness.report.views import heatmap

    table = pd.DataFrame(
        {"task": "regression", "mode": "min", "metric": "test/mse", "mean": [0.4, 0.3, 0.5]}
        | {"loss": ["mse", "huber", "huber"], "loss.delta": ["-", 0.3, 3.0]}
    )
    assert heatmap(table, "loss", "param:loss.delta", "regression", tmp_path / "h.png").endswith("h.png")
    assert (tmp_path / "h.png").stat().st_size > 0


def test_the_parallel_coordinates_take_a_knob_that_only_some_runs_have(tmp_path):
    """mse's runs have no loss.delta (the store's params come back as strings, missing where a run lacks the
    key): the axis names the missing value '-' instead of failing to sort a float among strings."""
    from harness.report.views import parallel_coordinates

    runs = pd.DataFrame(
        {"outcome": "finished", "final:test/mse": [0.4, 0.3, 0.5], "loss": ["mse", "huber", "huber"]}
        | {"param:loss.delta": pd.Series([None, "0.3", "3.0"], dtype="string")}
    )
    axes = ["loss", "param:loss.delta"]
    assert parallel_coordinates(runs, axes, "test/mse", "min", "regression", tmp_path / "p.png").endswith("p.png")


def test_curves_of_different_losses_plot_a_shared_metric_not_their_loss_values():
    from harness.report.figures import training_key

    hist = pd.DataFrame({"run_id": ["a", "a", "b", "b"], "key": ["train/loss", "train/mse"] * 2, "step": 1, "value": 1.0})
    groups = {"loss=mse": ["a"], "loss=mae": ["b"]}
    assert training_key(hist, groups, "test/mse", {"a": "mse", "b": "mae"}) == "train/mse"
    assert training_key(hist, groups, "test/mse", {"a": "mse", "b": "mse"}) == "train/loss"  # one loss: its values compare
    assert (
        training_key(hist[hist.key == "train/loss"], groups, "test/mse", {"a": "mse", "b": "mae"}) == "train/loss"
    )  # not logged


def test_the_report_publishes_its_per_run_data(store):
    """runs.csv: one row per run the report read (the sweep's parent is not one), with its config and final
    metrics, so that the report can be recomputed without the store."""
    uri, client, exp, parent, tmp = store
    out = tmp / "report"
    assert main(["study", "--tracking-uri", uri, "--out", str(out), "--no-log"]) == 0
    data = pd.read_csv(out / "runs.csv")
    children = [r for r in client.search_runs([exp]) if r.info.run_id != parent]
    assert sorted(data["run_id"]) == sorted(r.info.run_id for r in children)
    for r in children:
        row = data[data["run_id"] == r.info.run_id].iloc[0]
        for key, value in r.data.metrics.items():
            assert row[f"final:{key}"] == pytest.approx(value, nan_ok=True), key
        assert str(row["param:seed"]) == r.data.params["seed"]
    assert "runs.csv" in (out / ".harness-report.json").read_text()


def test_collapsed_configurations_are_named_by_the_metric_that_shows_it():
    from harness.report.findings import collapses

    runs = pd.DataFrame(
        {
            "task": ["mnist"] * 4 + ["imbalanced"] * 4,
            "outcome": ["finished"] * 8,
            "optimizer": ["sgd", "sgd", "adam", "adam"] * 2,
            "final:test/accuracy": [0.10, 0.115, 0.97, 0.98, 0.99, 0.99, 0.99, 0.99],
            "final:test/minority_recall": [None] * 4 + [0.0, 0.0, 0.0, 0.5],
            "param:task.num_classes": [None] * 4 + [2] * 4,
        }
    )
    notes = collapses(runs, ["task", "optimizer"])
    assert any(
        "**mnist**: 1 of 2 configurations stay at chance (test accuracy within 0.02 of 1/10" in n and "optimizer=sgd" in n
        for n in notes
    ), notes
    assert any(
        "**imbalanced**: 1 of 2 configurations never predict the minority class" in n and "optimizer=sgd" in n for n in notes
    ), notes
    assert not any("adam" in n for n in notes), notes  # one seed of adam on imbalanced still recalls the minority class


def test_a_knob_only_some_methods_have_is_left_out_of_their_names():
    """Adam's epsilon beside SGD: a diverged or collapsed SGD configuration is named without optimizer.eps=nan."""
    from harness.report.findings import collapses, findings

    runs = pd.DataFrame(
        {
            "task": ["mnist"] * 4,
            "outcome": ["diverged", "finished", "finished", "finished"],
            "optimizer": ["sgd", "sgd", "adam", "adam"],
            "optimizer.lr": [1.0, 0.1, 0.1, 0.001],
            "optimizer.eps": [None, None, 1e-6, 1e-6],
            "primary_metric": ["test/accuracy"] * 4,
            "final:test/accuracy": [None, 0.11, 0.10, 0.98],
        }
    )
    cols = ["task", "optimizer", "optimizer.lr", "optimizer.eps"]
    notes = findings(pd.DataFrame(columns=["problem", "mean"]), runs, cols) + collapses(runs, cols)
    assert any("1 run(s) diverged" in n and "optimizer=sgd, optimizer.lr=1.0 (1)" in n for n in notes), notes
    chance = [n for n in notes if "stay at chance" in n]
    assert len(chance) == 1 and "optimizer=sgd, optimizer.lr=0.1." in chance[0], notes
    assert "optimizer=adam, optimizer.lr=0.1, optimizer.eps=1e-06;" in chance[0], notes
    assert not any("nan" in n for n in notes), notes


def test_a_failed_run_that_a_resumed_sweep_reran_says_so():
    from harness.report.findings import findings

    runs = pd.DataFrame(
        {
            "task": ["mnist"] * 5,
            "outcome": ["failed", "finished", "killed", "failed", "finished"],
            "optimizer": ["sgd", "sgd", "adam", "adam", "adam"],
            "seed": ["0", "0", "1", "2", "2"],
            "primary_metric": ["test/accuracy"] * 5,
            "final:test/accuracy": [None, 0.9, None, None, 0.95],
        }
    )
    notes = findings(pd.DataFrame(columns=["problem", "mean"]), runs, ["task", "optimizer"])
    assert "2 run(s) failed; each rerun and finished (same configuration and seed)." in notes, notes
    assert "1 run(s) were killed." in notes, notes  # adam at seed 1 has no finished run


def test_a_report_of_a_sweep_still_under_way_says_it_is_provisional_first(store, capsys):
    uri, client, exp, parent, tmp = store
    client.update_run(parent, status="RUNNING", name="sweep: optimizer x optimizer.lr (40 jobs)")
    out = tmp / "report"
    assert main(["study", "--tracking-uri", uri, "--out", str(out), "--no-log"]) == 0
    first = (out / "report.md").read_text().split("\n")[2]
    assert first.startswith("- **incomplete**: sweep(s) ") and "(16 runs so far, of 40 jobs) still open" in first, first
    assert "provisional; rerun the report when they have ended" in first
    # without --no-log: written, but not logged to the open sweep's run (its provisional verdicts would sit there)
    assert main(["study", "--tracking-uri", uri, "--out", str(tmp / "logged")]) == 0
    assert "not logged to sweep run" in capsys.readouterr().out
    assert client.list_artifacts(parent) == [] and "mlflow.note.content" not in client.get_run(parent).data.tags
    assert (tmp / "logged" / "report.md").read_text().split("\n")[2] == first
    # the job count comes from the parent's jobs tag: a user may rename the run in MLflow's UI
    client.update_run(parent, name="my sweep")
    client.set_tag(parent, "jobs", "40")
    assert main(["study", "--tracking-uri", uri, "--out", str(tmp / "renamed"), "--no-log"]) == 0
    assert (tmp / "renamed" / "report.md").read_text().split("\n")[2] == first
