"""Today's optimizers (issue 11): muon (Muon + AdamW), adafactor, and lion, schedulefree_adamw,
prodigy, soap from pytorch-optimizer: each trains, the composite behaves as one optimizer under
an LR schedule, schedule-free runs are evaluated on their averaged weights, and the stacked
launcher stacks those it can and runs the others alone with the reason."""

import pytest
import torch

from harness.engine.bundles import plan
from harness.optimizers import MuonAdamW
from tests.test_stacked import check_equivalent, config, entries_for, solo

NEW = ["muon", "adafactor", "lion", "schedulefree_adamw", "prodigy", "soap"]


@pytest.mark.parametrize("name", NEW)
def test_each_new_optimizer_trains_a_regression_mlp(name):
    result, log, _ = solo(config("task=regression", f"optimizer={name}", "epochs=4", "seed=0"))
    assert result.outcome == "finished"
    losses = [m["train/loss"] for m, _ in log]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0], losses


def test_muon_takes_the_matrices_and_adamw_the_rest_under_one_schedule():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(8, 4), torch.nn.Linear(4, 1))
    opt = MuonAdamW(model.parameters(), lr=0.01)
    muon = {id(p) for g in opt.muon.param_groups for p in g["params"]}
    adamw = {id(p) for g in opt.adamw.param_groups for p in g["params"]}
    assert muon == {id(model[2].weight), id(model[3].weight)}
    assert adamw == {id(p) for p in model.parameters()} - muon  # conv kernel (4-D) and biases
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=10)
    x = torch.randn(3, 1, 4, 4)
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(3):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
        sched.step()
    lrs = {g["lr"] for g in opt.muon.param_groups + opt.adamw.param_groups}
    assert len(lrs) == 1 and lrs == {sched.get_last_lr()[0]}  # the schedule reached both halves
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # every parameter moved


def test_muon_without_a_matrix_is_refused():
    with pytest.raises(ValueError, match="2-D weight matrix"):
        MuonAdamW([torch.nn.Parameter(torch.zeros(3))])


def test_a_schedule_free_run_is_evaluated_and_left_on_its_averaged_weights():
    from harness.config.checks import check_config
    from harness.engine.build import build
    from harness.engine.job import spec_from_hydra

    cfg = config("task=regression", "optimizer=schedulefree_adamw", "epochs=2")
    spec = spec_from_hydra(cfg)
    check_config(cfg, spec.names)
    job = build(cfg, spec.names)
    modes = []
    step = job.optimizer.step
    job.optimizer.step = lambda *a, **k: (modes.append(job.optimizer.param_groups[0]["train_mode"]), step(*a, **k))[1]
    job.train(epochs=2, seed=0, on_epoch=lambda *a: None)
    assert modes and all(modes)  # every step in train mode
    assert job.optimizer.param_groups[0]["train_mode"] is False  # evaluated and left on the average


def test_lion_and_prodigy_members_train_as_alone():
    check_equivalent(
        [
            ["seed=0", "optimizer=lion", "optimizer.lr=0.0003"],
            ["seed=1", "optimizer=lion", "optimizer.lr=0.001"],
            ["seed=2", "optimizer=prodigy"],
            ["seed=3", "optimizer=prodigy", "optimizer.lr=0.5"],
        ],
        common=["task=regression"],
    )


def test_shape_aware_and_schedule_free_optimizers_run_alone_with_the_reason():
    entries = entries_for(*[[f"seed={i}", f"optimizer={name}"] for i, name in enumerate(NEW)], ["seed=9", "optimizer=lion"])
    units = plan(entries, max_members=64, memory_gb=None)
    alone = {u[0].spec.cfg.optimizer._target_.rsplit(".", 1)[1]: u[0].solo for u in units if len(u) == 1}
    assert "3-D slices" in alone["MuonAdamW"]
    assert "2-D slice" in alone["Adafactor"]
    assert "shape" in alone["SOAP"]
    assert "averaged weights" in alone["ScheduleFreeAdamW"]
    together = [u for u in units if len(u) > 1]
    assert len(together) == 1 and {e.spec.cfg.optimizer._target_.rsplit(".", 1)[1] for e in together[0]} == {"Lion", "Prodigy"}
