"""Your own table: a CSV or Parquet file, one target column, classification or regression.

Read with pandas; numeric feature columns are standardised with the training split's mean and
standard deviation; text and boolean feature columns with at most ``max_categories`` distinct
values are one-hot encoded (categories seen in training; an unseen one encodes as all zeros);
the split into train/val/test is random with ``data_seed``. Classification: the target's distinct
values, sorted, become classes 0..K-1. Regression: the target is standardised with training
statistics, so MSE is in units of its variance. An MLP by default.

With no ``path``, a data set bundled with scikit-learn is written to ``data_dir/tabular/`` as a CSV
and read back through the same code: breast cancer (569 rows, 30 features, 2 classes) for
classification, diabetes (442 rows, 10 features) for regression.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from harness import HarnessError
from harness.metrics import classification_metrics, regression_metrics
from harness.tasks import Data, Split, Task, check_choice, check_fraction, check_positive_int, check_seed, split_indices
from harness.tasks.models import check_model, mlp

KINDS = ("classification", "regression")
BUNDLED = {"classification": ("breast_cancer", "target"), "regression": ("diabetes", "target")}


def bundled_csv(data_dir: str | Path, kind: str) -> Path:
    """The offline default for ``kind``, written once under data_dir/tabular/."""
    name, target = BUNDLED[kind]
    path = Path(data_dir) / "tabular" / f"{name}.csv"
    if not path.exists():
        from sklearn import datasets

        frame = getattr(datasets, f"load_{name}")(as_frame=True).frame
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".csv.tmp")
        frame.rename(columns={frame.columns[-1]: target}).to_csv(tmp, index=False)
        tmp.replace(path)  # whole or not at all: a parallel sweep never reads half a file
    return path


def read_table(path: Path):
    import pandas as pd

    if not path.exists():
        raise HarnessError(f"task.path={str(path)!r} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".csv", ".tsv", ".txt"):
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    except Exception as e:  # noqa: BLE001  a file pandas cannot parse: one line
        raise HarnessError(f"task.path={str(path)!r} could not be read: {str(e).splitlines()[0]}") from None
    raise HarnessError(f"task.path={str(path)!r}: unknown file type {suffix!r}; allowed: .csv, .tsv, .txt, .parquet, .pq")


class Tabular(Task):
    name = "tabular"

    def __init__(
        self,
        path: str | None = None,
        target: str | None = None,
        features: Sequence[str] | None = None,
        kind: str = "classification",
        data_dir: str = "data",
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        max_categories: int = 50,
        missing: str = "error",
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        n_train: int | None = None,
        data_seed: int = 0,
    ):
        self.kind = check_choice("task.kind", kind, KINDS)
        self.missing = check_choice("task.missing", missing, ("error", "drop"))
        if path is None:
            self.path, default_target = bundled_csv(data_dir, self.kind), BUNDLED[self.kind][1]
            self.target = target or default_target
        else:
            if not target:
                raise HarnessError("task.target is required with task.path: the name of the column to predict")
            self.path, self.target = Path(path).expanduser(), target
        self.features = list(features) if features is not None else None
        self.val_fraction = check_fraction("task.val_fraction", val_fraction)
        self.test_fraction = check_fraction("task.test_fraction", test_fraction)
        if self.val_fraction + self.test_fraction >= 0.9:
            raise HarnessError(
                f"task.val_fraction + task.test_fraction must leave at least 10% to train, got {val_fraction} + {test_fraction}"
            )
        self.max_categories = check_positive_int("task.max_categories", max_categories)
        self.hidden, _ = check_model("mlp", hidden, activation, (1, 1))
        self.activation = activation
        self.n_train = None if n_train is None else check_positive_int("task.n_train", n_train)
        self.data_seed = check_seed("task.data_seed", data_seed)
        self.targets = ("index", "onehot") if self.kind == "classification" else ("real",)
        self.primary_metric, self.mode = ("test/accuracy", "max") if self.kind == "classification" else ("test/mse", "min")

    # -------------------------------------------------------------- reading and encoding

    def _frame(self):
        frame = read_table(self.path)
        columns = [str(c) for c in frame.columns]
        frame.columns = columns
        if self.target not in columns:
            raise HarnessError(
                f"task.target={self.target!r} is not a column of {self.path.name}; columns: "
                f"{', '.join(columns[:30])}{' ...' if len(columns) > 30 else ''}"
            )
        features = self.features if self.features is not None else [c for c in columns if c != self.target]
        unknown = [c for c in features if c not in columns]
        if unknown:
            raise HarnessError(
                f"task.features names {', '.join(map(repr, unknown))}, not columns of {self.path.name}; "
                f"columns: {', '.join(columns[:30])}"
            )
        if self.target in features:
            raise HarnessError(f"task.features includes the target column {self.target!r}")
        if not features:
            raise HarnessError(f"{self.path.name} has no feature columns besides the target {self.target!r}")
        frame = frame[features + [self.target]]
        holes = frame.isna().sum()
        holes = holes[holes > 0]
        if len(holes):
            if self.missing == "error":
                raise HarnessError(
                    f"{self.path.name} has missing values in {', '.join(f'{c} ({n})' for c, n in holes.items())}; "
                    "fill them, or task.missing=drop to drop those rows"
                )
            frame = frame.dropna()
        if len(frame) < 10:
            raise HarnessError(f"{self.path.name} has {len(frame)} usable rows; at least 10 are needed to split it")
        return frame, features

    def _encode(self, frame, features, train_rows):
        """Feature matrix [N, F] (float) and the names of its columns."""
        import pandas as pd

        blocks, names = [], []
        for col in features:
            values = frame[col]
            if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
                cats = sorted(values.iloc[train_rows].astype(str).unique())
                if len(cats) > self.max_categories:
                    raise HarnessError(
                        f"feature column {col!r} is not numeric and has {len(cats)} distinct values in "
                        f"training, more than task.max_categories={self.max_categories} to one-hot encode; "
                        "drop it (task.features=[...]) or encode it yourself"
                    )
                as_text = values.astype(str)
                for c in cats:
                    blocks.append(torch.tensor((as_text == c).to_numpy(), dtype=torch.float32))
                    names.append(f"{col}={c}")
            else:
                x = torch.tensor(values.to_numpy(dtype="float64"), dtype=torch.float32)
                if not bool(torch.isfinite(x).all()):
                    bad = int((~torch.isfinite(x)).sum())
                    raise HarnessError(
                        f"feature column {col!r} of {self.path.name} holds {bad} value(s) that are not finite "
                        "numbers in float32 (inf, or beyond +-3.4e38); fix or drop them"
                    )
                mean, std = x[train_rows].mean(), x[train_rows].std()
                blocks.append((x - mean) / (std if std > 0 else 1.0))
                names.append(col)
        return torch.stack(blocks, 1), names

    def _labels(self, frame, train_rows):
        import pandas as pd

        y = frame[self.target]
        if self.kind == "classification":
            classes = sorted(y.astype(str).unique())
            if len(classes) < 2:
                raise HarnessError(
                    f"task.target={self.target!r} has one class ({classes[0]!r}); classification needs "
                    "at least two (or task.kind=regression for a number)"
                )
            self.classes = classes
            index = {c: i for i, c in enumerate(classes)}
            return torch.tensor([index[v] for v in y.astype(str)], dtype=torch.long)
        if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
            raise HarnessError(
                f"task.target={self.target!r} is not numeric, so it cannot be a regression target "
                "(task.kind=classification for labels)"
            )
        t = torch.tensor(y.to_numpy(dtype="float64"), dtype=torch.float32)
        if not bool(torch.isfinite(t).all()):
            raise HarnessError(
                f"task.target={self.target!r} holds {int((~torch.isfinite(t)).sum())} value(s) that are not "
                "finite numbers in float32 (inf, or beyond +-3.4e38); fix or drop them"
            )
        mean, std = t[train_rows].mean(), t[train_rows].std()
        return ((t - mean) / (std if std > 0 else 1.0)).unsqueeze(1)

    def sources(self) -> list[Path]:
        return [self.path]

    def load(self) -> Data:
        frame, features = self._frame()
        n = len(frame)
        n_val, n_test = max(1, round(self.val_fraction * n)), max(1, round(self.test_fraction * n))
        tr, va, te = split_indices(n, [n - n_val - n_test, n_val, n_test], self.data_seed)
        tr = tr[: self.n_train]  # None: all of it
        y = self._labels(frame, tr.numpy())  # the target's problems first: they are the likelier mistake
        x, self.feature_names = self._encode(frame, features, tr.numpy())
        self.num_classes = len(self.classes) if self.kind == "classification" else 0
        self.n_features = x.shape[1]
        return Data(Split(x[tr], y[tr]), Split(x[va], y[va]), Split(x[te], y[te]))

    def model(self) -> nn.Module:
        return mlp(self.n_features, self.num_classes or 1, self.hidden, self.activation)

    def metrics(self, output: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.kind == "classification":
            return classification_metrics(output, y, None)
        return regression_metrics(output, y)
