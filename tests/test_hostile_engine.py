"""A hostile user against the training engine (issue 26): a member's failure stays the member's,
closure optimizers train, and knobs torch would only refuse mid-run are one line before any run."""

import sys
import textwrap

import pytest
import torch

from harness import HarnessError
from harness.config.checks import check_config
from harness.engine.build import build
from harness.engine.job import compose, spec_from_hydra
from harness.engine.launch import run_bundle
from tests.conftest import mlflow_runs, run_cli
from tests.test_stacked import entry

FLAKY = textwrap.dedent("""
    import torch

    class Flaky(torch.optim.Adam):
        '''Adam that raises at its third step when its lr is above 0.5: a member that breaks mid-run.'''
        def step(self, closure=None):
            self.steps = getattr(self, "steps", 0) + 1
            if self.defaults["lr"] > 0.5 and self.steps == 3:
                raise RuntimeError("flaky optimizer broke")
            return super().step(closure)
""")


@pytest.fixture
def flaky(tmp_path, monkeypatch):
    (tmp_path / "flaky_opt.py").write_text(FLAKY)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def config(*overrides):
    return compose("tracking.enabled=false", "progress=false", "task=regression", "epochs=2", *overrides)


def test_a_member_whose_optimizer_raises_fails_alone_and_the_bundle_trains_on(flaky):
    entries = [
        entry(config("optimizer._target_=flaky_opt.Flaky", "optimizer.traits.stacking=per_member", f"optimizer.lr={lr}"))
        for lr in (0.01, 0.9, 0.02)
    ]
    run_bundle(entries, "b1", threads=1)
    outcomes = [e.result.outcome for e in entries]
    assert outcomes == ["finished", "failed", "finished"]
    assert all(e.result.epochs == 2 for e in (entries[0], entries[2]))


def test_a_member_whose_shared_optimizer_group_raises_fails_with_its_group_only(monkeypatch):
    entries = [entry(config(f"optimizer.lr={lr}", f"seed={s}")) for lr, s in ((0.01, 0), (0.01, 1), (0.02, 2))]
    real = torch.optim.Adam.step
    group_lr = {}

    def step(self, closure=None):
        if self.defaults["lr"] == 0.01:  # the two lr=0.01 members share one Adam (elementwise): both fail
            group_lr.setdefault("calls", 0)
            group_lr["calls"] += 1
            if group_lr["calls"] == 2:
                raise RuntimeError("shared step broke")
        return real(self, closure)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    run_bundle(entries, "b1", threads=1)
    assert [e.result.outcome for e in entries] == ["failed", "failed", "finished"]


def test_a_member_whose_metrics_raise_fails_alone(monkeypatch):
    from harness.tasks.regression import Regression

    entries = [entry(config(f"seed={s}")) for s in range(3)]
    real = Regression.metrics
    calls = {"n": 0}

    def metrics(self, output, y, **extra):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ValueError("a metric broke")
        return real(self, output, y, **extra)

    monkeypatch.setattr(Regression, "metrics", metrics)
    run_bundle(entries, "b1", threads=1)
    outcomes = [e.result.outcome for e in entries]
    assert sorted(outcomes) == ["failed", "finished", "finished"]


@pytest.mark.slow
def test_a_sweep_with_one_broken_member_finishes_the_others(flaky, tmp_path):
    """The issue's case end to end: the stacked launcher (the default) keeps the others' runs."""
    env = {"PYTHONPATH": f"{flaky}:{__import__('tests.conftest', fromlist=['ROOT']).ROOT}"}
    out = run_cli(
        "--multirun",
        "task=regression",
        "epochs=2",
        "optimizer._target_=flaky_opt.Flaky",
        "optimizer.traits.stacking=per_member",  # a class of one's own stacks where its traits say so
        "optimizer.lr=0.01,-1,0.9,0.02",
        cwd=tmp_path,
        env=env,
    )
    assert out.returncode == 1, out.stderr[-2000:]  # a job failed
    assert "error: optimizer.lr must be a finite number > 0, got -1" in out.stderr
    assert "bundle" in out.stdout and "2 finished, 0 diverged, 1 failed" in out.stdout
    _, runs = mlflow_runs(tmp_path, "regression")
    children = {r.data.params.get("optimizer.lr"): r for r in runs if r.data.tags.get("harness.role") != "sweep"}
    assert {k: r.info.status for k, r in children.items()} == {"0.01": "FINISHED", "0.9": "FAILED", "0.02": "FINISHED"}
    assert "flaky optimizer broke" in children["0.9"].data.tags["error"]
    assert "report: python -m harness.report regression\n" in out.stdout  # what to do next


@pytest.mark.parametrize(
    "lr, needle",
    [
        ("1e308", "optimizer.lr must be at most 3.4e38 in size"),
        ("1e38", "fails on its first step"),
    ],
)
def test_a_learning_rate_that_overflows_float32_is_refused_before_the_run(lr, needle):
    cfg = config(f"optimizer.lr={lr}")
    names = spec_from_hydra(cfg).names
    with pytest.raises(HarnessError, match=needle):
        check_config(cfg, names)
        build(cfg, names)


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["optimizer=prodigy", "optimizer.d_coef=-1"], "optimizer.d_coef must be a finite number > 0"),
        (["optimizer=prodigy", "optimizer.d_coef=0"], "optimizer.d_coef must be a finite number > 0"),
        (["optimizer=muon", "optimizer.ns_steps=-1"], "optimizer.ns_steps must be a positive integer"),
        (["optimizer=lbfgs", "optimizer.max_iter=0"], "optimizer.max_iter must be a positive integer"),
        (["optimizer=lbfgs", "optimizer.line_search_fn=wolfe"], "optimizer.line_search_fn must be null or 'strong_wolfe'"),
        (["task=gan", "+task.generator.lr=-1"], "task.generator.lr must be a finite number >= 0"),
        (["task=gan", "+task.discriminator.betas=[0.5,1.5]"], "task.discriminator.betas must be two numbers in [0, 1)"),
    ],
)
def test_knobs_that_were_accepted_silently_are_refused(overrides, needle):
    cfg = config(*overrides)
    names = spec_from_hydra(cfg).names
    with pytest.raises(HarnessError, match=needle.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        check_config(cfg, names)
        build(cfg, names)


def test_lbfgs_trains_a_full_batch_regression():

    cfg = config("optimizer=lbfgs", "optimizer.lr=0.5", "batch_size=full", "epochs=3")
    spec = spec_from_hydra(cfg)
    check_config(cfg, spec.names)
    job = build(cfg, spec.names)
    result = job.train(epochs=3, seed=0, on_epoch=lambda *a: None)
    assert result.outcome == "finished"
    losses = [h["train/loss"] for h in result.history]
    assert losses[-1] < losses[0] / 2, losses


def test_a_closure_optimizer_with_a_two_player_task_is_refused():
    cfg = config("task=gan", "task.n_train=64", "task.n_val=16", "task.n_test=16", "optimizer=lbfgs")
    names = spec_from_hydra(cfg).names
    check_config(cfg, names)
    with pytest.raises(HarnessError, match="needs a closure"):
        build(cfg, names)


@pytest.mark.extended  # the CLI path (47 s); LBFGS's training is tested in process above
def test_lbfgs_runs_alone_and_in_a_sweep_from_the_command_line(tmp_path):
    out = run_cli(
        "task=regression",
        "epochs=1",
        "optimizer=sgd",
        "~optimizer.weight_decay",
        "optimizer._target_=torch.optim.LBFGS",
        "batch_size=full",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    out = run_cli("--multirun", "task=regression", "epochs=1", "optimizer=lbfgs", "seed=0,1", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "needs a closure" in out.stdout and "Traceback" not in out.stderr
    _, runs = mlflow_runs(tmp_path, "regression")
    assert sorted(r.info.status for r in runs if r.data.tags.get("harness.role") != "sweep") == ["FINISHED"] * 3
    assert sys.executable


def test_bad_data_is_one_line_before_training_not_a_diverged_run(tmp_path):
    rows = "\n".join(f"{i},{i % 2}" for i in range(30))
    (tmp_path / "inf.csv").write_text(f"a,y\n{rows}\n1e308,1\n")
    (tmp_path / "target.csv").write_text(f"a,y\n{rows}\n3,inf\n")
    cases = [
        (["task=tabular", f"task.path={tmp_path / 'inf.csv'}", "task.target=y"], "feature column 'a' of inf.csv holds 1 value"),
        (["task=tabular_regression", f"task.path={tmp_path / 'target.csv'}", "task.target=y"], "task.target='y' holds 1 value"),
        (["task=embedding", "task.n_train=1"], "task.n_train must be at least 2"),
    ]
    for overrides, needle in cases:
        cfg = config(*overrides)
        names = spec_from_hydra(cfg).names
        with pytest.raises(HarnessError, match=needle.replace("(", r"\(")):
            check_config(cfg, names)
            build(cfg, names)


def test_loaded_data_that_is_not_finite_is_refused_for_any_task():
    from harness.engine.build import check_data
    from harness.tasks import Data, Split

    good = Split(torch.zeros(4, 2), torch.zeros(4, 1))
    check_data(Data(good, good, good), "mine")
    bad = Split(torch.tensor([[0.0, float("nan")]] * 4), torch.zeros(4, 1))
    with pytest.raises(HarnessError, match="task=mine: the val inputs hold 4 value"):
        check_data(Data(good, bad, good), "mine")
    with pytest.raises(HarnessError, match="its test split is empty"):
        check_data(Data(good, good, Split(torch.zeros(0, 2), torch.zeros(0, 1))), "mine")
    huge = Split(torch.full((4, 2), 3e38), torch.zeros(4, 1))  # finite, though their sum overflows to inf
    check_data(Data(huge, good, good), "mine")
    one_inf = Split(torch.tensor([[1.0, 2.0], [float("-inf"), 0.0]]), torch.zeros(2, 1))
    with pytest.raises(HarnessError, match="task=mine: the train inputs hold 1 value"):
        check_data(Data(one_inf, good, good), "mine")


def test_a_failed_mnist_download_says_why_and_leaves_no_empty_folders(tmp_path, monkeypatch):
    import torchvision.datasets

    from harness.tasks.mnist import load_mnist

    def refuse(root, train=True, download=False):
        (tmp_path / "data" / "MNIST" / "raw").mkdir(parents=True, exist_ok=True)  # as torchvision makes them first
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://x/, got: <urlopen error offline>")

    monkeypatch.setattr(torchvision.datasets, "MNIST", refuse)
    (tmp_path / "keep").mkdir()
    with pytest.raises(
        HarnessError,
        match="the download failed: Error downloading train-images-idx3-ubyte.gz: Tried https://x/, got: <urlopen error offline>",
    ):
        load_mnist(tmp_path / "data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]


def test_old_comma_joined_overrides_split_where_overrides_end():
    from harness.__main__ import split_overrides

    assert split_overrides("task=regression,optimizer.betas=[0.5,0.999],+task.generator={lr: 1, b: 2},seed=3") == [
        "task=regression",
        "optimizer.betas=[0.5,0.999]",
        "+task.generator={lr: 1, b: 2}",
        "seed=3",
    ]
    assert split_overrides("loss.weight='a,b',epochs=2") == ["loss.weight='a,b'", "epochs=2"]


@pytest.mark.slow
def test_a_run_is_rerun_from_its_record_and_gives_the_same_result(tmp_path):
    out = run_cli("task=regression", "epochs=2", "optimizer.betas=[0.5,0.99]", "seed=3", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    client, runs = mlflow_runs(tmp_path, "regression")
    (first,) = runs
    out = run_cli("--rerun", first.info.run_id, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"rerunning run {first.info.run_id}" in out.stdout and "optimizer.betas=[0.5,0.99]" in out.stdout
    _, runs = mlflow_runs(tmp_path, "regression")
    (again,) = [r for r in runs if r.info.run_id != first.info.run_id]
    assert again.data.params == first.data.params
    assert again.data.metrics["test/mse"] == first.data.metrics["test/mse"]  # the same config, seed and data: the same run
    out = run_cli("--rerun", "nosuchrun", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.startswith("error: no run nosuchrun in ") and "Traceback" not in out.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    out = run_cli("--rerun", first.info.run_id, cwd=empty)  # a folder without a store: one line, and no store made
    assert out.returncode == 2 and out.stderr.startswith("error: there is no MLflow store at ") and "Traceback" not in out.stderr
    assert not (empty / "mlflow.db").exists()
