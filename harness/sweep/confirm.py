"""A confirmation sweep's plan (``study.stage=confirm``): which settings it reruns, on which fresh seeds, in which round.

Run the study's command again with ``study.stage=confirm`` and new seeds (``seed=5,6,7,8,9``): before any job
starts, the sweep reads the study's earlier runs from the store, selects each method's setting on validation
exactly as the report does (``harness.report.protocol``), and writes the plan into the sweep's file. Every job
whose setting was not selected passes (journal outcome ``unselected``, no MLflow run); the selected ones run
and are tagged ``stage=confirm`` and their ``round``. From round 2 on, only the methods in a pair still without a
full verdict are rerun: any two of a problem's methods (``protocol.open_pairs``), not only each against the reference,
and the methods of a claim's primary contrast on this study (``reports/claims.yaml``) still inconclusive at the claims
table's level (``claimmap.open_contrasts``). The last round's seeds passed again catch that round up: it reruns,
on the same seeds and as the same round, the methods it left out that are still in an open pair (it followed
other pairs), or in round 1 every method it left out (a study whose grid is two sweeps, for a knob only one method
has: the second sweep's settings are not in the first's grid), so each pair's looks stay within the cap. Refused in one line: no earlier selection in the store, seeds the
study already used (other than a catch-up's), a round past the declared cap (``study.rounds``).
"""

from __future__ import annotations

from omegaconf import DictConfig

from harness import HarnessError


def sweep_seeds(config: DictConfig) -> list[str]:
    """The seeds this sweep runs (the last ``seed`` override wins, as in Hydra's sweeper)."""
    from harness.sweep.plan import sweep_overrides

    seeds = [str(config.seed)]
    for o in sweep_overrides(config.hydra):
        if o.get_key_element().lstrip("+~") == "seed":
            seeds = [str(v) for v in o.sweep_string_iterator()] if o.is_sweep_override() else [str(o.value())]
    return seeds


def plan(client, experiment_id: str, experiment: str, config: DictConfig) -> dict:
    """{"round": r, "seeds": [...], "selected": [{param key: value}, ...]}: the settings this round reruns, keyed as
    ``engine.record.run_params`` logs them (loss, optimizer.lr, task.outlier_fraction, ...)."""
    from harness.report import ReportError
    from harness.report.claimmap import open_contrasts
    from harness.report.declaration import Declaration, label
    from harness.report.fresh import is_fresh
    from harness.report.load import factors, load_runs, select_unit
    from harness.report.protocol import open_pairs, select, settings_table

    study = config.study
    try:
        runs, _ = load_runs(client, experiment)
        unit = select_unit(client, experiment_id, runs)
    except ReportError as e:
        raise HarnessError(f"study.stage=confirm reruns the settings a selection chose, and found none: {e}") from None
    runs = unit.runs
    parents = [p for p in unit.parents if Declaration.from_tags(p.data.tags, p.info.run_id) is not None]
    if not parents:
        raise HarnessError(f"study.stage=confirm: experiment {experiment!r} has no declared study (study.compare) to confirm")
    decl = Declaration.from_tags(parents[0].data.tags, parents[0].info.run_id)
    assert decl is not None
    decl.compare, decl.tune = list(study.compare), list(study.tune)
    fresh = is_fresh(runs)
    chosen = runs[~fresh]
    if not (chosen.outcome == "finished").any():
        raise HarnessError(f"study.stage=confirm: experiment {experiment!r} has no finished selection runs to select from")
    seeds = sweep_seeds(config)
    # a run killed by an interruption (a session's end, kill -9) left no result: its round and seed stay unused, so
    # an interrupted round can be started again on the seeds it was launched with
    kept = runs[runs["outcome"].astype(str) != "killed"]
    kept_fresh = is_fresh(kept)
    done = sorted({int(r) for r in kept.loc[kept_fresh, "round"].dropna() if str(r).isdigit()})
    last_round = kept_fresh & (kept["round"].astype(str) == str(done[-1])) if done else kept_fresh & False
    last_seeds = set(kept.loc[last_round, "seed"].astype(str))
    catch_up = bool(done) and set(seeds) == last_seeds  # the last round's seeds again: for the pairs it left out
    ran = set(kept["seed"].dropna().astype(str))
    used = sorted(set(seeds) & ran, key=lambda s: (len(s), s))
    if used and not catch_up:
        raise HarnessError(
            f"study.stage=confirm needs fresh seeds, but seed(s) {', '.join(used)} already ran in this study "
            f"(it used {', '.join(sorted(ran, key=lambda s: (len(s), s)))}); "
            "pass new ones, e.g. seed=5,6,7,8,9 after selection on 0-4"
        )
    round_ = done[-1] if catch_up else (done[-1] + 1) if done else 1
    if round_ > int(study.rounds):
        raise HarnessError(
            f"study.stage=confirm: round {round_} would pass the declared cap of study.rounds={study.rounds} "
            "(the verdicts stand at the cap: undecided pairs stay undecided)"
        )
    config_cols = factors(runs)
    table, problem_cols, method_cols, tuned_cols = settings_table(runs, config_cols, decl)
    selected = select(table, 0.02, decl.margin, int(study.rounds))
    if round_ == 1:  # round 1 reruns every method (a catch-up: those whose setting the first sweep's grid lacked)
        still = {(str(p), str(m)) for p, m in zip(selected["problem"], selected["method"])}
    else:  # only the methods in a pair without a full verdict yet (any two of a problem's, not only against its reference)
        still = open_pairs(selected, decl.margin, int(study.rounds))
        try:  # and the pairs of the claims this study settles that are still inconclusive at the claims' level
            still |= open_contrasts(selected, experiment, int(study.rounds))
        except ReportError as e:
            raise HarnessError(f"study.stage=confirm: {e}") from None
    if catch_up:  # of those, the methods the last round left out (it followed other pairs, or its grid lacked them)
        left_out = zip(selected["problem"], selected["method"], selected["fresh_by_round"])
        still &= {(str(p), str(m)) for p, m, r in left_out if not (isinstance(r, dict) and round_ in r)}
    keep = selected[[(str(p), str(m)) in still for p, m in zip(selected["problem"], selected["method"])]]
    columns = problem_cols + method_cols + tuned_cols
    by_id = runs.set_index("run_id")
    settings = []
    for _, row in keep.iterrows():
        if not row.get("run_ids"):
            continue  # nothing of this method finished: nothing to confirm
        first = by_id.loc[row["run_ids"][0]]
        value = {c: first.get(c) for c in columns}
        settings.append({label(c): None if v is None or v != v else str(v) for c, v in value.items()})  # by param key
    if not settings and catch_up:
        raise HarnessError(
            f"study.stage=confirm: seeds {', '.join(seeds)} are round {round_}'s, and every method it would rerun "
            "already ran them (a later round needs new seeds)"
        )
    if not settings:
        raise HarnessError(f"study.stage=confirm: round {round_} has nothing to rerun (every pair is decided)")
    return {"round": round_, "seeds": seeds, "selected": settings, "catch_up": catch_up}


def not_run(client, experiment_id: str, parent_run_id: str, plan: dict, reused: list[str]) -> list[dict]:
    """The selected settings no run of this confirmation sweep matched (its parent's runs, and the finished runs a
    resumed job reused): this sweep's grid lacks them (a study whose grid is two sweeps: the second's settings), so
    the same seeds passed again to the other sweep catch the round up."""
    from harness.config.values import has_setting

    runs = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=50000)
    runs += [client.get_run(r) for r in reused]
    ran = [r.data.params for r in runs if r.data.tags.get("stage") == "confirm"]
    return [s for s in plan["selected"] if not any(has_setting(p, s) for p in ran)]
