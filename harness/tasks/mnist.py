"""MNIST through ``torchvision.datasets.MNIST``, converted once into normalised tensors.

The IDX files are read from ``<data_dir>/MNIST/raw`` (downloaded there when missing and
``download`` is true). The validation split is drawn from the 60k training images; the test split
is the official 10k.
"""
from __future__ import annotations

import contextlib
import functools
import io
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from harness import HarnessError
from harness.tasks import ClassificationTask, Data, Split, check_positive_int, split_indices
from harness.tasks.models import mlp, small_cnn

RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
MEAN, STD = 0.1307, 0.3081  # of the training pixels scaled to [0, 1]
NORMALIZATIONS = ("standard", "unit", "none")
MODELS = ("mlp", "cnn")


@functools.lru_cache(maxsize=2)  # a sweep's jobs in one process read the files once
def load_mnist(data_dir: str | Path, download: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train images uint8 [60000, 28, 28], train labels, test images, test labels)."""
    from torchvision.datasets import MNIST

    root = Path(data_dir).expanduser()
    raw = root / "MNIST" / "raw"
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            train = MNIST(str(root), train=True, download=download)
            test = MNIST(str(root), train=False, download=download)
    except Exception as e:  # torchvision raises RuntimeError or URLError/OSError when it cannot fetch
        why = "download=false" if not download else f"the download failed: {str(e).splitlines()[0][:120]}"
        raise HarnessError(f"MNIST is not in {raw} and {why}. Put the four IDX files ({', '.join(RAW_FILES)}) "
                           f"there, or set data_dir to the folder that holds MNIST/raw") from None
    return train.data, train.targets, test.data, test.targets


def to_inputs(images: torch.Tensor, normalize: str) -> torch.Tensor:
    """uint8 [N, 28, 28] -> float [N, 1, 28, 28]: standard (mean/std), unit ([0, 1]) or none (0..255)."""
    x = images.float().unsqueeze(1)
    if normalize == "none":
        return x
    x = x / 255.0
    return (x - MEAN) / STD if normalize == "standard" else x


def check_model(model: str, normalize: str) -> None:
    if model not in MODELS:
        raise HarnessError(f"task.model={model!r} is unknown; allowed: {', '.join(MODELS)}")
    if normalize not in NORMALIZATIONS:
        raise HarnessError(f"task.normalize={normalize!r} is unknown; allowed: {', '.join(NORMALIZATIONS)}")


class MNIST(ClassificationTask):
    name = "mnist"
    num_classes = 10
    primary_metric = "test/accuracy"

    def __init__(self, data_dir: str = "data", download: bool = True, model: str = "mlp", hidden: Sequence[int] = (256,),
                 activation: str = "relu", channels: Sequence[int] = (16, 32), normalize: str = "standard",
                 val_size: int = 5000, n_train: int | None = None, data_seed: int = 0):
        check_model(model, normalize)
        self.data_dir, self.download, self.model_name, self.normalize = data_dir, bool(download), model, normalize
        self.hidden, self.activation, self.channels = list(hidden), activation, list(channels)
        self.val_size = 0 if val_size == 0 else check_positive_int("task.val_size", val_size)  # 0: validate on test
        self.n_train = None if n_train is None else check_positive_int("task.n_train", n_train)
        self.data_seed = int(data_seed)

    def load(self) -> Data:
        xtr, ytr, xte, yte = load_mnist(str(self.data_dir), self.download)
        n_train = self.n_train or len(ytr) - self.val_size
        tr, va = split_indices(len(ytr), [n_train, self.val_size], self.data_seed)
        # index the uint8 images before converting: a float copy of all 60k would cost ~190 MB more at peak
        test = Split(to_inputs(xte, self.normalize), yte)
        val = test if self.val_size == 0 else Split(to_inputs(xtr[va], self.normalize), ytr[va])
        return Data(Split(to_inputs(xtr[tr], self.normalize), ytr[tr]), val, test)

    def model(self) -> nn.Module:
        if self.model_name == "cnn":
            return small_cnn(self.num_classes, self.channels, self.hidden[0] if self.hidden else 128)
        return mlp(28 * 28, self.num_classes, self.hidden, self.activation)
