"""Imbalanced classification: class sizes decay exponentially from the largest to the smallest.

Class c (of C) gets a share proportional to ``imbalance_ratio ** (-c / (C - 1))``, so class 0 is the
largest, the last class the smallest, and their sizes differ by ``imbalance_ratio``.

Data sets (``task.dataset``):
- ``synthetic``: Gaussian clusters built as scikit-learn's ``make_classification`` builds them
  (see ``gaussian_clusters``), default two classes at 1:100; train, validation and test share the skew.
- ``mnist_lt``: long-tailed MNIST: training and validation images subsampled per digit to the
  profile above; the test set is the official, balanced 10k.
- ``fashion_mnist_lt``: long-tailed Fashion-MNIST, built the same way from Fashion-MNIST.
The rarest class is the *minority class*: its recall is reported, as are balanced accuracy,
macro-F1 and (two classes) average precision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from harness import HarnessError
from harness.tasks import ClassificationTask, Data, Split, check_bool, check_number, check_positive_int, check_seed, split_indices
from harness.tasks.mnist import check_normalize, check_split, image_model, load_mnist, mnist_files, to_inputs
from harness.tasks.models import check_model, mlp

DATASETS = ("synthetic", "mnist_lt", "fashion_mnist_lt")
IMAGES = {"mnist_lt": "mnist", "fashion_mnist_lt": "fashion_mnist"}  # a long-tailed set -> the images it subsamples


def class_shares(num_classes: int, ratio: float) -> list[float]:
    """Exponentially decaying class proportions, largest/smallest = ratio, summing to 1."""
    w = [ratio ** (-c / (num_classes - 1)) for c in range(num_classes)]
    return [v / sum(w) for v in w]


def gaussian_clusters(n: int, n_features: int, shares: list[float], class_sep: float, g: torch.Generator):
    """scikit-learn's make_classification construction, in torch (importing scikit-learn costs ~1.5 s
    of start-up): one Gaussian cluster per class, centred on a distinct vertex of a hypercube of side
    2 * class_sep in the informative dimensions and stretched by a random linear map; the remaining
    features are N(0, 1) noise. Class sizes follow ``shares`` exactly (rounded); samples are shuffled."""
    num_classes = len(shares)
    informative = min(n_features, max(2, num_classes))
    counts = [max(1, round(s * n)) for s in shares]
    counts[0] += n - sum(counts)
    vertices = torch.randperm(2**informative, generator=g)[:num_classes]
    bits = ((vertices.unsqueeze(1) >> torch.arange(informative)) & 1).float()
    centroids = (2 * bits - 1) * class_sep
    xs, ys = [], []
    for c, count in enumerate(counts):
        mixing = 2 * torch.rand(informative, informative, generator=g) - 1
        xs.append(torch.randn(count, informative, generator=g) @ mixing + centroids[c])
        ys.append(torch.full((count,), c, dtype=torch.long))
    x = torch.cat([torch.cat(xs), torch.randn(n, n_features - informative, generator=g)], dim=1)
    order = torch.randperm(n, generator=g)
    return x[order], torch.cat(ys)[order]


def long_tail(y: torch.Tensor, num_classes: int, ratio: float, g: torch.Generator) -> torch.Tensor:
    """Indices of a per-class subsample of y whose class sizes follow the exponential profile."""
    n_max = min(int((y == c).sum()) for c in range(num_classes))
    keep = []
    for c in range(num_classes):
        idx = torch.nonzero(y == c).squeeze(1)
        n_c = max(1, int(n_max * ratio ** (-c / (num_classes - 1))))
        keep.append(idx[torch.randperm(len(idx), generator=g)[:n_c]])
    return torch.cat(keep)


class Imbalanced(ClassificationTask):
    name = "imbalanced"
    primary_metric = "test/macro_f1"

    def __init__(
        self,
        dataset: str = "synthetic",
        imbalance_ratio: float = 100.0,
        num_classes: int = 2,
        n_train: int = 5000,
        n_val: int = 2000,
        n_test: int = 5000,
        n_features: int = 20,
        class_sep: float = 1.0,
        data_dir: str = "data",
        download: bool = True,
        model: str = "mlp",
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        channels: Sequence[int] = (16, 32),
        normalize: str = "standard",
        val_size: int = 5000,
        data_seed: int = 0,
    ):
        if dataset not in DATASETS:
            raise HarnessError(f"task.dataset={dataset!r} is not an imbalanced data set; allowed: {', '.join(DATASETS)}")
        self.dataset = dataset
        self.ratio = check_number(
            "task.imbalance_ratio", imbalance_ratio, 1.0, "a finite number >= 1 (largest class / smallest class)"
        )
        self.hidden, self.channels = check_model(model, hidden, activation, channels)
        self.num_classes = 10 if dataset in IMAGES else check_positive_int("task.num_classes", num_classes)
        if self.num_classes < 2:
            raise HarnessError(f"task.num_classes must be at least 2, got {num_classes}")
        self.minority_class = self.num_classes - 1
        self.sizes = [check_positive_int(f"task.{k}", v) for k, v in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test))]
        self.n_features = check_positive_int("task.n_features", n_features)
        if dataset == "synthetic":
            if 2 ** min(self.n_features, max(2, self.num_classes)) < self.num_classes:
                raise HarnessError(
                    f"task.n_features={n_features} is too few for {self.num_classes} classes: "
                    f"at least {math.ceil(math.log2(self.num_classes))} are needed"
                )
            if min(self.sizes) < self.num_classes:
                raise HarnessError(
                    f"task.n_train, n_val and n_test must each be at least task.num_classes ({self.num_classes}), "
                    f"got {self.sizes}"
                )
        self.class_sep = check_number("task.class_sep", class_sep)
        self.data_dir, self.download = data_dir, check_bool("task.download", download)
        self.model_name, self.normalize, self.activation = model, check_normalize(normalize), activation
        self.val_size = check_positive_int("task.val_size", val_size)
        self.data_seed = check_seed("task.data_seed", data_seed)

    def sources(self) -> list[Path]:
        return mnist_files(self.data_dir, IMAGES[self.dataset]) if self.dataset in IMAGES else []

    def load(self) -> Data:
        if self.dataset in IMAGES:
            return self._load_long_tail()
        n = sum(self.sizes)
        x, y = gaussian_clusters(
            n,
            self.n_features,
            class_shares(self.num_classes, self.ratio),
            self.class_sep,
            torch.Generator().manual_seed(self.data_seed),
        )
        tr, va, te = split_indices(n, self.sizes, self.data_seed)
        mean, std = x[tr].mean(0), x[tr].std(0)
        x = (x - mean) / std
        return Data(Split(x[tr], y[tr]), Split(x[va], y[va]), Split(x[te], y[te]))

    def _load_long_tail(self) -> Data:
        images = IMAGES[self.dataset]
        xtr, ytr, xte, yte = load_mnist(str(self.data_dir), self.download, images)
        g = torch.Generator().manual_seed(self.data_seed)
        n_train = check_split(len(ytr), None, self.val_size)
        tr, va = split_indices(len(ytr), [n_train, self.val_size], self.data_seed)
        tr, va = tr[long_tail(ytr[tr], 10, self.ratio, g)], va[long_tail(ytr[va], 10, self.ratio, g)]
        return Data(
            Split(to_inputs(xtr[tr], self.normalize, images), ytr[tr]),
            Split(to_inputs(xtr[va], self.normalize, images), ytr[va]),
            Split(to_inputs(xte, self.normalize, images), yte),
        )

    def model(self) -> nn.Module:
        if self.dataset in IMAGES:
            return image_model(10, self.model_name, self.hidden, self.activation, self.channels)
        return mlp(self.n_features, self.num_classes, self.hidden, self.activation)
