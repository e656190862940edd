"""Regression with outliers: training targets are corrupted, evaluation is on clean held-out data.

Data sets (``task.dataset``):
- ``synthetic``: x ~ U(-2, 2)^d, y = sin(2 x0) + 0.5 x1^2 + x2 x3 - 0.5 x4 + N(0, noise^2); extra
  features beyond the first five are irrelevant.
- ``diabetes``: scikit-learn's bundled diabetes set (442 patients, 10 features); features and target
  standardised with training statistics, so its MSE is in units of the target's variance.

Outliers: a fraction ``outlier_fraction`` of the *training* targets get ``outlier_scale`` times the
target's standard deviation times N(0, 1) added. Validation and test targets are never corrupted.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from harness import HarnessError
from harness.tasks import Data, RegressionTask, Split, check_fraction, check_number, check_positive_int, check_seed, split_indices
from harness.tasks.models import check_model, mlp

DATASETS = ("synthetic", "diabetes")


def synthetic_function(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(2 * x[:, 0]) + 0.5 * x[:, 1] ** 2 + x[:, 2] * x[:, 3] - 0.5 * x[:, 4]


class Regression(RegressionTask):
    name = "regression"

    def __init__(
        self,
        dataset: str = "synthetic",
        n_train: int = 2000,
        n_val: int = 500,
        n_test: int = 2000,
        n_features: int = 8,
        noise: float = 0.1,
        outlier_fraction: float = 0.0,
        outlier_scale: float = 10.0,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        data_seed: int = 0,
    ):
        if dataset not in DATASETS:
            raise HarnessError(f"task.dataset={dataset!r} is not a regression data set; allowed: {', '.join(DATASETS)}")
        self.dataset = dataset
        self.sizes = [check_positive_int(f"task.{k}", v) for k, v in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test))]
        self.n_features = check_positive_int("task.n_features", n_features)
        if dataset == "synthetic" and n_features < 5:
            raise HarnessError(f"task.n_features must be at least 5 for the synthetic function, got {n_features}")
        self.noise = check_number("task.noise", noise)
        self.outlier_scale = check_number("task.outlier_scale", outlier_scale)
        self.outlier_fraction = check_fraction("task.outlier_fraction", outlier_fraction)
        self.hidden, _ = check_model("mlp", hidden, activation, (1, 1))
        self.activation, self.data_seed = activation, check_seed("task.data_seed", data_seed)

    def _raw(self, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        if self.dataset == "synthetic":
            n = sum(self.sizes)
            x = torch.rand(n, self.n_features, generator=g) * 4 - 2
            y = synthetic_function(x) + self.noise * torch.randn(n, generator=g)
            return x, y, split_indices(n, self.sizes, self.data_seed)
        from sklearn.datasets import load_diabetes  # bundled with scikit-learn: no download

        x, y = (torch.as_tensor(a, dtype=torch.float32) for a in load_diabetes(return_X_y=True))
        n = len(y)
        n_train, n_val = int(0.6 * n), int(0.2 * n)
        idx = split_indices(n, [n_train, n_val, n - n_train - n_val], self.data_seed)
        mx, sx = x[idx[0]].mean(0), x[idx[0]].std(0)
        my, sy = y[idx[0]].mean(), y[idx[0]].std()
        self.n_features = x.shape[1]
        return (x - mx) / sx, (y - my) / sy, idx

    def load(self) -> Data:
        g = torch.Generator().manual_seed(self.data_seed)
        x, y, (tr, va, te) = self._raw(g)
        y_train = y[tr].clone()
        n_out = round(self.outlier_fraction * len(tr))
        if n_out:
            which = torch.randperm(len(tr), generator=g)[:n_out]
            y_train[which] += self.outlier_scale * y_train.std() * torch.randn(n_out, generator=g)
        col = lambda t: t.float().unsqueeze(1)  # noqa: E731  targets are [N, 1], like the model's output
        return Data(Split(x[tr], col(y_train)), Split(x[va], col(y[va])), Split(x[te], col(y[te])))

    def model(self) -> nn.Module:
        return mlp(self.n_features, 1, self.hidden, self.activation)
