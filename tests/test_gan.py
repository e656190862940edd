"""Adversarial training: the objectives against their formulas, the two-player step, the metrics, and runs."""

import math

import pytest
import torch
import torch.nn.functional as F

from harness.losses_gan import GANLoss
from harness.tasks.gan import GAN, energy_distance, mode_metrics, ring_centers
from tests.conftest import mlflow_runs, run_cli

REAL, FAKE = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])


@pytest.mark.parametrize(
    "objective, d, g",
    [
        (
            "nonsat",
            lambda r, f: -(torch.sigmoid(r).log().mean() + (1 - torch.sigmoid(f)).log().mean()),
            lambda f: -torch.sigmoid(f).log().mean(),
        ),
        (
            "minimax",
            lambda r, f: -(torch.sigmoid(r).log().mean() + (1 - torch.sigmoid(f)).log().mean()),
            lambda f: (1 - torch.sigmoid(f)).log().mean(),
        ),
        ("hinge", lambda r, f: F.relu(1 - r).mean() + F.relu(1 + f).mean(), lambda f: -f.mean()),
        ("least_squares", lambda r, f: ((r - 1) ** 2).mean() / 2 + (f**2).mean() / 2, lambda f: ((f - 1) ** 2).mean() / 2),
        ("wasserstein", lambda r, f: f.mean() - r.mean(), lambda f: -f.mean()),
    ],
)
def test_objectives_match_their_formulas(objective, d, g):
    loss = GANLoss(objective)
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(d(REAL, FAKE).item(), rel=1e-5)
    assert loss.g_loss(FAKE).item() == pytest.approx(g(FAKE).item(), rel=1e-5)


def test_gradient_penalty_is_zero_for_a_unit_slope_critic_and_positive_otherwise():
    real, fake = torch.randn(16, 2), torch.randn(16, 2)
    unit = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        unit.weight.copy_(torch.tensor([[0.6, 0.8]]))  # |grad| = 1 everywhere
    loss = GANLoss("wasserstein", gp_weight=10.0)
    assert loss.penalty(unit, real, fake).item() == pytest.approx(0.0, abs=1e-10)
    with torch.no_grad():
        unit.weight.mul_(3.0)  # |grad| = 3: penalty 10 (3 - 1)^2
    assert loss.penalty(unit, real, fake).item() == pytest.approx(40.0, rel=1e-5)
    assert GANLoss("hinge").penalty(unit, real, fake).item() == 0.0
    with pytest.raises(ValueError, match="allowed: nonsat, minimax, hinge, least_squares, wasserstein"):
        GANLoss("vanilla")


def test_metrics_on_perfect_samples_and_on_a_collapsed_generator():
    task = GAN(n_train=10, n_val=10, n_test=4000)
    real = task.load().test.y
    other = GAN(n_train=10, n_val=10, n_test=4000, data_seed=1).load().test.y
    perfect = task.metrics(torch.cat([other, torch.zeros(len(other), 1)], 1), real)
    assert perfect["modes"].item() == 8 and perfect["high_quality"].item() > 0.98  # 2-D: P(r < 3 sigma) = 1 - exp(-4.5) = 0.989
    assert abs(perfect["energy"].item()) < 0.02
    collapsed = ring_centers(2.0)[0].repeat(4000, 1) + 0.01 * torch.randn(4000, 2)
    bad = task.metrics(torch.cat([collapsed, torch.zeros(4000, 1)], 1), real)
    assert bad["modes"].item() == 1 and bad["energy"].item() > 10 * max(perfect["energy"].item(), 0.01)
    assert mode_metrics(torch.zeros(5, 2), ring_centers(2.0), 0.02)["high_quality"].item() == 0.0
    assert energy_distance(real[:100], real[:100]).item() == pytest.approx(0.0, abs=1e-5)


def test_a_step_updates_each_player_on_its_own_loss_with_per_player_hyperparameters():
    torch.manual_seed(0)
    task = GAN(n_train=64, n_val=8, n_test=8, discriminator={"lr": 0.0})  # the discriminator frozen by its own lr
    data, model = task.load(), task.model()
    optimizer = torch.optim.Adam(task.param_groups(model), lr=1e-2)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-2, 0.0]
    d_before = [p.clone() for p in model.discriminator.parameters()]
    g_before = [p.clone() for p in model.generator.parameters()]
    loss, out = task.step(model, GANLoss("nonsat"), data.train.x, data.train.y, optimizer)
    assert out.shape == (64, 3) and math.isfinite(loss.item())
    assert all(torch.equal(a, b) for a, b in zip(d_before, model.discriminator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(g_before, model.generator.parameters()))


def test_a_gan_run_lands_in_mlflow_and_a_stacked_sweep_runs_it_alone(tmp_path):
    proc = run_cli("--multirun", "task=gan", "loss=gan_hinge,gan_wasserstein", "epochs=2", "task.n_train=1000", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "trains with its own step (two players)" in proc.stdout + proc.stderr
    runs = [r for r in mlflow_runs(tmp_path, "gan")[1] if r.data.tags.get("harness.role") != "sweep"]
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert all({"test/energy", "test/modes", "val/high_quality", "train/loss"} <= set(r.data.metrics) for r in runs)
    proc = run_cli("task=gan", "loss=mse", cwd=tmp_path)
    assert (
        proc.returncode == 2
        and "losses that fit gan: gan_hinge, gan_least_squares, gan_minimax, gan_nonsat, gan_wasserstein" in proc.stderr
    )
