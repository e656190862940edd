"""A training budget in optimizer steps (`steps`): each batch size trains the whole epochs nearest to it, solo
and stacked; null (the default) changes nothing, not even a config's hash, so old stores resume."""

import hashlib
import json

import pytest
from omegaconf import OmegaConf

from harness import HarnessError
from harness.config.checks import check_config
from harness.config.schema import epochs_of
from harness.engine.job import NOT_IN_HASH, compose, config_hash, names_of
from harness.engine.record import run_params
from tests.conftest import mlflow_runs, run_cli

N_TRAIN = 2000  # conf/task/regression.yaml


def old_hash(cfg) -> str:
    """The config hash as it was computed before `steps` existed (the tree without the key)."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    for key in (*NOT_IN_HASH, "steps", "init_seed", "order_seed"):
        tree.pop(key, None)
    for group in ("task", "loss", "optimizer", "schedule"):
        if isinstance(tree.get(group), dict):
            tree[group].pop("traits", None)
    return hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()[:16]


def test_a_null_budget_keeps_a_configs_hash_and_params_as_before():
    cfg = compose("task=regression")
    assert cfg.steps is None and config_hash(cfg) == old_hash(cfg)
    assert "steps" not in run_params(cfg, names_of(cfg, {}))
    budget = compose("task=regression", "steps=100")
    assert config_hash(budget) != config_hash(cfg) and run_params(budget, names_of(budget, {}))["steps"] == "100"


def test_the_epochs_of_a_budget_are_the_whole_epochs_nearest_to_it():
    assert epochs_of(compose("epochs=7"), 10) == 7  # no budget: epochs decides
    assert epochs_of(compose("steps=100"), 10) == 10
    assert epochs_of(compose("steps=100"), 32) == 3  # 3.1 epochs
    assert epochs_of(compose("steps=100"), 500) == 1  # never none


@pytest.mark.parametrize("bad", ["steps=0", "steps=-5", "steps=1.5", "steps=many"])
def test_a_bad_budget_is_refused_with_what_is_allowed(bad):
    cfg = compose("task=regression", bad)
    with pytest.raises(HarnessError, match="steps must be null or a positive integer"):
        check_config(cfg, names_of(cfg, {}))


def test_every_batch_size_trains_the_same_steps_solo_and_stacked(tmp_path):
    """Batch 50 (40 steps an epoch) and 200 (10) on a budget of 80 steps: 2 and 8 epochs, each with a cosine
    schedule that ends at the end of its own budget; two seeds per batch size stack into one bundle each."""
    out = run_cli("--multirun", "task=regression", "steps=80", "batch_size=50,200", "seed=0,1", "schedule=cosine", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    solo = run_cli("task=regression", "steps=80", "batch_size=200", "seed=2", "schedule=cosine", cwd=tmp_path)
    assert solo.returncode == 0, solo.stderr[-2000:]
    client, runs = mlflow_runs(tmp_path, "regression")
    runs = [r for r in runs if r.data.tags.get("harness.role") != "sweep"]  # the sweep's parent run apart
    assert len(runs) == 5
    for r in runs:
        batch = int(r.data.params["batch_size"])
        epochs = int(r.data.tags["epochs_trained"])
        assert epochs == {50: 2, 200: 8}[batch] and epochs * (N_TRAIN // batch) == 80, batch  # 80 steps either way
        assert len(client.get_metric_history(r.info.run_id, "train/loss")) == epochs, batch
        lrs = client.get_metric_history(r.info.run_id, "lr_step")
        assert max(m.step for m in lrs) == 79, batch  # the last of its 80 steps
        last = max(lrs, key=lambda m: m.step).value
        assert last < 0.01 * lrs[0].value, batch  # its cosine schedule ended with its budget
    assert {r.data.tags.get("bundle_size") for r in runs} == {"2", None}  # the sweep stacked; the solo run did not


def test_a_study_on_a_steps_budget_declares_and_reports_it(tmp_path):
    from harness.report.__main__ import main as report

    out = run_cli(
        "--multirun", "task=regression", "steps=40", "batch_size=50,200", "seed=0,1", "study.compare=[batch_size]", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-2000:]
    folder = tmp_path / "report"
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert report(["regression", "--tracking-uri", uri, "--out", str(folder), "--no-log"]) == 0
    assert "budget 40 optimizer steps per run" in (folder / "report.md").read_text()
    assert json.loads((folder / "protocol.json").read_text())["steps"] == [40]
