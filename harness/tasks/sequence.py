"""Sequences: read a row of 1 to ``max_length`` handwritten digits as a digit string.

Each image is a canvas of digits side by side, with a random gap of 0 to ``jitter`` blank columns
before each, so a digit's place is not fixed by its index. Digits come from scikit-learn's bundled
8x8 digits (no download) or from MNIST (28x28, in ``data_dir``); the training, validation and
test sequences are built from disjoint pools of digit images. Labels are the digit strings padded
to ``max_length`` with the class 10 (``PAD``).

The model: a column encoder (convolutions over the image, its height pooled away) then a
convolutional sequence head over the columns, giving frames ``[N, T, 11]`` (10 digits + blank): one
per column, or per 2 or 4 columns (``frame_stride``: at 1 a frame sees 9 columns, a whole 8-pixel
digit but a third of a 28-pixel one; at 4 it sees 26). ``loss=ctc`` reads the frames with torch's
``CTCLoss`` (no alignment needed);
``loss=position_ce`` pools the frames into ``max_length`` equal slots and scores each slot against
the label at that index (it assumes the i-th digit lies in the i-th slot). Each loss decodes its
own way (``decode``); metrics: exact sequence accuracy (primary) and character error rate (edit
distance over label length).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from harness import HarnessError
from harness.tasks import Data, Split, Task, check_choice, check_positive_int, check_seed, split_indices
from harness.tasks.mnist import load_mnist, mnist_files, to_inputs

PAD = 10
DATASETS = ("digits", "mnist")


def edit_distance(a: list[int], b: list[int]) -> int:
    """Levenshtein distance (insertions, deletions, substitutions) between two label lists."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, z in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != z))
    return row[-1]


def labels_of(y: Tensor) -> list[list[int]]:
    return [[int(v) for v in row if v != PAD] for row in y.tolist()]


def sequence_metrics(decoded: list[list[int]], y: Tensor) -> dict[str, Tensor]:
    truth = labels_of(y)
    exact = sum(d == t for d, t in zip(decoded, truth)) / max(1, len(truth))
    errors = sum(edit_distance(d, t) for d, t in zip(decoded, truth))
    cer = errors / max(1, sum(len(t) for t in truth))  # on y's device: the loop stacks every metric in one call
    return {"exact": torch.tensor(float(exact), device=y.device), "cer": torch.tensor(cer, device=y.device)}


def compose(images: Tensor, labels: Tensor, n: int, max_length: int, jitter: int, g: torch.Generator) -> Split:
    """n canvases of 1..max_length digits drawn from (images [M, H, W], labels [M]) with random gaps."""
    m, h, w = images.shape
    width = max_length * (w + jitter)
    x = torch.zeros(n, 1, h, width)
    y = torch.full((n, max_length), PAD, dtype=torch.long)
    lengths = torch.randint(1, max_length + 1, (n,), generator=g)
    picks = torch.randint(0, m, (n, max_length), generator=g)
    gaps = torch.randint(0, jitter + 1, (n, max_length), generator=g)
    for i in range(n):
        col = 0
        for k in range(int(lengths[i])):
            col += int(gaps[i, k])
            x[i, 0, :, col : col + w] = images[picks[i, k]]
            y[i, k] = labels[picks[i, k]]
            col += w
    return Split(x, y)


STRIDES = (1, 2, 4)


class ColumnNet(nn.Module):
    """Convolutions over the image, height pooled away, then 1-D convolutions over the columns.

    ``stride``: image columns per frame (1, 2 or 4, by max-pooling the width). A frame sees 9
    columns at stride 1 (more than an 8-pixel digit), 16 at 2 and 26 at 4 (most of a 28-pixel one). A digit
    spans at least 2 frames at any stride, so CTC always has a frame per digit and a blank between repeats."""

    def __init__(self, height: int, channels: int, classes: int, stride: int = 1):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d((2, 1 if stride == 1 else 2)),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            *([nn.MaxPool2d((1, 2))] if stride == 4 else []),
        )
        self.pool = nn.AvgPool2d((height // 2, 1))
        self.head = nn.Sequential(nn.Conv1d(channels, 2 * channels, 5, padding=2), nn.ReLU(), nn.Conv1d(2 * channels, classes, 1))

    def forward(self, x: Tensor) -> Tensor:
        columns = self.pool(self.encoder(x)).squeeze(2)  # [N, C, W]
        return self.head(columns).transpose(1, 2)  # [N, W, classes]: a frame per column


class Sequence(Task):
    name = "sequence"
    targets = ("sequence",)
    primary_metric = "test/exact"
    num_classes = 10
    needs = ("decode",)

    def __init__(
        self,
        dataset: str = "digits",
        data_dir: str = "data",
        download: bool = True,
        max_length: int = 4,
        jitter: int = 4,
        channels: int = 16,
        frame_stride: int = 1,
        n_train: int = 5000,
        n_val: int = 1000,
        n_test: int = 2000,
        data_seed: int = 0,
    ):
        self.dataset = check_choice("task.dataset", dataset, DATASETS)
        self.data_dir, self.download = data_dir, download
        self.max_length = check_positive_int("task.max_length", max_length)
        if not isinstance(jitter, int) or isinstance(jitter, bool) or jitter < 0:
            raise HarnessError(f"task.jitter must be an integer >= 0 (blank columns before each digit, at most), got {jitter!r}")
        self.jitter = jitter
        self.channels = check_positive_int("task.channels", channels)
        if frame_stride not in STRIDES or isinstance(frame_stride, bool):
            raise HarnessError(
                f"task.frame_stride must be one of {', '.join(map(str, STRIDES))} (image columns per frame), got {frame_stride!r}"
            )
        self.stride = frame_stride
        self.sizes = [check_positive_int(f"task.{k}", v) for k, v in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test))]
        self.data_seed = check_seed("task.data_seed", data_seed)
        self.height = 8 if dataset == "digits" else 28

    def sources(self) -> list[Path]:
        return [] if self.dataset == "digits" else mnist_files(self.data_dir)

    def pools(self) -> list[tuple[Tensor, Tensor]]:
        """Disjoint (images, labels) pools for the training, validation and test sequences."""
        if self.dataset == "digits":
            from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

            x, y = load_digits(return_X_y=True)
            images, labels = torch.as_tensor(x, dtype=torch.float32).reshape(-1, 8, 8) / 16.0, torch.as_tensor(y)
            parts = split_indices(len(labels), [1197, 300, 300], self.data_seed)
            return [(images[i], labels[i]) for i in parts]
        xtr, ytr, xte, yte = load_mnist(str(self.data_dir), self.download)
        held = min(5000, len(ytr) // 6)  # the validation pool: 5,000 of MNIST's 60,000 (a sixth of a smaller copy)
        tr, va = split_indices(len(ytr), [len(ytr) - held, held], self.data_seed)
        unit = lambda imgs: to_inputs(imgs, "unit").squeeze(1)  # noqa: E731  blank columns stay 0
        return [(unit(xtr[tr]), ytr[tr]), (unit(xtr[va]), ytr[va]), (unit(xte), yte)]

    def load(self) -> Data:
        g = torch.Generator().manual_seed(self.data_seed)
        return Data(
            *(compose(imgs, labels, n, self.max_length, self.jitter, g) for (imgs, labels), n in zip(self.pools(), self.sizes))
        )

    def model(self) -> nn.Module:
        return ColumnNet(self.height, self.channels, self.num_classes + 1, self.stride)

    def metrics(self, output: Tensor, y: Tensor, decode=None) -> dict[str, Tensor]:
        return sequence_metrics(decode(output, self.max_length), y)
