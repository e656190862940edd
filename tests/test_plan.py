"""The generated pages (reports/plan.md, reports/claims.md, the results page's claims table) against their sources."""

import json

from harness.report.plan import grid_runs, main


def test_the_plan_shows_each_study_measured_against_its_budget(tmp_path):
    reports, experiments = tmp_path / "reports", tmp_path / "experiments"
    reports.mkdir()
    experiments.mkdir()
    (experiments / "base.yaml").write_text("hydra:\n  sweeper:\n    params:\n      loss: a,b,c\n      seed: 0,1,2,3,4\n")
    (experiments / "longer.yaml").write_text(
        "defaults:\n  - base\n  - _self_\nhydra:\n  sweeper:\n    params:\n      task.max_length: '6'\n"
    )
    (experiments / "searched.yaml").write_text("defaults:\n  - override /hydra/sweeper: search\n")
    assert grid_runs("base", experiments) == 15 and grid_runs("longer", experiments) == 15
    assert grid_runs("searched", experiments) is None and grid_runs("missing", experiments) is None
    for study, seconds, confirmed in (("base", 90.0, True), ("longer", 900.0, True), ("searched", 60.0, False)) + (
        ("declared", 60.0, False),
        ("halted", 600.0, False),
    ):
        (reports / study).mkdir()
        proto = {"finished": 15, "train_seconds": seconds, "generated": "2026-12-06 10:00"}
        proto |= {"margin": 0.005, "margin_post_hoc": False} if study in ("declared", "halted") else {}
        (reports / study / "protocol.json").write_text(json.dumps(proto | ({"confirmation": {}} if confirmed else {})))
    (reports / "plan.yaml").write_text(
        "part 1:\n"
        "  - {study: base, claims: [C1], budget: 2}\n"
        "  - {study: longer, claims: [C1, C2], budget: 10}\n"
        "part 2:\n"
        "  - {study: searched, claims: [], budget: 5}\n"
        "  - {study: declared, claims: [], budget: 5}\n"
        "  - {study: missing, claims: [C3], budget: 5, needs: a GPU}\n"
        "  - {study: halted, claims: [C3], budget: 5, stopped: its model could not see a digit, needs: 2 hours}\n"
    )
    assert main(["--reports", str(reports)]) == 0
    rows = {line.split("|")[2].strip(): line for line in (reports / "plan.md").read_text().splitlines() if line.startswith("|  ")}
    assert " 1.5 |" in rows["base"] and "confirmed on fresh seeds (2026-12-06), within budget" in rows["base"]
    assert "over budget by 5.0 min" in rows["longer"] and "| C1, C2 " in rows["longer"]
    assert "a search" in rows["searched"] and "first run only (2026-12-06): not yet rerun on fresh seeds" in rows["searched"]
    assert "not run (needs a GPU)" in rows["missing"] and "| 15 runs " not in rows["missing"]
    assert "run with its declared margin (2026-12-06), no confirmation rounds, within budget" in rows["declared"]
    assert (
        "selection only (2026-12-06), stopped: its model could not see a digit; over budget by 5.0 min (needs 2 hours)"
        in rows["halted"]
    )
    page = tmp_path / "results.md"
    page.write_text("intro\n<!-- studies:start -->\nold\n<!-- studies:end -->\nrest\n")
    assert main(["--reports", str(reports), "--page", str(page)]) == 0
    listed = page.read_text()
    assert "old" not in listed and "- base (C1): confirmed on fresh seeds (2026-12-06), within budget\n" in listed
    assert "- missing (C3): not run (needs a GPU)\n" in listed and listed.endswith("<!-- studies:end -->\nrest\n")
    page.write_text("no block here\n")
    assert main(["--reports", str(reports), "--page", str(page)]) == 2
    (reports / "plan.yaml").write_text("part 1: {study: base}\n")
    assert main(["--reports", str(reports)]) == 2


def test_the_committed_plan_page_matches_the_plan_and_the_reports():
    import yaml

    from harness.report.plan import REPORTS, build

    plan = yaml.safe_load((REPORTS / "plan.yaml").read_text())
    assert (REPORTS / "plan.md").read_text() == build(REPORTS, plan), "run python -m harness.report.plan"


def test_the_committed_claims_table_matches_the_map_and_the_reports():
    import yaml

    from harness.report import claims
    from harness.report.plan import REPORTS

    text, rows = claims.build(REPORTS, yaml.safe_load((REPORTS / "claims.yaml").read_text()))
    committed = (REPORTS / "claims.md").read_text()
    if claims.CLAIMS_LIST.exists():  # the claims' own wording is read from ../shared/CLAIMS.md where it is beside us
        assert committed == text, "run python -m harness.report.claims --page docs/results.md"
    for r in rows:
        assert r["workloads"] in committed and r["effect"] in committed, r["id"]
    page = (REPORTS.parent / "docs" / "results.md").read_text()
    for r in rows:  # the results page's short table, claim by claim
        assert f"| {r['id']} " in page and r["workloads"] in page, r["id"]


def test_the_results_page_lists_every_planned_study_as_the_plan_says():
    import yaml

    from harness.report.plan import REPORTS, study_list

    plan = yaml.safe_load((REPORTS / "plan.yaml").read_text())
    page = (REPORTS.parent / "docs" / "results.md").read_text()
    block = page.split("<!-- studies:start -->\n")[1].split("<!-- studies:end -->")[0]
    assert block == study_list(REPORTS, plan), "run python -m harness.report.plan --page docs/results.md"
    assert block.count("\n") == sum(len(v) for v in plan.values())


def test_the_plan_says_how_many_rounds_ran_and_which_claims_a_round_left_would_follow(tmp_path):
    """A confirmed study that ran one of its two declared rounds, whose claim's contrast is not told apart at the
    claims' level: the plan says 1 of 2 rounds and names the claim that round 2 would follow; once its pair is
    decided it names none."""
    import pandas as pd
    import yaml

    reports = tmp_path / "reports"
    (reports / "study").mkdir(parents=True)
    (reports / "plan.yaml").write_text("part 1:\n  - {study: study, claims: [C8], budget: 5}\n")
    proto = {"finished": 30, "train_seconds": 60.0, "generated": "2026-12-06 10:00", "compare": ["loss"], "tune": []}
    (reports / "study" / "protocol.json").write_text(json.dumps(proto | {"confirmation": {"rounds_declared": 2}}))
    contrast = {"a": "loss=a", "b": "loss=b", "where": "p", "rule": "better", "margin": 0.01}
    (reports / "claims.yaml").write_text(yaml.safe_dump({"C8": {"claim": "a beats b", "study": "study", "primary": contrast}}))
    noise = [0.0, 0.01, -0.01, 0.02, -0.02, 0.005, -0.005, 0.015, -0.015, 0.0]

    def write(gain):
        rows = []
        for method, base in (("loss=a", 0.80 + gain), ("loss=b", 0.80)):
            fresh = {"1": {str(s): base + n for s, n in enumerate(noise if method == "loss=a" else noise[::-1], start=5)}}
            rows.append(
                {"problem": "p", "method": method, "mode": "max", "metric": "test/accuracy", "setting": "(fixed)"}
                | {"n": 10, "test_mean": base, "test_by_seed": json.dumps(fresh["1"]), "fresh_by_round": json.dumps(fresh)}
            )
        pd.DataFrame(rows).to_csv(reports / "study" / "tuned.csv", index=False)
        assert main(["--reports", str(reports)]) == 0
        return (reports / "plan.md").read_text()

    assert "1 of 2 rounds (C8 still inconclusive at the claims' level: round 2 would follow)" in write(0.005)
    decided = write(0.2)
    assert "1 of 2 rounds, within budget" in decided and "would follow" not in decided
