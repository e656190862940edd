"""Count data: a Poisson (or overdispersed) count from a known log-linear rate with a nonlinearity.

x ~ N(0, 1)^d and log mu(x) = bias + 0.4 x0 - 0.3 x1 + 0.5 sin(2 x2) + 0.3 x3 x4 (features beyond
the first five are irrelevant); y ~ Poisson(mu), or with ``dispersion`` k > 0 a negative binomial
of the same mean and variance mu + mu^2 / k (a Gamma(k, 1/k)-Poisson mixture). The model (an MLP)
predicts the log-rate; every count loss reads it as such (``loss=poisson_nll`` directly, the
regression losses on exp(log-rate), see ``harness.losses.OnRate``). Metrics on the predicted mean
mu = exp(output): mean Poisson deviance (primary), MAE, and calibration (the mean over deciles of
predicted mu of |mean predicted - mean observed|).

``dataset=randhie``: statsmodels' bundled RAND Health Insurance Experiment (20,190 people; no
download): the count is ``mdvis`` (outpatient visits in a year, mean 2.9, variance 20: overdispersed),
the nine covariates standardised with training statistics; train/validation/test drawn by
``data_seed`` (``n_train``, ``n_val``; the rest is the test set).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from harness import HarnessError
from harness.tasks import Data, Split, Task, check_choice, check_number, check_positive_int, check_seed, split_indices
from harness.tasks.models import check_model, mlp

DATASETS = ("synthetic", "randhie")
MAX_LOG_RATE = 20.0  # exp(20) ~ 5e8: a log-rate above is clamped when read as a rate (a diverging model stays finite)


def log_rate(x: Tensor, bias: float) -> Tensor:
    return bias + 0.4 * x[:, 0] - 0.3 * x[:, 1] + 0.5 * torch.sin(2 * x[:, 2]) + 0.3 * x[:, 3] * x[:, 4]


def rate(output: Tensor) -> Tensor:
    return output.clamp(max=MAX_LOG_RATE).exp()


def poisson_deviance(mu: Tensor, y: Tensor) -> Tensor:
    """Mean Poisson deviance 2 (y log(y / mu) - (y - mu)), with y log y = 0 at y = 0 (scikit-learn's
    mean_poisson_deviance)."""
    mu = mu.clamp_min(1e-8)
    return (2 * (torch.xlogy(y, y) - y * mu.log() - (y - mu))).mean()


def calibration_error(mu: Tensor, y: Tensor, bins: int = 10) -> Tensor:
    """Mean over deciles of predicted mu of |mean predicted - mean observed count|."""
    order = mu.argsort()
    parts = [p for p in torch.tensor_split(order, bins) if len(p)]
    return torch.stack([(mu[p].mean() - y[p].mean()).abs() for p in parts]).mean()


RANDHIE_ROWS, RANDHIE_FEATURES = 20190, 9


def randhie() -> tuple[Tensor, Tensor]:
    """statsmodels' randhie: (the nine covariates [20190, 9], mdvis [20190]) as float tensors."""
    try:
        from statsmodels.datasets import randhie as data  # bundled with statsmodels: no download
    except ImportError:
        raise HarnessError("task.dataset=randhie needs statsmodels (pip install statsmodels)") from None
    frame = data.load_pandas().data
    y = torch.tensor(frame["mdvis"].to_numpy(), dtype=torch.float32)
    x = torch.tensor(frame.drop(columns="mdvis").to_numpy(), dtype=torch.float32)
    return x, y


class Counts(Task):
    name = "counts"
    targets = ("count",)
    primary_metric = "test/deviance"
    mode = "min"

    def __init__(
        self,
        dataset: str = "synthetic",
        n_train: int = 5000,
        n_val: int = 1000,
        n_test: int = 5000,
        n_features: int = 8,
        bias: float = 1.0,
        dispersion: float = 0.0,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        data_seed: int = 0,
    ):
        self.dataset = check_choice("task.dataset", dataset, DATASETS)
        self.sizes = [check_positive_int(f"task.{k}", v) for k, v in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test))]
        if self.dataset == "randhie":
            if n_train + n_val >= RANDHIE_ROWS:
                raise HarnessError(f"task.n_train={n_train} + task.n_val={n_val} leaves no test rows: randhie has {RANDHIE_ROWS}")
            self.sizes[2] = RANDHIE_ROWS - n_train - n_val
            n_features = RANDHIE_FEATURES
        self.n_features = check_positive_int("task.n_features", n_features)
        if n_features < 5:
            raise HarnessError(f"task.n_features must be at least 5 for the rate function, got {n_features}")
        self.bias = check_number("task.bias", bias, low=-10.0, what="a number in [-10, 5]")
        if self.bias > 5:
            raise HarnessError(f"task.bias must be a number in [-10, 5] (the log of the typical count), got {bias!r}")
        self.dispersion = check_number(
            "task.dispersion", dispersion, what="a number >= 0 (0: Poisson; k > 0: variance mu + mu^2 / k)"
        )
        self.hidden, _ = check_model("mlp", hidden, activation, (1, 1))
        self.activation, self.data_seed = activation, check_seed("task.data_seed", data_seed)

    def load(self) -> Data:
        if self.dataset == "randhie":
            return self._load_randhie()
        g = torch.Generator().manual_seed(self.data_seed)
        n = sum(self.sizes)
        x = torch.randn(n, self.n_features, generator=g)
        mu = log_rate(x, self.bias).exp()
        if self.dispersion > 0:  # Gamma(k, scale 1/k) has mean 1 and variance 1/k
            gamma = np.random.default_rng(self.data_seed).gamma(self.dispersion, 1 / self.dispersion, n)
            mu = mu * torch.as_tensor(gamma, dtype=mu.dtype)
        y = torch.poisson(mu, generator=g)
        parts = split_indices(n, self.sizes, self.data_seed)
        return Data(*(Split(x[i], y[i].unsqueeze(1)) for i in parts))

    def _load_randhie(self) -> Data:
        x, y = randhie()
        tr, va, te = split_indices(len(y), self.sizes, self.data_seed)
        mean, std = x[tr].mean(0), x[tr].std(0).clamp_min(1e-8)
        x = (x - mean) / std
        return Data(*(Split(x[i], y[i].unsqueeze(1)) for i in (tr, va, te)))

    def model(self) -> nn.Module:
        return mlp(self.n_features, 1, self.hidden, self.activation)

    def metrics(self, output: Tensor, y: Tensor) -> dict[str, Tensor]:
        mu, y = rate(output.reshape(-1).float()), y.reshape(-1).float()
        return {"deviance": poisson_deviance(mu, y), "mae": (mu - y).abs().mean(), "calibration": calibration_error(mu, y)}
