"""hydra/sweeper=search (issue 11): Optuna proposes settings per method, seeds repeat each trial,
the trials are child runs of the sweep's parent, resume retraces them, bad ranges are one line."""

import statistics

from hydra_plugins.harness_search_sweeper.search_sweeper import SearchSweeper, method_labels, parse_space
from tests.conftest import mlflow_runs, run_cli

SEARCH = [
    "--multirun",
    "hydra/sweeper=search",
    "hydra.sweeper.sampler=random",
    "hydra.sweeper.n_trials=5",
    "+hydra.sweeper.space={optimizer.lr: 'loguniform(1e-3, 0.3)'}",
    "task=regression",
    "optimizer=adam,sgd",
    "seed=0,1",
    "epochs=3",
    "+study.compare=[optimizer]",
    "+study.tune=[optimizer.lr]",
]


def test_a_random_search_runs_every_trial_on_every_seed_and_resumes(tmp_path):
    out = run_cli(*SEARCH, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "20 jobs" in out.stdout and "5 trials x 2 seed(s) for each of 2 method(s), minimize val/mse" in out.stdout
    _, runs = mlflow_runs(tmp_path, "regression")
    parent = [r for r in runs if r.data.tags.get("harness.role") == "sweep"]
    jobs = [r for r in runs if r.data.tags.get("harness.role") != "sweep"]
    assert len(parent) == 1 and len(jobs) == 20 and all(r.info.status == "FINISHED" for r in jobs)
    assert parent[0].data.tags["harness.compare"] == '["optimizer"]'
    trials: dict[tuple[str, str], list] = {}
    for r in jobs:
        lr = float(r.data.params["optimizer.lr"])
        assert 1e-3 <= lr <= 0.3
        trials.setdefault((r.data.params["optimizer"], r.data.params["optimizer.lr"]), []).append(r)
    assert len(trials) == 10 and all(sorted(r.data.params["seed"] for r in rs) == ["0", "1"] for rs in trials.values())
    # the same seeded sampler gives each method the same candidates
    assert {lr for o, lr in trials if o == "adam"} == {lr for o, lr in trials if o == "sgd"}
    for method in ("adam", "sgd"):  # the printed best is the trial with the lowest mean val/mse over its seeds
        means = {lr: statistics.fmean(r.data.metrics["val/mse"] for r in rs) for (o, lr), rs in trials.items() if o == method}
        best = min(means, key=means.get)
        assert f"search optimizer={method}: 5/5 trials, best {means[best]:.4g} at optimizer.lr={float(best):.4g}" in out.stdout
    again = run_cli(*SEARCH, cwd=tmp_path)
    assert again.returncode == 0 and "0 finished, 0 diverged, 0 failed, 0 killed, 20 skipped" in again.stdout


def test_bad_search_settings_are_one_line_and_write_nothing(tmp_path):
    out = run_cli(
        "--multirun",
        "hydra/sweeper=search",
        "+hydra.sweeper.space={optimizer.lr: 'between(1, 2)'}",
        "task=regression",
        cwd=tmp_path,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        "error: hydra.sweeper.space.optimizer.lr='between(1, 2)' is not a search range; "
        "allowed: loguniform(a, b), uniform(a, b), int(a, b), logint(a, b) or choice(x, y, ...)"
    )
    assert not (tmp_path / "mlflow.db").exists()  # refused before the sweep's parent run is made (issue 26)
    out = run_cli(
        "--multirun",
        "hydra/sweeper=search",
        "+hydra.sweeper.space={optimizer.lr: 'loguniform(1e-3, 1)'}",
        "optimizer.lr=0.1,0.01",
        "task=regression",
        cwd=tmp_path,
    )
    assert out.returncode == 2 and "optimizer.lr is both searched (hydra.sweeper.space) and swept on the grid" in out.stderr


def test_spaces_labels_and_scores():
    space = parse_space({"a": "loguniform(1e-4, 1)", "b": "int(1, 8)", "c": "choice(x, y)", "d": "uniform(0, 0.5)"})
    assert space["a"].log and space["a"].low == 1e-4 and space["b"].high == 8 and space["c"].choices == ("x", "y")
    assert method_labels([("task=r", "optimizer=adam"), ("task=r", "optimizer=sgd")]) == ["optimizer=adam", "optimizer=sgd"]
    assert method_labels([("task=r",)]) == ["all jobs"]

    class Job:
        def __init__(self, value):
            self.value = value

        @property
        def return_value(self):
            if isinstance(self.value, Exception):
                raise self.value
            return self.value

    from harness.engine.train import Result

    assert SearchSweeper.score(Job(Result("finished", 3, final={"val/mse": 0.5})), "val/mse") == 0.5
    assert SearchSweeper.score(Job(Result("skipped", 0, final={"val/mse": 0.25})), "val/mse") == 0.25  # resume
    assert SearchSweeper.score(Job(Result("diverged", 1, 1, final={"val/mse": float("nan")})), "val/mse") is None
    assert SearchSweeper.score(Job(RuntimeError("boom")), "val/mse") is None


def test_tpe_startup_knob_models_the_results_after_its_random_trials():
    import optuna
    import pytest

    from harness import HarnessError

    sweeper = SearchSweeper(sampler="tpe", startup=3, space={"x": "uniform(0, 1)"})
    sweeper.check()
    sampler = sweeper.make_sampler()
    assert sampler._n_startup_trials == 3 and sampler._constant_liar
    assert SearchSweeper(sampler="tpe").make_sampler()._n_startup_trials == 10  # Optuna's default when null
    # past its 3 random trials TPE concentrates near the optimum of a 1-D bowl; the random sampler does not
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def late_distance(sampler):
        study = optuna.create_study(sampler=sampler)
        study.optimize(lambda t: (t.suggest_float("x", 0, 1) - 0.8) ** 2, n_trials=20)
        return statistics.fmean(abs(t.params["x"] - 0.8) for t in study.trials[10:])

    assert late_distance(sampler) < 0.5 * late_distance(SearchSweeper(sampler="random").make_sampler())
    with pytest.raises(HarnessError, match="hydra.sweeper.startup applies to sampler=tpe only"):
        SearchSweeper(sampler="random", startup=3, space={"x": "uniform(0, 1)"}).check()


def test_a_configured_objective_and_direction_are_used_as_given():
    assert SearchSweeper(objective="val/loss", direction="minimize").objective_of(("task=mnist",)) == ("val/loss", "minimize")
    assert SearchSweeper(objective="val/f1", direction="maximize").objective_of(()) == ("val/f1", "maximize")
