"""A tuned knob's response curve from a study's per-run data, and the good_range rule it judges (C13)."""

import json

import pandas as pd
import pytest

from harness.report import ReportError, claimmap, claims, curve, judge


def runs_table(scores: dict[float, list[float]], noise: float = 0.002, extra_wd: bool = True) -> pd.DataFrame:
    """Selection runs of adam on mnist: for each learning rate, five seeds; with weight decay 0 (the given scores)
    and 0.01 (a point worse on validation and test, so never chosen)."""
    rows = []
    for lr, means in scores.items():
        for seed, m in enumerate(means):
            for wd, shift in ((0.0, 0.0), (0.01, -0.01)) if extra_wd else ((0.0, 0.0),):
                score = m + shift + noise * ((seed % 3) - 1)
                rows.append(
                    {
                        "run_id": f"{lr}-{seed}-{wd}",
                        "stage": "select",
                        "outcome": "finished",
                        "param:task": "mnist",
                        "param:optimizer": "adam",
                        "param:optimizer.lr": str(lr),
                        "param:optimizer.weight_decay": str(wd),
                        "param:seed": str(seed),
                        "final:val/accuracy": str(score),
                        "final:test/accuracy": str(score),
                    }
                )
    # a confirmation run and a failed run: neither is part of the curve
    rows.append({**rows[0], "run_id": "confirm", "stage": "confirm", "final:test/accuracy": "0.0"})
    rows.append({**rows[0], "run_id": "failed", "outcome": "failed", "final:test/accuracy": "0.0"})
    return pd.DataFrame(rows)


SPEC = {"a": "optimizer=adam", "where": "mnist", "knob": "optimizer.lr", "range": [0.0001, 0.001], "margin": 0.01}
TUNE = ["optimizer.lr", "optimizer.weight_decay"]


def test_every_value_inside_the_range_within_the_margin_supports_the_claim():
    runs = runs_table({0.0001: [0.95] * 5, 0.001: [0.955] * 5, 0.01: [0.90] * 5})
    r = curve.response(runs, SPEC, "test/accuracy", "max", TUNE, family=1)
    assert r["best"] == 0.001 and r["verdict"] == "supported"
    by = {p["value"]: p for p in r["points"]}
    assert by[0.0001]["verdict"] == "good" and by[0.0001]["gain"] == pytest.approx(-0.005)
    assert by[0.0001]["n"] == 5 and by[0.0001]["mean"] == pytest.approx(0.95, abs=1e-3)  # weight decay 0 chosen on validation
    assert by[0.01]["verdict"] == "poor"  # outside the range: shown, but not part of the rule


def test_a_value_inside_the_range_worse_by_more_than_the_margin_contradicts_it():
    runs = runs_table({0.0001: [0.92] * 5, 0.001: [0.955] * 5})
    r = curve.response(runs, SPEC, "test/accuracy", "max", TUNE, family=1)
    assert r["verdict"] == "contradicted" and {p["value"]: p["verdict"] for p in r["points"]}[0.0001] == "poor"


def test_an_interval_across_the_margin_leaves_it_inconclusive_and_the_family_widens_it():
    noisy = {0.0001: [0.94, 0.95, 0.93, 0.96, 0.94], 0.001: [0.955, 0.95, 0.96, 0.95, 0.955]}
    runs = runs_table(noisy, noise=0.0)
    alone = curve.response(runs, SPEC, "test/accuracy", "max", TUNE, family=1)
    many = curve.response(runs, SPEC, "test/accuracy", "max", TUNE, family=40)
    low = lambda r: {p["value"]: p for p in r["points"]}[0.0001]["low"]  # noqa: E731
    assert many["level"] > alone["level"] and low(many) < low(alone)
    assert many["verdict"] == "inconclusive"


def test_a_metric_to_minimise_turns_the_sign():
    runs = runs_table({0.0001: [0.95] * 5, 0.001: [0.955] * 5}).rename(
        columns={"final:val/accuracy": "final:val/mse", "final:test/accuracy": "final:test/mse"}
    )
    r = curve.response(runs, SPEC, "test/mse", "min", TUNE, family=1)
    assert r["best"] == 0.0001  # the lower score
    assert {p["value"]: p for p in r["points"]}[0.001]["gain"] == pytest.approx(-0.005)


def test_missing_knobs_and_methods_are_named():
    runs = runs_table({0.001: [0.95] * 5})
    with pytest.raises(ReportError, match="no knob 'optimizer.eps'"):
        curve.response(runs, {**SPEC, "knob": "optimizer.eps"}, "test/accuracy", "max", TUNE, 1)
    with pytest.raises(ReportError, match="no selection runs of optimizer=sgd"):
        curve.response(runs, {**SPEC, "a": "optimizer=sgd"}, "test/accuracy", "max", TUNE, 1)


def test_the_claims_table_reads_the_curve_from_runs_csv_and_waits_without_it(tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    tuned = pd.DataFrame(
        [
            {
                "problem": "mnist",
                "method": "optimizer=adam",
                "setting": "optimizer.lr=0.001, optimizer.weight_decay=0.0",
                "metric": "test/accuracy",
                "mode": "max",
                "test_mean": 0.955,
                "n": 5,
                "test_by_seed": json.dumps({str(s): 0.955 for s in range(5)}),
            }
        ]
    )
    tuned.to_csv(study / "tuned.csv", index=False)
    (study / "protocol.json").write_text(json.dumps({"tune": TUNE, "generated": "2026-12-06 13:15"}))
    got = claimmap.load_study(tmp_path, "study")
    assert got is not None
    c = {**SPEC, "rule": "good_range"}
    with pytest.raises(judge.Unconfirmed, match="runs.csv"):
        judge.check(got[0], c)
    runs_table({0.0001: [0.95] * 5, 0.001: [0.955] * 5}).to_csv(study / "runs.csv", index=False)
    j = judge.check(got[0], c)
    assert j["verdict"] == "supported"
    assert "0.0001: 0.9496, -0.005 [" in judge.effect(j) and "0.001: 0.9546 (best on validation)" in judge.effect(j)


def test_a_declaration_with_its_time_is_post_hoc_to_the_minute():
    made = [{"generated": "2026-12-06 13:15"}]
    assert "post hoc" in claims.post_hoc("2026-12-06 19:05", made)
    assert "before its runs" in claims.post_hoc("2026-12-06 09:00", made)
    assert "before its runs" in claims.post_hoc("2026-12-06", made)  # a date alone is compared by the day


def test_a_check_in_a_study_no_workload_uses_is_shown(tmp_path):
    """A claim's secondary check may name a study of its own (C14 at matched steps): it is read and shown."""

    def study(name: str, task: str, gain: float) -> None:
        folder = tmp_path / name
        folder.mkdir()
        rows = [
            {"problem": task, "method": m, "setting": "optimizer.lr=0.1", "metric": "test/accuracy", "mode": "max"}
            | {"test_mean": 0.9 + g, "n": 5, "test_by_seed": json.dumps({str(s): 0.9 + g + w * (s % k) for s in range(5)})}
            for m, g, w, k in (("batch_size=32", gain, 0.001, 5), ("batch_size=512", 0.0, 0.0013, 2))
        ]
        pd.DataFrame(rows).to_csv(folder / "tuned.csv", index=False)
        (folder / "protocol.json").write_text(
            json.dumps(
                {"tune": ["optimizer.lr"], "generated": "2026-12-06 13:15", "finished": 10, "epochs": [10], "seeds": [5]}
                | {"compare": ["batch_size"], "train_seconds": 60}
            )
        )

    study("samples", "mnist", 0.02)
    study("steps", "fashion_mnist", -0.02)
    pair = {"a": "batch_size=32", "b": "batch_size=512", "rule": "better", "margin": 0.005}
    spec = {"claim": "small batches generalise better", "study": "samples", "primary": pair | {"where": "mnist"}}
    spec["checks"] = [pair | {"study": "steps", "where": "fashion_mnist"}]
    _, rows = claims.build(tmp_path, {"C14": spec})
    row = next(r for r in rows if r["id"] == "C14")
    assert row["verdict"] == "supported"
    # named, since its cell alone does not say which study it comes from
    assert "secondary (steps): fashion_mnist: batch_size=32 vs batch_size=512: worse" in row["effect"]
    assert row["study"] == "samples, steps"
