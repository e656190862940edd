"""Tasks: each owns its data (preloaded tensors), model, metrics and natural loss.

A task is built from ``conf/task/NAME.yaml`` with ``hydra.utils.instantiate``; the harness then
calls ``load()`` once, moves the tensors to the device, and asks for ``model()`` and ``metrics()``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from harness import HarnessError
from harness.metrics import classification_metrics, regression_metrics

_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> sha256 prefix: each file hashed once per process


def file_digests(paths: list[Path]) -> dict[str, str]:
    """{file name: the first 16 hex digits of its SHA-256} for the files that exist among ``paths``."""
    import hashlib

    out = {}
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _DIGESTS:
            h = hashlib.sha256()
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            _DIGESTS[key] = h.hexdigest()[:16]
        out[path.name] = _DIGESTS[key]
    return out


@dataclass
class Split:
    x: Tensor
    y: Tensor  # class indices [N] (long) or real targets [N, 1] (float)

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Data:
    train: Split
    val: Split
    test: Split

    def to(self, device) -> Data:
        return Data(*(Split(s.x.to(device), s.y.to(device)) for s in (self.train, self.val, self.test)))


class Task:
    name: str = "task"
    targets: tuple[str, ...] = ()  # target kinds the task can feed a loss (see harness.losses)
    primary_metric: str = ""  # e.g. "test/accuracy"
    mode: str = "max"  # whether the primary metric is better high ("max") or low ("min")
    num_classes: int = 0
    needs: tuple[str, ...] = ()  # more that metrics() takes: "gallery" (the training set's outputs and labels,
    # at evaluation), "decode" (the loss's decoder of outputs into labels)

    def load(self) -> Data:
        raise NotImplementedError

    def sources(self) -> list[Path]:
        """The files its data is read from (each run logs their hashes: ``file_digests``); none for generated data."""
        return []

    def model(self) -> nn.Module:
        raise NotImplementedError

    def metrics(self, output: Tensor, y: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    own_step: bool = False  # True: the task's step() is not the one below (two players, ...)

    def step(self, model: nn.Module, loss_fn: nn.Module, x: Tensor, y: Tensor, optimizer) -> tuple[Tensor, Tensor]:
        """One optimizer step on a batch; returns (the batch's loss, the model's output). A task that
        trains differently (a GAN's two players) overrides it and sets ``own_step``. An optimizer that
        needs a closure (LBFGS) gets one that re-evaluates the batch; the first evaluation's loss and
        output are the step's."""
        from harness.optimizers import needs_closure

        if needs_closure(optimizer):
            first: list[tuple[Tensor, Tensor]] = []

            def closure() -> Tensor:
                optimizer.zero_grad(set_to_none=True)
                out = model(x)
                loss = loss_fn(out, y)
                loss.backward()
                if not first:
                    first.append((loss, out))
                return loss

            optimizer.step(closure)
            return first[0]
        out = model(x)
        loss = loss_fn(out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss, out

    def param_groups(self, model: nn.Module):
        """What the optimizer is built on: the model's parameters, or param groups (one per player)."""
        return model.parameters()


class ClassificationTask(Task):
    targets = ("index", "onehot")
    minority_class: int | None = None  # set by imbalanced tasks: adds balanced accuracy, recall, AP

    def metrics(self, output: Tensor, y: Tensor) -> dict[str, Tensor]:
        return classification_metrics(output, y, self.minority_class)


class RegressionTask(Task):
    targets = ("real",)
    primary_metric = "test/mse"
    mode = "min"

    def metrics(self, output: Tensor, y: Tensor) -> dict[str, Tensor]:
        return regression_metrics(output, y)


def split_indices(n: int, sizes: list[int], seed: int) -> list[Tensor]:
    """A seeded random partition of range(n) into consecutive chunks of the given sizes."""
    if sum(sizes) > n:
        raise HarnessError(f"the data set has {n} samples, fewer than the {sum(sizes)} asked for ({sizes})")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return list(torch.split(perm[: sum(sizes)], sizes))


def flip_labels(y: Tensor, fraction: float, num_classes: int, seed: int) -> Tensor:
    """A copy of y with round(fraction * n) labels, chosen at random, replaced by another class drawn
    uniformly (symmetric label noise; seeded by the data seed, so every run sees the same flips)."""
    if fraction <= 0:
        return y
    g = torch.Generator().manual_seed(seed + 7919)
    n = round(fraction * len(y))
    which = torch.randperm(len(y), generator=g)[:n]
    shift = torch.randint(1, num_classes, (n,), generator=g)
    out = y.clone()
    out[which] = (y[which] + shift) % num_classes
    return out


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_fraction(name: str, value: float) -> float:
    if not _is_number(value) or not 0.0 <= value < 1.0:
        raise HarnessError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def check_number(name: str, value, low: float = 0.0, what: str = "a finite number >= 0") -> float:
    """A finite number >= low (NaN and infinity refused)."""
    if not _is_number(value) or value < low:
        raise HarnessError(f"{name} must be {what}, got {value!r}")
    return float(value)


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise HarnessError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_choice(name: str, value, allowed) -> str:
    if value not in allowed:
        raise HarnessError(f"{name}={value!r} is unknown; allowed: {', '.join(allowed)}")
    return value


def check_widths(name: str, value, count: int | None = None) -> list[int]:
    """A list of layer widths: positive integers (exactly ``count`` of them when given)."""
    widths = (
        list(value) if isinstance(value, (list, tuple)) or hasattr(value, "__iter__") and not isinstance(value, str) else None
    )
    if (
        widths is None
        or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths)
        or (count is not None and len(widths) != count)
    ):
        shape = f"a list of {count} positive integers" if count else "a list of positive integers (e.g. [256] or [64, 64])"
        raise HarnessError(f"{name} must be {shape}, got {value!r}")
    return widths


def check_seed(name: str, value) -> int:
    from harness.config.values import check_seed as check

    return check(name, value)


def check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise HarnessError(f"{name} must be true or false, got {value!r}")
    return value
