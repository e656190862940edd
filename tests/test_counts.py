"""Count data: the task's data and metrics, the count losses, and runs through the CLI."""

import numpy as np
import pytest
import torch

from harness import HarnessError
from harness.losses import OnRate
from harness.tasks.counts import Counts, calibration_error, poisson_deviance
from tests.conftest import mlflow_runs, run_cli


def test_poisson_deviance_matches_scikit_learn():
    from sklearn.metrics import mean_poisson_deviance

    rng = np.random.default_rng(0)
    y = rng.poisson(3.0, 200).astype(float)
    mu = rng.uniform(0.5, 6.0, 200)
    assert poisson_deviance(torch.tensor(mu), torch.tensor(y)).item() == pytest.approx(mean_poisson_deviance(y, mu), rel=1e-6)


def test_calibration_is_the_mean_gap_per_decile():
    mu = torch.arange(1.0, 21.0)  # 10 bins of 2
    y = mu + torch.tensor([1.0, -1.0] * 10)  # each bin's mean matches
    assert calibration_error(mu, y).item() == pytest.approx(0.0)
    assert calibration_error(mu, mu + 2).item() == pytest.approx(2.0)


def test_counts_follow_the_rate_and_dispersion_adds_variance():
    poisson = Counts(n_train=20000, n_val=10, n_test=10).load().train.y
    over = Counts(n_train=20000, n_val=10, n_test=10, dispersion=1.0).load().train.y
    assert (poisson >= 0).all() and torch.equal(poisson, poisson.round())
    assert over.var() / over.mean() > 1.5 * (poisson.var() / poisson.mean())
    assert torch.equal(poisson, Counts(n_train=20000, n_val=10, n_test=10).load().train.y)  # the data seed fixes it


def test_losses_on_the_rate_read_the_output_as_a_log_rate():
    out, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[2.0], [1.0]])
    mu = out.exp()
    assert OnRate("mse")(out, y).item() == pytest.approx(((mu - y) ** 2).mean().item())
    assert OnRate("mae")(out, y).item() == pytest.approx((mu - y).abs().mean().item())
    assert torch.isfinite(OnRate("mse")(torch.tensor([[1e4]]), torch.tensor([[1.0]])))  # clamped, not inf
    with pytest.raises(ValueError, match="allowed: mse, mae, huber"):
        OnRate("poisson")


def test_poisson_nll_fits_the_counts_and_a_regression_loss_is_refused(tmp_path):
    proc = run_cli("task=counts", "loss=poisson_nll", "epochs=5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (r,) = mlflow_runs(tmp_path, "counts")[1]
    # predicting the mean count everywhere scores about the data's deviance around its mean; the model must beat it
    data = Counts().load()
    constant = poisson_deviance(torch.full_like(data.test.y, data.train.y.mean()), data.test.y).item()
    assert r.data.metrics["test/deviance"] < 0.9 * constant
    assert {"test/mae", "test/calibration", "val/deviance"} <= set(r.data.metrics)
    proc = run_cli("task=counts", "loss=mse", cwd=tmp_path)
    assert proc.returncode == 2 and "losses that fit counts: huber_counts, mae_counts, mse_counts, poisson_nll" in proc.stderr


def test_randhie_holds_real_visit_counts_standardised_on_training_rows():
    from harness.tasks.counts import Counts

    task = Counts(dataset="randhie", n_train=10000, n_val=2000)
    data = task.load()
    assert (len(data.train), len(data.val), len(data.test)) == (10000, 2000, 8190) and data.train.x.shape[1] == 9
    y = torch.cat([data.train.y, data.val.y, data.test.y])
    assert y.sum().item() == 57752 and y.max().item() == 77 and bool((y == y.round()).all())  # mdvis, whole visits
    assert data.train.x.mean(0).abs().max() < 1e-4
    assert task.model()(data.test.x).shape == (8190, 1)
    with pytest.raises(HarnessError, match=r"task.n_train=20000 \+ task.n_val=1000 leaves no test rows: randhie has 20190"):
        Counts(dataset="randhie", n_train=20000)
