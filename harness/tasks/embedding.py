"""Metric learning: map images to an embedding where same-class images lie close together.

The model is an encoder (an MLP or the small CNN) to ``dim`` features, the embedding being those
features L2-normalised (by default), and a linear classifier head on the features; its output is ``[N, dim + C]``, the embedding
then the head's logits. Metric-learning losses (``harness.losses_metric``) use the embedding, the
cross-entropy baseline (``loss=ce_head``) the logits, so every loss trains the same network and
is judged on the same embedding. Metrics: 1-nearest-neighbour accuracy of a split's embeddings
against the training set's (primary), and leave-one-out recall@1 and MAP@R within the split.

Data: ``digits``, scikit-learn's bundled 8x8 digits (1,797 images; no download), or ``mnist``
(the IDX files in ``data_dir``, as ``task=mnist`` reads them).

Held-out classes (``held_out`` k > 0): the last k classes never reach training or validation; the test set is
every image of those classes, and is scored by retrieval within it (MAP@R primary, recall@1): how well the
embedding separates kinds it never saw, the similarity task metric learning is for.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness import HarnessError
from harness.metrics import nearest_label_accuracy, retrieval_metrics
from harness.tasks import Data, Split, Task, check_bool, check_choice, check_positive_int, check_seed, split_indices
from harness.tasks.mnist import check_split, load_mnist, mnist_files, to_inputs
from harness.tasks.models import check_model, mlp, small_cnn

DATASETS = ("digits", "mnist")


class EmbeddingNet(nn.Module):
    """encoder -> features; returns [embedding | logits]: the features L2-normalised (when asked) as the
    embedding, and a linear head's logits on the features themselves (a classifier's usual head)."""

    def __init__(self, encoder: nn.Module, dim: int, num_classes: int, l2_normalize: bool):
        super().__init__()
        self.encoder, self.head, self.l2_normalize = encoder, nn.Linear(dim, num_classes), l2_normalize

    def forward(self, x: Tensor) -> Tensor:
        features = self.encoder(x)
        e = F.normalize(features, dim=1) if self.l2_normalize else features
        return torch.cat([e, self.head(features)], dim=1)


class Embedding(Task):
    name = "embedding"
    targets = ("embedding",)
    primary_metric = "test/knn_accuracy"
    num_classes = 10
    needs = ("gallery",)  # evaluation compares a split's embeddings with the training set's

    def __init__(
        self,
        dataset: str = "digits",
        data_dir: str = "data",
        download: bool = False,
        dim: int = 32,
        model: str = "mlp",
        hidden: Sequence[int] = (256,),
        activation: str = "relu",
        channels: Sequence[int] = (16, 32),
        l2_normalize: bool = True,
        val_size: int | None = None,
        n_train: int | None = None,
        data_seed: int = 0,
        held_out: int = 0,
    ):
        self.dataset = check_choice("task.dataset", dataset, DATASETS)
        if isinstance(held_out, bool) or not isinstance(held_out, int) or not 0 <= held_out <= 8:
            raise HarnessError(f"task.held_out must be a number of classes from 0 to 8 (of 10), got {held_out!r}")
        self.held_out, self.cut = held_out, self.num_classes - held_out  # classes >= cut are held out
        if held_out:
            self.primary_metric = "test/map_at_r"  # the test set's classes are not in the training gallery
        self.hidden, self.channels = check_model(model, hidden, activation, channels)
        if model == "cnn" and dataset != "mnist":
            raise HarnessError("task.model=cnn needs 28x28 images: use it with task.dataset=mnist")
        self.dim = check_positive_int("task.dim", dim)
        self.model_name, self.activation = model, activation
        self.data_dir, self.download = data_dir, check_bool("task.download", download)
        self.l2_normalize = check_bool("task.l2_normalize", l2_normalize)
        self.val_size = None if val_size is None else check_positive_int("task.val_size", val_size)
        self.n_train = None if n_train is None else check_positive_int("task.n_train", n_train)
        if self.n_train == 1:
            raise HarnessError("task.n_train must be at least 2: the inputs are standardised by the training set's std")
        self.data_seed = check_seed("task.data_seed", data_seed)

    def sources(self) -> list[Path]:
        return [] if self.dataset == "digits" else mnist_files(self.data_dir)

    def load(self) -> Data:
        data = self._load()
        if not self.held_out:
            return data
        seen = [Split(s.x[s.y < self.cut], s.y[s.y < self.cut]) for s in (data.train, data.val)]
        parts = (data.train, data.val, data.test)  # every image of a held-out class
        test = Split(torch.cat([s.x[s.y >= self.cut] for s in parts]), torch.cat([s.y[s.y >= self.cut] for s in parts]))
        return Data(seen[0], seen[1], test)

    def _load(self) -> Data:
        if self.dataset == "digits":
            from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

            x, y = load_digits(return_X_y=True)
            x = torch.as_tensor(x, dtype=torch.float32) / 16.0
            y = torch.as_tensor(y, dtype=torch.long)
            val, test = self.val_size or 300, 400
            n_train = self.n_train or len(y) - val - test
            tr, va, te = split_indices(len(y), [n_train, val, test], self.data_seed)
            mean, std = x[tr].mean(0), x[tr].std(0).clamp_min(1e-3)
            part = lambda i: Split((x[i] - mean) / std, y[i])  # noqa: E731
            return Data(part(tr), part(va), part(te))
        xtr, ytr, xte, yte = load_mnist(str(self.data_dir), self.download)
        val = self.val_size or 5000
        n_train = check_split(len(ytr), self.n_train, val)
        tr, va = split_indices(len(ytr), [n_train, val], self.data_seed)
        return Data(
            Split(to_inputs(xtr[tr], "standard"), ytr[tr]),
            Split(to_inputs(xtr[va], "standard"), ytr[va]),
            Split(to_inputs(xte, "standard"), yte),
        )

    def model(self) -> nn.Module:
        if self.model_name == "cnn":
            encoder = small_cnn(self.dim, self.channels, self.hidden[0] if self.hidden else 128)
        else:
            encoder = mlp(64 if self.dataset == "digits" else 28 * 28, self.dim, self.hidden, self.activation)
        return EmbeddingNet(encoder, self.dim, self.num_classes, self.l2_normalize)

    def metrics(self, output: Tensor, y: Tensor, gallery: tuple[Tensor, Tensor] | None = None) -> dict[str, Tensor]:
        emb = output[:, : self.dim]
        out = retrieval_metrics(emb, y)
        if gallery is not None and not bool((y >= self.cut).any()):  # held-out classes have no neighbours in the gallery
            out["knn_accuracy"] = nearest_label_accuracy(emb, y, gallery[0][:, : self.dim], gallery[1])
        return out
