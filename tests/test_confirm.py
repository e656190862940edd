"""Fresh seeds after selection (study.stage=confirm): a confirmation sweep reruns each method's selected
setting on new seeds, the verdicts read only those, in rounds up to a declared cap."""

import json
import math
import os
import subprocess
import sys

import pandas as pd
import pytest

from harness.report.__main__ import main as report
from harness.report.contrast import contrast
from harness.report.fresh import sequential, upto
from tests.conftest import ROOT, mlflow_runs
from tests.test_sweeps import split_runs, sweep

pytestmark = pytest.mark.slow
STUDY = (
    "task=regression",
    "task.n_train=200",
    "task.n_val=100",
    "task.n_test=100",
    "loss=mse,mae",
    "optimizer.lr=0.001,0.03",
    "epochs=2",
    "study.compare=[loss]",
    "study.tune=[optimizer.lr]",
    "study.margin=5%",
    "study.rounds=2",
    "tracking.experiment=confirm_study",
)


def config(seeds):
    """The config ``confirm.plan`` reads, for a confirmation sweep over ``seeds`` ("3,4,5") of STUDY's study."""
    from omegaconf import OmegaConf

    study = {"compare": ["loss"], "tune": ["optimizer.lr"], "rounds": 2}
    return OmegaConf.create(
        {"seed": 0, "study": study, "hydra": {"sweeper": {"params": {}}, "overrides": {"task": [f"seed={seeds}"]}}}
    )


def test_a_confirmation_reruns_only_the_selected_settings_on_fresh_seeds(tmp_path):
    first = sweep(*STUDY, "seed=0,1,2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    again = sweep(*STUDY, "seed=3,4,5", "study.stage=confirm", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "confirmation round 1 of at most 2: 2 selected setting(s) on fresh seeds 3, 4, 5" in again.stdout
    assert "6 finished" in again.stdout and "6 unselected" in again.stdout
    client, runs = mlflow_runs(tmp_path, "confirm_study")
    _, jobs = split_runs(runs)
    fresh = [r for r in jobs if r.data.tags.get("stage") == "confirm"]
    assert len(jobs) == 12 + 6 and len(fresh) == 6
    assert {r.data.tags["round"] for r in fresh} == {"1"} and {r.data.tags["seed"] for r in fresh} == {"3", "4", "5"}
    # each loss reruns one learning rate: the one its selection runs score best on validation
    for loss in ("mse", "mae"):
        chosen = [r for r in jobs if r.data.tags["loss"] == loss and r.data.tags.get("stage") != "confirm"]
        by_lr: dict[str, list[float]] = {}
        for r in chosen:
            by_lr.setdefault(r.data.params["optimizer.lr"], []).append(r.data.metrics["val/mse"])
        best = min(by_lr, key=lambda lr: sum(by_lr[lr]) / len(by_lr[lr]))
        assert {r.data.params["optimizer.lr"] for r in fresh if r.data.tags["loss"] == loss} == {best}

    out = tmp_path / "report"
    assert report(["confirm_study", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--out", str(out), "--no-log"]) == 0
    tuned = pd.read_csv(out / "tuned.csv")
    assert set(tuned["seeds"]) == {"fresh"} and set(tuned["n"]) == {3}
    for _, row in tuned.iterrows():  # the verdicts read only the fresh seeds, never the selection's
        scores = json.loads(row["test_by_seed"])
        assert set(scores) == {"3", "4", "5"}
        assert row["test_mean"] == pytest.approx(sum(scores.values()) / 3)
    text = (out / "report.md").read_text()
    assert "the verdicts read only fresh seeds (3-5)" in text and "at most 2 declared" in text
    assert "predate" not in text  # the selection's runs are the study's own, not runs reused from another sweep
    assert json.loads((out / "protocol.json").read_text())["confirmation"]["rounds_declared"] == 2
    # the selected setting's other test metrics, seed by seed, for a claim judged on one of them
    for _, row in tuned.iterrows():
        others = json.loads(row["others"])
        assert set(others["test/mae"]["fresh"]["1"]) == {"3", "4", "5"} and len(others["test/mae"]["selection"]) == 3
    from harness.report import ReportError, claims

    primary = {"a": "loss=mae", "b": "loss=mse", "where": "regression", "rule": "better", "metric": "test/mae", "mode": "min"}
    _, rows = claims.build(tmp_path, {"C1": {"claim": "mae has the lower mae", "study": "report", "primary": primary}})
    mae = {m: json.loads(r["others"])["test/mae"]["fresh"]["1"] for m, r in tuned.set_index("method").iterrows()}
    gain = sum(mae["loss=mse"].values()) / 3 - sum(mae["loss=mae"].values()) / 3
    assert f"gain {gain:.4g}" in rows[0]["effect"] and "test/mae" in rows[0]["effect"] and "n = 3" in rows[0]["effect"]
    # a method against itself at its best epoch: does it drift away from its best (overfit) by more than the margin?
    drop = {"a": "loss=mse", "where": "regression", "rule": "drop", "margin": "5%"}
    _, rows = claims.build(tmp_path, {"C6": {"claim": "mse drifts from its best", "study": "report", "primary": drop}})
    c6 = next(r for r in rows if r["id"] == "C6")
    assert "loss=mse vs loss=mse at its last epoch" in c6["effect"] and c6["verdict"] in (
        "supported",
        "contradicted",
        "inconclusive",
    )
    assert "best epoch better than its last" in c6["primary contrast"]
    for wrong, message in (
        ({"mode": None}, "mode: max or min"),
        ({"metric": "test/none"}, "not among the other test metrics"),
        ({"000 images": None}, "a contrast of C1 has unknown key.s. 000 images .a comma inside an unquoted value"),
    ):
        with pytest.raises(ReportError, match=message):
            claims.build(tmp_path, {"C1": {"claim": "x", "study": "report", "primary": primary | wrong}})

    # seeds the study already used are refused, and so is a round past the declared cap
    reused = sweep(*STUDY, "seed=5,6", "study.stage=confirm", cwd=tmp_path)
    assert reused.returncode == 2 and "needs fresh seeds, but seed(s) 5 already ran" in reused.stderr
    capped = sweep(*STUDY, "seed=6,7", "study.stage=confirm", "study.rounds=1", cwd=tmp_path)
    assert capped.returncode == 2 and "round 2 would pass the declared cap of study.rounds=1" in capped.stderr
    assert len(split_runs(mlflow_runs(tmp_path, "confirm_study")[1])[1]) == 18  # neither left a run behind


def test_a_confirmation_needs_a_selection_and_a_sweep(tmp_path):
    alone = sweep(*STUDY, "seed=3", "study.stage=confirm", cwd=tmp_path)
    assert alone.returncode == 2 and "found none" in alone.stderr  # nothing selected yet in this store
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "harness",
        "task=regression",
        "epochs=1",
        "study.stage=confirm",
        f"tracking.uri=sqlite:///{tmp_path}/m.db",
    ]
    one = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert one.returncode == 2 and "run it as the study's --multirun" in one.stderr


def test_a_confirmations_time_left_counts_only_the_jobs_it_can_still_run():
    """A confirmation sweep passes every unselected setting at once: its estimate of the time left must not
    extrapolate its training pace over them (a CNN round of 1,620 jobs, 60 of them selected, said 20 hours)."""
    from harness.sweep.journal import SweepInfo, jobs_left

    confirm = {"round": 1, "seeds": [str(s) for s in range(5, 15)], "selected": [{"optimizer": "adam"}] * 7}
    journal = [{"outcome": "unselected"}] * 160 + [{"outcome": "finished"}] * 2
    assert jobs_left(journal, SweepInfo(jobs=1620, confirm=confirm)) == 70 - 2
    assert jobs_left(journal, SweepInfo(jobs=1620)) == 1620 - 162  # a plain sweep: every job may train
    resumed = journal + [{"outcome": "skipped"}] * 8  # a resume's reused runs count as done
    assert jobs_left(resumed, SweepInfo(jobs=1620, confirm=confirm)) == 70 - 10
    assert jobs_left(journal, SweepInfo(jobs=170, confirm=confirm)) == 170 - 162  # never more than the jobs left
    assert jobs_left([{"outcome": "finished"}] * 70, SweepInfo(jobs=1620, confirm=confirm)) == 0


def test_looks_spend_alpha_evenly_and_stop_at_the_first_that_decides():
    strong = {1: {str(s): 1.0 + 0.01 * s for s in range(5)}}
    reference = {1: {str(s): 2.0 + 0.01 * (s % 2) for s in range(5)}}
    c, look = sequential(strong, reference, "min", 0.05, family=3, cap=2)
    assert look == 1 and c.verdict == "better" and c.family == 6  # tested at alpha / (3 comparisons x 2 looks)
    assert c.p == pytest.approx(contrast(upto(strong, 1), upto(reference, 1), "min", 0.05, 6).p)
    # undecided at look 1 (noise), decided at look 2 with the seeds of both rounds
    noisy = {1: {"0": 1.0, "1": 1.3, "2": 0.9}, 2: {str(s): 1.0 + 0.001 * s for s in range(3, 13)}}
    ref = {1: {"0": 1.1, "1": 1.0, "2": 1.2}, 2: {str(s): 1.5 + 0.001 * (s % 3) for s in range(3, 13)}}
    c, look = sequential(noisy, ref, "min", 0.05, family=1, cap=2)
    assert look == 2 and c.verdict == "better" and c.n == 13
    first, _ = sequential({1: noisy[1]}, {1: ref[1]}, "min", 0.05, family=1, cap=2)
    assert first.verdict == "undecided" and math.isfinite(first.p)
    # a method not rerun in round 2 (decided, or left out) is looked at only where both ran: paired, never Welch
    c, look = sequential({1: noisy[1]}, ref, "min", 0.05, family=1, cap=2)
    assert look == 1 and c.n == 3 and "paired" in c.test


def test_a_later_round_reruns_any_pair_still_undecided_not_only_those_against_the_reference():
    """Three methods: the reference (best on validation) is clearly better than both others, which are not told
    apart from each other: round 2 reruns those two (a claim may be about them), and not the reference."""
    from harness.report.protocol import open_pairs

    def row(method, val, scores):
        fresh = {1: {str(s): v for s, v in enumerate(scores, start=5)}}
        mean = sum(scores) / len(scores)
        return {"problem": "p", "method": method, "mode": "max", "metric": "test/accuracy", "n": len(scores)} | {
            "val_mean": val,
            "test_mean": mean,
            "test_by_seed": fresh[1],
            "fresh_by_round": fresh,
        }

    noise = [0.0, 0.01, -0.01, 0.02, -0.02, 0.005, -0.005, 0.015, -0.015, 0.0]
    ref = row("loss=ref", 0.95, [0.95 + 0.001 * n for n in noise])
    a = row("loss=a", 0.80, [0.80 + n for n in noise])
    b = row("loss=b", 0.79, [0.80 + n + 0.004 * (i % 3 - 1) for i, n in enumerate(noise)])
    table = pd.DataFrame([ref, a, b])
    assert open_pairs(table, 0.001, 2) == {("p", "loss=a"), ("p", "loss=b")}
    far = pd.DataFrame([ref, a, row("loss=b", 0.70, [0.60 + n for n in noise])])
    assert open_pairs(far, 0.001, 2) == set()  # every pair decided: nothing to rerun


def test_a_later_round_follows_a_claims_contrast_still_inconclusive_at_the_claims_level(tmp_path):
    """The study's own pair (on its primary metric, at its own level) is decided, but the claim it settles reads
    another metric (minority recall) at the claims table's stricter level, where the pair is not told apart: round
    2 reruns that pair's methods. A contrast on another study, or no claims map at all, asks for nothing."""
    import yaml

    from harness.report.claimmap import open_contrasts

    def row(method, val, primary, recall):
        seeds = [str(s) for s in range(5, 5 + len(primary))]
        fresh = {1: dict(zip(seeds, primary))}
        others = {"test/minority_recall": {"selection": {}, "fresh": {1: dict(zip(seeds, recall))}}}
        return {"problem": "imbalanced", "method": method, "mode": "max", "metric": "test/macro_f1", "n": len(primary)} | {
            "val_mean": val,
            "test_mean": sum(primary) / len(primary),
            "test_by_seed": fresh[1],
            "fresh_by_round": fresh,
            "others": others,
            "setting": "optimizer.lr=0.001",
        }

    noise = [0.0, 0.01, -0.01, 0.02, -0.02, 0.005, -0.005, 0.015, -0.015, 0.0]
    weighted = row("loss=ce_weighted", 0.9, [0.90 + 0.001 * n for n in noise], [0.50 + n for n in noise[::-1]])
    plain = row("loss=ce", 0.7, [0.70 + 0.001 * n for n in noise], [0.49 + n for n in noise])
    table = pd.DataFrame([weighted, plain])
    assert open_pairs_of(table) == set()  # the study's own pair is decided: on its own it would stop
    contrast_ = {"a": "loss=ce_weighted", "b": "loss=ce", "where": "imbalanced", "rule": "better", "margin": 0.02}
    claims = {
        "C8": {
            "claim": "weighting helps the minority class",
            "study": "imbalanced_fashion",
            "primary": contrast_ | {"metric": "test/minority_recall", "mode": "max"},
        },
        "C9": {"claim": "another study's", "study": "elsewhere", "primary": contrast_},
    }
    (tmp_path / "claims.yaml").write_text(yaml.safe_dump(claims))
    expected = {("imbalanced", "loss=ce_weighted"), ("imbalanced", "loss=ce")}
    assert open_contrasts(table, "imbalanced_fashion", 2, tmp_path) == expected
    assert open_contrasts(table, "some_other_study", 2, tmp_path) == set()
    clear = row("loss=ce_weighted", 0.9, [0.90 + 0.001 * n for n in noise], [0.80 + n for n in noise[::-1]])
    assert open_contrasts(pd.DataFrame([clear, plain]), "imbalanced_fashion", 2, tmp_path) == set()  # decided: supported
    assert open_contrasts(table, "imbalanced_fashion", 2, tmp_path / "no_map_here") == set()


def open_pairs_of(table):
    from harness.report.protocol import open_pairs

    return open_pairs(table, 0.01, 2)


def test_the_last_rounds_seeds_again_catch_up_the_methods_that_round_left_out(tmp_path, monkeypatch):
    """Round 1 lost mae's runs: its seeds again rerun mae alone, as round 1 (round 1 reruns every method, open or
    not). Round 2 that followed only mse's pairs (mse's runs relabelled round 2 here): its seeds again rerun mae
    only while mae is in a pair still open; once no left-out method is, those seeds are refused."""

    import harness.report.claimmap as claimmap
    import harness.report.protocol as protocol
    from harness import HarnessError
    from harness.sweep.confirm import plan

    assert sweep(*STUDY, "seed=0,1,2", cwd=tmp_path).returncode == 0
    assert sweep(*STUDY, "seed=3,4,5", "study.stage=confirm", cwd=tmp_path).returncode == 0
    client, runs = mlflow_runs(tmp_path, "confirm_study")
    fresh = {
        loss: [r for r in runs if r.data.tags.get("stage") == "confirm" and r.data.tags.get("loss") == loss]
        for loss in ("mse", "mae")
    }
    for r in fresh["mae"]:
        client.delete_run(r.info.run_id)
    experiment_id = client.get_experiment_by_name("confirm_study").experiment_id

    both = lambda selected, *_: {(str(p), str(m)) for p, m in zip(selected["problem"], selected["method"])}  # noqa: E731
    monkeypatch.setattr(protocol, "open_pairs", lambda *_: set())
    monkeypatch.setattr(claimmap, "open_contrasts", lambda *_: set())
    got = plan(client, experiment_id, "confirm_study", config("3,4,5"))  # round 1: mae, though no pair is open
    assert got["round"] == 1 and got["catch_up"] and [s["loss"] for s in got["selected"]] == ["mae"]
    with pytest.raises(HarnessError, match="needs fresh seeds"):
        plan(client, experiment_id, "confirm_study", config("3,4"))  # not the last round's seeds: refused as before

    for r in fresh["mse"]:  # as if round 2 had rerun mse alone, on seeds 3-5
        client.set_tag(r.info.run_id, "round", "2")
    monkeypatch.setattr(protocol, "open_pairs", both)
    later = plan(client, experiment_id, "confirm_study", config("3,4,5"))
    assert later["round"] == 2 and later["catch_up"] and [s["loss"] for s in later["selected"]] == ["mae"]
    only_mse = lambda selected, *_: {(str(p), "loss=mse") for p in selected["problem"]}  # noqa: E731
    monkeypatch.setattr(protocol, "open_pairs", only_mse)
    with pytest.raises(HarnessError, match="every method it would rerun already ran them"):
        plan(client, experiment_id, "confirm_study", config("3,4,5"))


@pytest.mark.extended  # four sweeps and a report (about a minute): the catch-up's plan is tested in process above
def test_a_knob_only_one_method_has_is_tuned_by_a_second_sweep_and_confirmed_by_a_catch_up(tmp_path):
    """Huber's delta is a knob mse lacks, so one Hydra grid cannot tune it for huber alone: the study is two sweeps
    under one declaration (mse over the LRs; huber over LR x delta). Selection reads both; the first confirmation
    sweep's grid has only mse, so huber's selected setting waits (the sweep says so); the second sweep on the same seeds catches round 1
    up for it. The report selects huber's delta on validation and leaves the knob out of mse's setting."""
    common = (
        "task=regression",
        "task.n_train=200",
        "task.n_val=100",
        "task.n_test=100",
        "epochs=2",
        "study.compare=[loss]",
        "study.tune=[optimizer.lr,loss.delta]",
        "study.margin=5%",
        "study.rounds=2",
        "tracking.experiment=two_spaces",
        "optimizer.lr=0.001,0.03",
    )
    mse, huber = ("loss=mse",), ("loss=huber", "loss.delta=0.3,3")
    assert sweep(*common, *mse, "seed=0,1,2", cwd=tmp_path).returncode == 0
    assert sweep(*common, *huber, "seed=0,1,2", cwd=tmp_path).returncode == 0
    first = sweep(*common, *mse, "seed=3,4,5", "study.stage=confirm", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "confirmation round 1 of at most 2: 2 selected setting(s)" in first.stdout and "3 finished" in first.stdout
    assert "note: 1 of the 2 selected settings is not in this sweep's grid" in first.stdout  # huber's: says how to
    assert "loss=huber" in first.stdout and "seed=3,4,5) to catch round 1 up" in first.stdout  # catch it up
    second = sweep(*common, *huber, "seed=3,4,5", "study.stage=confirm", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "round 1 of at most 2: 1 selected setting(s)" in second.stdout and "(catching up" in second.stdout
    assert "3 finished" in second.stdout
    assert "not in this sweep's grid" not in second.stdout  # nothing left out now
    client, runs = mlflow_runs(tmp_path, "two_spaces")
    _, jobs = split_runs(runs)
    fresh = [r for r in jobs if r.data.tags.get("stage") == "confirm"]
    assert sorted(r.data.tags["loss"] for r in fresh) == ["huber"] * 3 + ["mse"] * 3
    assert {r.data.tags["round"] for r in fresh} == {"1"}
    out = tmp_path / "report"
    assert report(["two_spaces", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--out", str(out), "--no-log"]) == 0
    tuned = pd.read_csv(out / "tuned.csv").set_index("method")
    assert set(tuned["seeds"]) == {"fresh"} and set(tuned["n"]) == {3}
    assert "loss.delta=" in tuned.loc["loss=huber", "setting"] and "loss.delta" not in tuned.loc["loss=mse", "setting"]
    again = sweep(*common, *huber, "seed=3,4,5", "study.stage=confirm", cwd=tmp_path)
    assert again.returncode != 0 and "round 1's, and every method it would rerun already ran them" in again.stderr


def test_a_round_killed_before_any_run_finished_starts_again_on_its_seeds(tmp_path, monkeypatch):
    """A session's end killed round 2 while its first runs trained: those runs left no result, so the same seeds
    start round 2 again (they were refused as used, and the killed runs' round counted as done)."""
    import harness.report.claimmap as claimmap
    import harness.report.protocol as protocol
    from harness.sweep.confirm import plan

    assert sweep(*STUDY, "seed=0,1,2", cwd=tmp_path).returncode == 0
    assert sweep(*STUDY, "seed=3,4,5", "study.stage=confirm", cwd=tmp_path).returncode == 0
    client, runs = mlflow_runs(tmp_path, "confirm_study")
    experiment_id = client.get_experiment_by_name("confirm_study").experiment_id
    source = next(r for r in runs if r.data.tags.get("stage") == "confirm")
    tags = {**source.data.tags, "round": "2", "seed": "6"}
    tags.pop("outcome", None)
    killed = client.create_run(experiment_id, tags=tags)  # round 2's run on seed 6, killed before it logged a metric
    for key, value in source.data.params.items():
        client.log_param(killed.info.run_id, key, "6" if key == "seed" else value)
    client.set_terminated(killed.info.run_id, "KILLED")

    both = lambda selected, *_: {(str(p), str(m)) for p, m in zip(selected["problem"], selected["method"])}  # noqa: E731
    monkeypatch.setattr(protocol, "open_pairs", both)
    monkeypatch.setattr(claimmap, "open_contrasts", lambda *_: set())
    got = plan(client, experiment_id, "confirm_study", config("6,7"))
    assert got["round"] == 2 and not got["catch_up"] and got["seeds"] == ["6", "7"]
    assert sorted(s["loss"] for s in got["selected"]) == ["mae", "mse"]
