"""The evidence protocol: selection on validation, bootstrap intervals, tests, Holm, pairing by seed,
the declaration's trip through MLflow, and the figures it makes."""

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from scipy import stats as sps

from harness.report import ReportError, protocol, stats
from harness.report.__main__ import main
from tests.conftest import ROOT


def add(client, exp, method, lr, seed, val, test, task="mnist", metric="accuracy", mode="max", extra=None):
    tags = {
        "task": task,
        "loss": "ce",
        "optimizer": method,
        "schedule": "constant",
        "seed": str(seed),
        "outcome": "finished",
        "primary_metric": f"test/{metric}",
        "primary_mode": mode,
        "train_seconds": "1",
    }
    parents = client.search_runs([exp], "tags.`harness.role` = 'sweep'", order_by=["attributes.start_time DESC"], max_results=1)
    if parents:  # a job of the experiment's (newest) sweep, as a sweep's runs are
        tags["mlflow.parentRunId"] = parents[0].info.run_id
    rid = client.create_run(exp, run_name=f"{method},{lr},{seed}", tags=tags).info.run_id
    params = {"seed": str(seed), "optimizer.lr": str(lr), "optimizer._target_": method, "epochs": "2", **(extra or {})}
    metrics = [Metric(k, v * s / 2, 0, s) for s in (1, 2) for k, v in ((f"val/{metric}", val), (f"test/{metric}", test))]
    metrics += [Metric("train/loss", 1.0 / s, 0, s) for s in (1, 2)] + [Metric("epoch_seconds", 1.0, 0, s) for s in (1, 2)]
    client.log_batch(rid, metrics=metrics, params=[Param(k, v) for k, v in params.items()])
    client.set_terminated(rid, "FINISHED")


def declared_store(tmp_path, compare=("optimizer",), tune=("optimizer.lr",)):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("study")
    decl = protocol.Declaration(list(compare), list(tune))
    parent = client.create_run(exp, run_name="sweep", tags={"harness.role": "sweep", **decl.tags()}).info.run_id
    client.set_terminated(parent, "FINISHED")
    return uri, client, exp


def test_the_setting_is_selected_on_validation_not_on_test(tmp_path):
    uri, client, exp = declared_store(tmp_path)
    # adam: lr 0.01 is best on validation, lr 0.1 on test (a lucky test split). sgd: one clear best.
    for seed in range(3):
        add(client, exp, "adam", 0.01, seed, val=0.95, test=0.90 + 0.001 * seed)
        add(client, exp, "adam", 0.1, seed, val=0.93, test=0.97 + 0.001 * seed)
        add(client, exp, "sgd", 0.1, seed, val=0.92, test=0.92 + 0.002 * seed)
        add(client, exp, "sgd", 1.0, seed, val=0.50, test=0.50)
    out = tmp_path / "r"
    assert main(["study", "--tracking-uri", uri, "--out", str(out), "--no-log"]) == 0
    tuned = pd.read_csv(out / "tuned.csv")
    adam = tuned[tuned.method == "optimizer=adam"].iloc[0]
    assert adam["setting"] == "optimizer.lr=0.01" and adam["test_mean"] == pytest.approx(0.901)  # not the test-best 0.971
    sgd = tuned[tuned.method == "optimizer=sgd"].iloc[0]
    # the reference is chosen on validation too (adam), and sgd is shown better than it on test
    assert adam["rank"] == 1 and sgd["setting"] == "optimizer.lr=0.1" and sgd["rank"] == 2
    assert sgd["versus_reference"] == "better" and sgd["gain"] == pytest.approx(0.021)
    md = (out / "report.md").read_text()
    assert "compares optimizer; tunes optimizer.lr per method" in md
    assert "the reference (best on validation) is optimizer=adam (optimizer.lr=0.01, selected on validation)" in md
    assert "optimizer=sgd vs optimizer=adam: better than the reference" in md
    for name in ("mnist_forest.png", "mnist_curves.png", "mnist_tuning_budget.png"):
        assert (out / name).stat().st_size > 1000, name


def test_a_setting_with_a_diverged_seed_is_not_selected_while_a_clean_one_exists(tmp_path):
    uri, client, exp = declared_store(tmp_path)
    for seed in range(2):
        add(client, exp, "adam", 0.01, seed, val=0.90, test=0.90)
        add(client, exp, "adam", 0.1, seed, val=0.99, test=0.99)
    parent = client.search_runs([exp], "tags.`harness.role` = 'sweep'")[0].info.run_id
    rid = client.create_run(
        exp,
        tags={
            "task": "mnist",
            "loss": "ce",
            "optimizer": "adam",
            "schedule": "constant",
            "seed": "2",
            "outcome": "diverged",
            "primary_metric": "test/accuracy",
            "primary_mode": "max",
            "mlflow.parentRunId": parent,
        },
    ).info.run_id
    client.log_batch(
        rid, params=[Param("seed", "2"), Param("optimizer.lr", "0.1"), Param("optimizer._target_", "adam"), Param("epochs", "2")]
    )
    client.set_terminated(rid, "FINISHED")
    assert main(["study", "--tracking-uri", uri, "--out", str(tmp_path / "r"), "--no-log"]) == 0
    assert pd.read_csv(tmp_path / "r" / "tuned.csv").iloc[0]["setting"] == "optimizer.lr=0.01"


def add_failed(client, exp, lr, seed):
    """A selection run of adam at this lr and seed whose process died (FAILED, no metrics)."""
    parent = client.search_runs([exp], "tags.`harness.role` = 'sweep'")[0].info.run_id
    tags = {"task": "mnist", "loss": "ce", "optimizer": "adam", "schedule": "constant", "seed": str(seed)}
    tags |= {"outcome": "failed", "primary_metric": "test/accuracy", "primary_mode": "max", "mlflow.parentRunId": parent}
    rid = client.create_run(exp, tags=tags).info.run_id
    params = {"seed": str(seed), "optimizer.lr": str(lr), "optimizer._target_": "adam", "epochs": "2"}
    client.log_batch(rid, params=[Param(k, v) for k, v in params.items()])
    client.set_terminated(rid, "FAILED")


def test_a_failed_run_that_its_sweep_reran_to_the_end_does_not_bar_its_setting(tmp_path):
    """A session's end killed two jobs of the best setting; the resumed sweep reran them and they finished.
    That setting is still selected; one whose failed seed was never rerun is not (a clean one exists)."""
    uri, client, exp = declared_store(tmp_path)
    add_failed(client, exp, 0.1, 0)
    add_failed(client, exp, 0.1, 1)
    add_failed(client, exp, 0.3, 2)
    for seed in range(3):
        add(client, exp, "adam", 0.01, seed, val=0.90, test=0.90)
        add(client, exp, "adam", 0.1, seed, val=0.95, test=0.95)
        if seed < 2:
            add(client, exp, "adam", 0.3, seed, val=0.99, test=0.99)
    assert main(["study", "--tracking-uri", uri, "--out", str(tmp_path / "r"), "--no-log"]) == 0
    row = pd.read_csv(tmp_path / "r" / "tuned.csv").iloc[0]
    assert row["setting"] == "optimizer.lr=0.1" and row["n"] == 3
    assert "3 run(s) failed; 2 of them rerun and finished" in (tmp_path / "r" / "report.md").read_text()


def test_mean_intervals_are_students_t():
    x = [0.91, 0.93, 0.92, 0.95, 0.94]
    low, high = stats.mean_ci(x)
    half = sps.t.ppf(0.975, 4) * np.std(x, ddof=1) / math.sqrt(5)
    assert (low, high) == (pytest.approx(np.mean(x) - half), pytest.approx(np.mean(x) + half))
    assert stats.mean_ci([0.5]) == (pytest.approx(math.nan, nan_ok=True),) * 2
    assert stats.mean_ci([0.7, 0.7, 0.7]) == (pytest.approx(0.7), pytest.approx(0.7))


def test_p_values_match_scipy_and_bonferroni_multiplies_by_the_family():
    from harness.report.contrast import contrast

    a = {0: 0.91, 1: 0.93, 2: 0.92, 3: 0.95, 4: 0.94}
    b = {0: 0.90, 1: 0.915, 2: 0.918, 3: 0.93, 4: 0.936}
    d = contrast(a, b, "max")
    assert d.test == "paired t-test by seed"
    assert d.p == pytest.approx(sps.ttest_rel(list(a.values()), list(b.values())).pvalue)
    assert d.gain == pytest.approx(np.mean([a[s] - b[s] for s in a]))
    assert contrast(a, b, "max", family=3).p == pytest.approx(min(1.0, 3 * d.p))
    assert contrast(a, b, "min").gain == pytest.approx(-d.gain)  # lower is better: the gain turns
    c = {10: 0.80, 11: 0.85, 12: 0.83}  # other seeds: unpaired
    w = contrast(a, c, "max")
    assert w.test == "Welch's t-test"
    assert w.p == pytest.approx(sps.ttest_ind(list(a.values()), list(c.values()), equal_var=False).pvalue)


def test_the_paired_test_pairs_by_seed_not_by_position():
    from harness.report.contrast import contrast

    # seed effects dwarf the method effect; a is better by 0.01 on every seed
    base = {s: 0.5 + 0.1 * s for s in range(6)}
    a = {s: v + 0.01 for s, v in base.items()}
    b = dict(reversed(list(base.items())))  # the same seeds in another order
    d = contrast(a, b, "max")
    assert d.test == "exact sign-flip test by seed (a constant difference)" and d.gain == pytest.approx(0.01)
    assert d.p == pytest.approx(2 / 2**6) and (d.low, d.high) == (pytest.approx(0.01), pytest.approx(0.01))
    welch = sps.ttest_ind(list(a.values()), list(b.values()), equal_var=False).pvalue
    assert welch > 0.5  # unpaired, the seed spread hides the difference


@pytest.mark.parametrize("n", [3, 5, 8])
def test_a_constant_difference_gets_the_exact_tests_floor_not_zero(n):
    """A constant difference makes the t statistic infinite; n pairs can show no more than the exact
    sign-flip test's 2 / 2^n (0.0625 at n = 5), n per method no more than 2 / C(2n, n)."""
    from math import comb

    from harness.report.contrast import contrast

    d = contrast({s: 0.9 for s in range(n)}, {s: 0.8 for s in range(n)}, "max")
    assert d.p == pytest.approx(2 / 2**n) and d.test.startswith("exact sign-flip")
    assert contrast({s: 0.5 for s in range(n)}, {s: 0.5 for s in range(n)}, "max").p == 1.0
    unpaired = contrast({s: 0.9 for s in range(n)}, {s + 100: 0.8 for s in range(n)}, "max")
    assert unpaired.p == pytest.approx(2 / comb(2 * n, n)) and unpaired.test.startswith("exact permutation")
    noisy = contrast({s: 0.9 + 0.01 * (s % 2) for s in range(n)}, {s: 0.8 for s in range(n)}, "max")
    assert noisy.test == "paired t-test by seed"  # a spread: the t-test


def test_expected_best_of_k_trials():
    v = [0.1, 0.5, 0.9]
    e = stats.expected_best(v, "max")
    assert e[0] == pytest.approx(np.mean(v))  # one trial: the grid's mean
    assert e[1] == pytest.approx((0.1 * 1 + 0.5 * 3 + 0.9 * 5) / 9)  # max of two draws of three
    assert np.all(np.diff(e) >= 0) and e[-1] < 0.9
    assert stats.expected_best(v, "min")[1] == pytest.approx((0.9 * 1 + 0.5 * 3 + 0.1 * 5) / 9)


def test_five_problems_get_mean_ranks_and_a_critical_difference_diagram(tmp_path):
    uri, client, exp = declared_store(tmp_path, tune=())
    rng = np.random.default_rng(0)
    for ratio in range(5):  # five problems: a task at five imbalance ratios
        for method, level in (("adam", 0.9), ("sgd", 0.85), ("rmsprop", 0.8)):
            for seed in range(3):
                v = level + 0.01 * rng.random()
                add(client, exp, method, 0.01, seed, v, v, task="imbalanced", extra={"task.imbalance_ratio": str(ratio)})
    out = tmp_path / "r"
    assert main(["study", "--tracking-uri", uri, "--out", str(out), "--no-log"]) == 0
    assert (out / "critical_difference.png").stat().st_size > 1000
    assert (out / "performance_profiles.png").stat().st_size > 1000
    md = (out / "report.md").read_text()
    assert "Across 5 problems, mean rank (1 is best): optimizer=adam 1.00, optimizer=sgd 2.00, optimizer=rmsprop 3.00" in md
    assert "Friedman" in md or "friedman" in md


def test_a_bad_declaration_is_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for bad, message in (
        (["study.compare=[bogus]"], "study.compare names 'bogus'"),
        (["study.compare=[optimizer]", "study.tune=[optimizer]"], "both in compare and in tune"),
        (["study.compare=optimizer"], "study.compare must be a list"),
    ):
        r = subprocess.run(
            [sys.executable, "-m", "harness", "task=regression", "epochs=1", *bad],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (tmp_path / "mlflow.db").exists() or "RUNNING" not in r.stdout


def test_a_declared_knob_no_run_has_yet_names_the_sweep_that_would_set_it():
    runs = pd.DataFrame({"optimizer": ["adam", "sgd"], "param:optimizer.lr": ["0.1", "0.01"]})
    assert protocol.column(runs, "optimizer") == "optimizer" and protocol.column(runs, "optimizer.lr") == "param:optimizer.lr"
    with pytest.raises(
        ReportError,
        match=r"declares 'optimizer.eps', which none of its runs has .*optimizer.lr.*"
        r"if a sweep of its own sets it \(\+optimizer.eps=...\), that sweep has not run yet",
    ):
        protocol.column(runs, "optimizer.eps")


@pytest.mark.slow
def test_a_declared_sweep_round_trips_through_mlflow_and_a_one_factor_sweep_gets_its_forest_plot(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    common = [
        sys.executable,
        "-m",
        "harness",
        "--multirun",
        "task=regression",
        "epochs=2",
        "progress=false",
        f"tracking.uri={uri}",
    ]
    sweep = subprocess.run(
        common
        + [
            "tracking.experiment=declared",
            "loss=mse,mae",
            "optimizer.lr=0.003,0.03",
            "seed=0,1",
            "study.compare=[loss]",
            "study.tune=[optimizer.lr]",
            "study.margin=5%",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("declared").experiment_id
    parent = client.search_runs([exp], "tags.`harness.role` = 'sweep'")[0]
    assert json.loads(parent.data.tags["harness.compare"]) == ["loss"]
    assert json.loads(parent.data.tags["harness.tune"]) == ["optimizer.lr"]
    assert main(["declared", "--tracking-uri", uri, "--out", str(tmp_path / "d"), "--no-log"]) == 0
    tuned = pd.read_csv(tmp_path / "d" / "tuned.csv")
    assert sorted(tuned["method"]) == ["loss=mae", "loss=mse"] and set(tuned["grid"]) == {2} and set(tuned["n"]) == {2}
    # the declaration, logged on the parent before the runs with its hash, is the report's first line
    declared = json.loads(parent.data.tags["harness.declaration"])
    assert declared["margin"] == "5%" and declared["seeds"] == "0,1" and declared["epochs"] == "2"
    assert declared["space"]["loss"] == "mse,mae" and declared["space"]["optimizer.lr"] == "0.003,0.03"
    md = (tmp_path / "d" / "report.md").read_text().splitlines()
    first = [line for line in md if line.startswith("- **")][0]
    assert first.startswith("- **declared**: at the sweep's start, before its runs (declaration ")
    assert parent.data.tags["harness.declaration_hash"] in first and "margin 5% (declared by the sweep" in first
    assert (tmp_path / "d" / "runs.csv").exists()
    # a plain one-factor sweep (no declaration: a parent without it), built in the store directly
    plain = client.create_experiment("plain")
    client.set_terminated(client.create_run(plain, run_name="sweep", tags={"harness.role": "sweep"}).info.run_id, "FINISHED")
    for seed in range(3):
        add(client, plain, "adam", 0.01, seed, val=0.9, test=0.90 + 0.01 * seed, task="regression", metric="mse", mode="min")
        add(client, plain, "sgd", 0.01, seed, val=0.8, test=0.80 + 0.01 * seed, task="regression", metric="mse", mode="min")
    assert main(["plain", "--tracking-uri", uri, "--out", str(tmp_path / "p"), "--no-log"]) == 0
    assert (tmp_path / "p" / "regression_forest.png").stat().st_size > 1000
    md = (tmp_path / "p" / "report.md").read_text()
    assert "Flat ranking: regression" in md and "selection on the test set" in md


def test_the_declaration_states_every_sweeps_seeds_and_the_selection_space_without_bookkeeping():
    """A study of two selection sweeps (split by optimizer) and two confirmation rounds: the report's first line
    names the first sweep's declaration, the seeds of every stage (not only the newest round's), and each
    selection sweep's space without the knobs that change no result (data_dir, threads, the store)."""
    from harness.report.declaration import Declaration

    def sweep(run_id: str, stage: str, seeds: str, optimizers: str) -> Declaration:
        space = {
            "optimizer": optimizers,
            "optimizer.lr": "0.001,0.01",
            "seed": seeds,
            "data_dir": "/data",
            "threads": "1",
            "tracking.uri": "sqlite:///x.db",
            "hydra/launcher": "joblib",
            "study.stage": stage,
        }
        declared = {"compare": ["optimizer"], "tune": ["optimizer.lr"], "margin": 0.005, "space": space,
                    "seeds": seeds, "stage": stage, "rounds": 2, "epochs": "10"}  # fmt: skip
        tags = {
            "harness.compare": json.dumps(["optimizer"]),
            "harness.tune": json.dumps(["optimizer.lr"]),
            "harness.margin": "0.005",
            "harness.declaration": json.dumps(declared),
            "harness.declaration_hash": f"hash-{run_id}",
        }
        decl = Declaration.from_tags(tags, run_id)
        assert decl is not None
        return decl

    sweeps = [
        sweep("a", "select", "0,1,2,3,4", "adam,sgd"),
        sweep("b", "select", "0,1,2,3,4", "muon"),
        sweep("c", "confirm", "5,6,7,8,9,10,11,12,13,14", "adam,sgd,muon"),
        sweep("d", "confirm", "15,16,17,18,19,20,21,22,23,24", "adam,sgd,muon"),
    ]
    text = sweeps[-1].declared_text(["test/accuracy"], sweeps)
    assert "(declaration hash-a on parent run a, the first of the study's 4 sweeps)" in text
    assert "seeds 0-4 (selection), 5-14 (confirmation), 15-24 (confirmation)" in text
    assert "in 2 selection sweeps: (1) optimizer=adam,sgd, optimizer.lr=0.001,0.01; (2) optimizer=muon" in text
    space = text.split("search space ", 1)[1].split("; then", 1)[0]
    assert not any(k in space for k in ("data_dir", "threads", "tracking.uri", "hydra/launcher", "study.stage", "seed"))
    assert text.endswith("then the selected settings on fresh seeds (study.stage=confirm), at most 2 round(s)")
    # one sweep alone: its own seeds and space, no count of sweeps
    alone = sweeps[0].declared_text(["test/accuracy"])
    assert "seeds 0-4 (selection);" in alone and "first of" not in alone and "search space optimizer=adam,sgd, " in alone


def test_claims_come_from_the_reports_and_the_map(tmp_path):
    from harness.report import claims

    uri, client, exp = declared_store(tmp_path, compare=("optimizer",), tune=("optimizer.lr",))
    for seed in range(5):
        for ratio, gap in (("10", 0.05), ("100", 0.0)):
            extra = {"task.imbalance_ratio": ratio}
            add(client, exp, "adam", 0.01, seed, 0.9, 0.9 + 0.01 * seed + gap, task="imbalanced", extra=extra)
            add(client, exp, "sgd", 0.01, seed, 0.9, 0.9 + 0.01 * seed + 0.0001 * (seed % 2), task="imbalanced", extra=extra)
    reports = tmp_path / "reports"
    assert main(["study", "--tracking-uri", uri, "--out", str(reports / "study"), "--no-log"]) == 0
    shutil.copytree(reports / "study", reports / "copy_study")  # a second study's report, for C1
    (reports / "claims.yaml").write_text(
        # C1's primary contrast is in another study than the claim's own, whose check (no study of its own) reads it
        "C1:\n  claim: adam beats sgd at 1:10, checked at 1:100\n  study: study\n"
        "  primary: {a: optimizer=adam, b: optimizer=sgd, where: imbalance_ratio=10, rule: better, study: copy_study}\n"
        "  checks:\n    - {a: optimizer=sgd, b: optimizer=adam, where: imbalance_ratio=100, rule: not_worse}\n"
        "C7:\n  claim: adam beats sgd at 1:10\n  study: study\n  declared: 2000-01-01\n"
        "  primary: {a: optimizer=adam, b: optimizer=sgd, where: imbalance_ratio=10, rule: better, margin: 0.01}\n"
        "C8:\n  claim: sgd beats adam at 1:100\n  study: study\n"
        "  primary: {a: optimizer=sgd, b: optimizer=adam, where: imbalance_ratio=100, rule: better, margin: 0.01}\n"
        "C17:\n  claim: sgd beats adam at 1:100, no margin\n  study: study\n"
        "  primary: {a: optimizer=sgd, b: optimizer=adam, where: imbalance_ratio=100, rule: better}\n"
        "C9:\n  claim: sgd is not worse at 1:10\n  study: study\n"
        "  primary: {a: optimizer=sgd, b: optimizer=adam, where: imbalance_ratio=10, rule: not_worse, margin: 0.01}\n"
        "  checks:\n    - {a: optimizer=sgd, b: optimizer=adam, where: imbalance_ratio=100, rule: equivalent}\n"
        "C10:\n  claim: adam's lr lies in [1e-3, 1e-1]\n  study: study\n"
        "  primary: {a: optimizer=adam, where: imbalance_ratio=10, rule: setting_in, knob: optimizer.lr, range: [0.001, 0.1]}\n"
        "C12:\n  claim: adam's lr lies in [1e-4, 1e-3]\n  study: study\n"
        "  primary: {a: optimizer=adam, where: imbalance_ratio=10, rule: setting_in, knob: optimizer.lr, range: [0.0001, 0.001]}\n"
        "C11:\n  claim: a study not run\n  study: nothing_here\n  primary: {a: x, b: y, where: z, rule: better}\n"
        "C13:\n  claim: adam reaches about 0.97\n  study: study\n"
        "  primary: {a: optimizer=adam, where: imbalance_ratio=10, rule: near, value: 0.97, tolerance: 0.05}\n"
        "C14:\n  claim: adam reaches about 0.5\n  study: study\n"
        "  primary: {a: optimizer=adam, where: imbalance_ratio=10, rule: near, value: 0.5, tolerance: 0.1}\n"
        "C15:\n  claim: adam reaches 0.95 +- 0.01\n  study: study\n"
        "  primary: {a: optimizer=adam, where: imbalance_ratio=10, rule: near, value: 0.95, tolerance: 0.01}\n"
        "C16:\n  claim: a contrast in a second study\n  study: study\n"
        "  primary: {a: optimizer=adam, b: optimizer=sgd, where: imbalance_ratio=10, rule: better, study: other_study}\n"
        # one claim on several workloads (here the same study under other labels): judge.overall decides it
        "C18:\n  claim: adam beats sgd everywhere\n  study: study\n"
        "  primary: {a: optimizer=adam, b: optimizer=sgd, where: imbalance_ratio=10, rule: better, margin: 0.01, workload: synth}\n"
        "  workloads:\n    - {study: study, workload: twin, real: true, a: optimizer=adam, b: optimizer=sgd,"
        " where: imbalance_ratio=100, rule: better, margin: 0.01}\n"
        "    - {study: other_study, workload: later, a: optimizer=adam, b: optimizer=sgd, where: x, rule: better}\n"
        "C19:\n  claim: adam beats sgd at 1:10 on two workloads\n  study: study\n"
        "  primary: {a: optimizer=adam, b: optimizer=sgd, where: imbalance_ratio=10, rule: better, margin: 0.01}\n"
        "  workloads:\n    - {study: study, workload: twin, a: optimizer=adam, b: optimizer=sgd,"
        " where: imbalance_ratio=10, rule: better, margin: 0.01}\n"
        "C6:\n  claim: judged on another metric, which only a confirmed study lists\n  study: study\n"
        "  primary: {a: optimizer=adam, b: optimizer=sgd, where: imbalance_ratio=10, rule: better, metric: test/x, mode: max}\n"
        "C20:\n  claim: adam beats sgd, once undecided\n  study: study\n"
        "  primary: {a: optimizer=adam, b: optimizer=sgd, where: imbalance_ratio=10, rule: better, margin: 0.01}\n"
        "  workloads:\n    - {study: study, workload: twin, a: optimizer=adam, b: optimizer=sgd, where: imbalance_ratio=100, rule: better}\n"
    )
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- claims:start -->\nold\n<!-- claims:end -->\nrest\n")
    assert claims.main(["--reports", str(reports), "--readme", str(readme)]) == 0
    table = (reports / "claims.md").read_text()
    row = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| C")}
    # C1 C7 C8 C9 C13 C14 C15 C17, C18 C19 C20 on two workloads each (C18's third has not run), C6 declared
    assert "across the table's 15 tested primary contrasts (Bonferroni: 99.67%;" in table
    assert "| supported " in row["C7"] and "better, gain 0.04996 [0.0498" in row["C7"]  # paired by seed: a tight interval
    assert "declared 2000-01-01, before its runs" in row["C7"] and "declared: no date" in row["C8"]
    assert "| contradicted " in row["C8"] and "equivalent, gain 4e-05" in row["C8"]  # within the margin: no gain that matters
    assert "| inconclusive " in row["C17"] and "undecided" in row["C17"]  # without a margin nothing can be shown equal
    assert "| contradicted " in row["C9"] and "secondary: " in row["C9"]
    assert "not run with the protocol yet" in row["C11"]
    assert "| supported " in row["C10"] and "selects optimizer.lr=0.01 on validation (inside" in row["C10"]
    assert "| contradicted " in row["C12"] and "(outside [0.0001, 0.001])" in row["C12"]
    assert "| supported " in row["C13"] and "reaches test/accuracy 0.97 [" in row["C13"]  # seeds give 0.95 .. 0.99
    assert "| contradicted " in row["C14"]
    assert "| inconclusive " in row["C15"]  # the interval straddles 0.96
    assert "not run with the protocol yet" in row["C16"] and "reports/other_study/ has no tuned.csv" in row["C16"]
    assert (
        "| contradicted " in row["C18"] and "synth: supported; twin (real data): contradicted; later: not run yet" in row["C18"]
    )
    assert "[twin] imbalanced, task.imbalance_ratio=100: " in row["C18"]
    assert (
        "| copy_study, study " in row["C1"] and "secondary: imbalanced, task.imbalance_ratio=100: optimizer=sgd vs" in row["C1"]
    )
    assert "| supported " in row["C19"] and "study: supported; twin: supported " in row["C19"]
    assert "| not run with the protocol yet " in row["C6"] and "study: awaits its rerun on fresh seeds" in row["C6"]
    assert "| inconclusive " in row["C20"] and "twin: inconclusive (not decided on every workload)" in row["C20"]
    text = readme.read_text()
    assert "old" not in text and "| C7 " in text and text.startswith("intro\n") and text.endswith("rest\n")


def test_workloads_decide_a_claim_by_one_written_rule():
    from harness.report.judge import overall

    assert overall([("supported", False), ("supported", True)]) == ("supported", "")
    assert overall([("supported", False), ("contradicted", True)]) == ("contradicted", "contradicted on real data")
    assert overall([("contradicted", False), ("supported", True)]) == ("inconclusive", "the workloads disagree")
    assert overall([("contradicted", False), ("contradicted", True)]) == ("contradicted", "")
    assert overall([("supported", True), ("inconclusive", False)]) == ("inconclusive", "not decided on every workload")
    assert overall([("inconclusive", False)]) == ("inconclusive", "")


def test_a_stacked_bundle_counts_its_wall_time_once():
    from harness.report.load import training_seconds

    runs = pd.DataFrame({"train_seconds": [10.0, 10.2, 9.9, 3.0, 4.0], "bundle": ["b1", "b1", "b1", None, None]})
    assert training_seconds(runs) == pytest.approx(10.2 + 3.0 + 4.0)
    assert training_seconds(runs.drop(columns=["bundle"])) == pytest.approx(37.1)


def test_two_tuned_studies_compare_side_by_side_paired_by_seed(tmp_path):
    import json as _json

    import pandas as pd

    from harness.report.compare import compare

    def tuned(setting, by_seed):
        values = list(by_seed.values())
        return pd.DataFrame(
            [
                {
                    "problem": "p",
                    "method": "optimizer=adam",
                    "metric": "test/accuracy",
                    "setting": setting,
                    "test_mean": sum(values) / len(values),
                    "ci95_low": min(values),
                    "ci95_high": max(values),
                    "test_by_seed": _json.dumps(by_seed),
                }
            ]
        )

    grid = tuned("optimizer.lr=0.001", {"0": 0.90, "1": 0.92, "2": 0.94})
    search = tuned("optimizer.lr=0.002", {"0": 0.91, "1": 0.93, "2": 0.95, "3": 0.99})  # seed 3 has no pair
    table = compare(grid, search, "grid", "search")
    assert "optimizer.lr=0.002" in table and "+0.0100 [+0.0100, +0.0100], n = 3" in table  # paired: every seed +0.01
    # the grid confirmed on fresh seeds (5-7) the search never ran: paired on the seeds both selected on (0-2)
    confirmed = tuned("optimizer.lr=0.001", {"5": 0.5, "6": 0.5, "7": 0.5})
    confirmed["selection_by_seed"] = _json.dumps({"0": 0.90, "1": 0.92, "2": 0.94})
    table = compare(confirmed, search, "grid", "search")
    assert "+0.0100 [+0.0100, +0.0100], n = 3 (on the seeds both selected on)" in table
    assert "n = 0" in compare(confirmed.drop(columns=["selection_by_seed"]), search, "grid", "search")  # nothing to pair


def test_a_tables_verdict_is_short_and_the_findings_keep_the_sentence():
    from harness.report.contrast import Contrast
    from harness.report.wording import verdict

    top, r = pd.Series({"method": "optimizer=adam", "rank": 1, "n": 5}), pd.Series({"method": "optimizer=sgd", "rank": 2, "n": 5})
    test = "paired t-test by seed"
    worse = Contrast(-0.01, -0.016, -0.004, -0.015, -0.005, 0.004, 0.9, 0.8, test, 5, 2, 0.005, 12.0, "worse")
    same = Contrast(0.001, -0.004, 0.006, -0.003, 0.005, 0.6, 0.01, 0.001, test, 5, 2, 0.01, 9.0, "equivalent")
    open_ = Contrast(0.001, -0.02, 0.022, -0.015, 0.017, 0.8, 0.3, 0.04, test, 5, 2, 0.01, 37.0, "undecided")
    assert verdict(top, r, worse) == (
        "optimizer=sgd vs optimizer=adam: worse than the reference: gain -0.01 [-0.016, -0.004] "
        "(97.5%, Bonferroni over 2; p = 0.004; n = 5, paired t-test by seed)"
    )
    assert verdict(top, r, worse, short=True).startswith("worse than the reference: gain -0.01 [-0.016, -0.004] (97.5%")
    assert verdict(top, r, same, short=True).startswith(
        "equivalent to the reference within +-0.01: gain 0.001, bounds [-0.003, 0.005]"
    )
    short = verdict(top, r, open_, short=True)
    assert short.startswith("not told apart from the reference at n = 5") and "undecided, not equal" in short
    assert "about 37 seeds to detect a gain of the margin's size (+-0.01) at 80% power" in short
    assert verdict(top, top, None) == "reference (best on validation)"


def test_compare_pairs_two_studies_by_seed_with_the_reports_interval(tmp_path):
    from harness.report.compare import main, paired_difference
    from harness.report.stats import mean_ci

    grid, search = {"0": 0.90, "1": 0.92, "2": 0.91}, {"0": 0.93, "1": 0.92, "2": 0.95, "3": 0.5}  # seed 3: grid lacks it
    diff, low, high, n = paired_difference(grid, search)
    assert n == 3 and diff == pytest.approx((0.03 + 0.0 + 0.04) / 3)
    assert (low, high) == mean_ci([search[s] - grid[s] for s in ("0", "1", "2")])
    for name, scores in (("grid", grid), ("search", search)):
        (tmp_path / name).mkdir()
        pd.DataFrame(
            [
                {
                    "problem": "mnist",
                    "method": "optimizer=adam",
                    "setting": "optimizer.lr=0.001",
                    "metric": "test/accuracy",
                    "test_mean": 0.9,
                    "ci95_low": 0.89,
                    "ci95_high": 0.91,
                    "test_by_seed": json.dumps(scores),
                }
            ]
        ).to_csv(tmp_path / name / "tuned.csv", index=False)
    assert main([str(tmp_path / "grid"), str(tmp_path / "search"), "--out", str(tmp_path / "c.md")]) == 0
    assert f"{diff:+.4f} [{low:+.4f}, {high:+.4f}], n = 3" in (tmp_path / "c.md").read_text()


def test_runs_trained_on_corrupted_targets_show_no_train_test_gap():
    """regression_outliers at 5% outliers: the training MSE is on the corrupted targets (~17 against a
    clean test MSE of 0.05), so a gap column would read as overfitting; it is left out, and said why."""
    import pandas as pd

    from harness.report.protocol import Declaration, corrupted_training
    from harness.report.render import tuned_sections

    assert corrupted_training(pd.DataFrame({"param:task.outlier_fraction": ["0.05", "0.05"]}))
    assert corrupted_training(pd.DataFrame({"param:task.label_noise": ["0.2"]}))
    assert not corrupted_training(pd.DataFrame({"param:task.outlier_fraction": ["0.0"], "param:task.label_noise": ["0.0"]}))
    assert not corrupted_training(pd.DataFrame({"param:optimizer.lr": ["0.1"]}))

    def selected(train, corrupted):
        return pd.DataFrame(
            {
                "problem": ["p"],
                "rank": [1],
                "method": ["loss=mae"],
                "setting": ["lr=0.01"],
                "val_mean": [0.05],
                "test_mean": [0.05],
                "ci95_low": [0.04],
                "ci95_high": [0.06],
                "n": [5],
                "grid": [5],
                "train_mean": [train],
                "gap": [train - 0.05],
                "metric": ["test/mse"],
                "verdict": ["best"],
                "at_edge": [""],
                "train_corrupted": [corrupted],
            }
        )

    decl = Declaration(["loss"], ["optimizer.lr"])
    caption, table = tuned_sections(selected(float("nan"), True), decl, 0.02)["Tuned comparison: p"]
    assert "train - test gap" not in table.columns and "trained on corrupted targets" in caption
    caption, table = tuned_sections(selected(0.04, False), decl, 0.02)["Tuned comparison: p"]
    assert "train - test gap" in table.columns and "corrupted" not in caption


def test_the_rules_map_every_verdict_and_a_gap_share_is_judged_per_seed():
    from harness.report import judge

    for rule in judge.PAIR_RULES:
        assert set(judge.RULES[rule]) == {"better", "worse", "equivalent", "non-inferior", "undecided"}, rule
    seeds = range(5)
    rows = [
        {
            "problem": "p",
            "method": m,
            "metric": "test/mse",
            "mode": "min",
            "test_mean": mean,
            "n": 5,
            "setting": "",
            "test_by_seed": {s: mean + 0.01 * s + 0.004 * ((s * i) % 3) for s in seeds},
        }
        for i, (m, mean) in enumerate((("mse", 3.0), ("mae", 2.0), ("huber", 2.1), ("half", 2.5)))
    ]
    tuned = pd.DataFrame(rows)
    closes = judge.check(tuned, {"a": "huber", "b": "mse", "c": "mae", "where": "p", "rule": "gap_share", "fraction": 0.5})
    assert closes["verdict"] == "supported" and closes["closed"] == pytest.approx(0.9, abs=0.01)
    short = judge.check(tuned, {"a": "half", "b": "mse", "c": "mae", "where": "p", "rule": "gap_share", "fraction": 0.8})
    assert short["verdict"] == "contradicted"  # it closes half the gap, not 80% of it
    with pytest.raises(ReportError, match="unknown rule 'beats'"):
        judge.check(tuned, {"a": "huber", "b": "mse", "where": "p", "rule": "beats"})


def test_the_claims_evidence_shows_the_overrides_that_change_results_not_one_machines_paths():
    from harness.report.claims import shown_overrides

    line = (
        "experiment=x data_dir=/work/shared/data progress=false threads=1 tracking.uri=sqlite:////tmp/s/mlflow.db "
        "hydra/launcher=joblib hydra.launcher.n_jobs=2 study.stage=confirm seed=5,6 task.max_length=4 +optimizer.eps=1e-6 my.knob=1"
    )
    assert shown_overrides(line) == "experiment=x study.stage=confirm seed=5,6 task.max_length=4 +optimizer.eps=1e-6 my.knob=1"


def test_a_claims_check_where_names_every_part_it_needs():
    from harness.report.judge import matches

    problem = "task.jitter=4, task.max_length=6"
    assert matches(problem, "jitter=4") and matches(problem, "jitter=4, max_length=6")
    assert not matches(problem, "jitter=4, max_length=2") and not matches(problem, "jitter=0")
    assert not matches("task.outlier_fraction=0.05", "outlier_fraction=0.0")  # whole values, not prefixes


def test_a_selection_at_the_grid_edge_is_flagged_unless_the_grid_is_flat():
    def settings(vals):
        lrs = [0.001, 0.01, 0.1]
        return pd.DataFrame(
            {
                "problem": "p",
                "method": "m",
                "mode": "max",
                "metric": "test/accuracy",
                "task": "t",
                "n": 3,
                "clean": True,
                "val_mean": vals,
                "test_mean": vals,
                "train_mean": vals,
                "setting": [f"optimizer.lr={v}" for v in lrs],
                "param:optimizer.lr": lrs,
                "test_by_seed": [{0: v, 1: v, 2: v} for v in vals],
                "run_ids": [["r"]] * 3,
            }
        )

    assert protocol.select(settings([0.5, 0.7, 0.9]), 0.02)["at_edge"].iloc[0] == "optimizer.lr"  # best at the top
    assert protocol.select(settings([0.5, 0.9, 0.7]), 0.02)["at_edge"].iloc[0] == ""  # best inside
    assert protocol.select(settings([0.5, 0.5, 0.5]), 0.02)["at_edge"].iloc[0] == ""  # flat: the tie decides
    # Adam's epsilon swept by a second sweep beside runs at torch's default (not logged: "-"): 1e-6 is the
    # smallest value logged, not the grid's edge, since the default 1e-8 lies below it
    four = pd.concat([settings([0.5, 0.9, 0.7]), settings([0.6, 0.6, 0.6]).iloc[:1]], ignore_index=True)
    four["param:optimizer.lr"] = 0.01
    four["param:optimizer.eps"] = ["-", 1e-6, 1e-4, 1e-2]
    four["val_mean"] = [0.5, 0.9, 0.7, 0.6]
    assert protocol.select(four, 0.02)["at_edge"].iloc[0] == ""
    four["param:optimizer.eps"] = [1e-8, 1e-6, 1e-4, 1e-2]  # the same grid with the default logged: 1e-6 is inside
    assert protocol.select(four, 0.02)["at_edge"].iloc[0] == ""
    four["val_mean"] = [0.5, 0.6, 0.7, 0.9]
    assert protocol.select(four, 0.02)["at_edge"].iloc[0] == "optimizer.eps"


def test_an_undecided_claim_says_how_many_seeds_would_decide_it():
    from harness.report.contrast import contrast
    from harness.report.judge import effect

    a = {str(s): 0.90 + 0.02 * ((s * 7) % 5 - 2) / 2 for s in range(5)}
    b = {str(s): 0.90 + 0.02 * ((s * 3) % 5 - 2) / 2 for s in range(5)}
    d = contrast(a, b, "max", margin=0.005)
    base = {"rule": "better", "problem": "p", "a": "x", "b": "y", "metric": "test/accuracy", "margin": 0.005, "family": 1}
    assert d.verdict == "undecided"
    assert f"about {math.ceil(d.seeds_needed)} seeds would give 80% power at the margin" in effect(base | {"contrast": d})
    decided = contrast({k: v + 0.1 for k, v in a.items()}, b, "max", margin=0.005)
    assert decided.verdict == "better" and "seeds would give" not in effect(base | {"contrast": decided})
