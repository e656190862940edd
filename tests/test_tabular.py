"""task=tabular (issue 11): a user's CSV or Parquet file, classification or regression, with clear
errors for what it cannot use; the bundled scikit-learn sets as the offline default."""

import math

import numpy as np
import pandas as pd
import pytest

from harness import HarnessError
from harness.engine.build import build
from harness.engine.job import compose
from harness.engine.run import run
from tests.conftest import mlflow_runs, run_cli


def config(tmp_path, *overrides):
    return compose("tracking.enabled=false", "progress=false", "epochs=3", f"data_dir={tmp_path}", *overrides)


def table(n=200, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n) * 100 + 5
    colour = rng.choice(["red", "green", "blue"], size=n)
    label = np.where(x1 + (colour == "red") > 0.5, "yes", "no")
    return pd.DataFrame(
        {
            "x1": x1,
            "x2": x2,
            "colour": colour,
            "id": [f"row{i}" for i in range(n)],
            "label": label,
            "price": 3 * x1 + rng.normal(size=n),
        }
    )


@pytest.mark.parametrize("task, metric", [("tabular", "test/accuracy"), ("tabular_regression", "test/mse")])
def test_the_bundled_default_trains_offline(tmp_path, task, metric):
    final = run(config(tmp_path, f"task={task}")).final
    assert math.isfinite(final[metric])
    assert (tmp_path / "tabular" / ("breast_cancer.csv" if task == "tabular" else "diabetes.csv")).exists()
    if task == "tabular":
        assert final[metric] > 0.85  # breast cancer is easy: a broken encoder or label map would not get here


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_a_users_file_with_a_text_column_and_a_label(tmp_path, suffix):
    path = tmp_path / f"mine.{suffix}"
    frame = table()
    frame.to_csv(path, index=False) if suffix == "csv" else frame.to_parquet(path)
    cfg = config(tmp_path, "task=tabular", f"task.path={path}", "task.target=label", "task.features=[x1,x2,colour]")
    job = build(cfg, {"task": "tabular"})
    assert job.parts.task.feature_names == ["x1", "x2", "colour=blue", "colour=green", "colour=red"]
    assert job.parts.task.classes == ["no", "yes"] and job.parts.task.num_classes == 2
    x = job.parts.data.train.x
    assert abs(float(x[:, 1].mean())) < 1e-5 and abs(float(x[:, 1].std()) - 1) < 1e-5  # standardised on training rows
    assert sorted(set(x[:, 2:].sum(1).tolist())) == [1.0]  # exactly one colour per row
    assert (
        len(job.parts.data.train) + len(job.parts.data.val) + len(job.parts.data.test) == 200 and len(job.parts.data.test) == 40
    )
    final = run(
        compose(
            "tracking.enabled=false",
            "progress=false",
            "epochs=30",
            "task=tabular",
            f"task.path={path}",
            "task.target=label",
            "task.features=[x1,x2,colour]",
            "optimizer.lr=0.01",
        )
    ).final
    assert final["test/accuracy"] > 0.8


def test_regression_on_a_users_column(tmp_path):
    path = tmp_path / "mine.csv"
    table().to_csv(path, index=False)
    job = build(
        config(tmp_path, "task=tabular_regression", f"task.path={path}", "task.target=price", "task.features=[x1,colour]"),
        {"task": "tabular_regression"},
    )
    y = job.parts.data.train.y
    assert y.shape[1] == 1 and abs(float(y.mean())) < 1e-5  # standardised with training statistics


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["task.path={d}/none.csv", "task.target=label"], "does not exist"),
        (["task.path={d}/t.csv"], "task.target is required with task.path"),
        (["task.path={d}/t.csv", "task.target=nope"], "task.target='nope' is not a column of t.csv; columns: x1, x2, colour"),
        (["task.path={d}/t.csv", "task.target=label", "task.features=[x1,zz]"], "task.features names 'zz', not columns"),
        (["task.path={d}/t.csv", "task.target=label"], "feature column 'id' is not numeric and has 120 distinct values"),
        (["task.path={d}/one.csv", "task.target=label"], "has one class ('no')"),
        (["task.path={d}/holes.csv", "task.target=label"], "has missing values in x1 (3)"),
        (["task.path={d}/t.txt.gz", "task.target=label"], "unknown file type '.gz'"),
    ],
)
def test_bad_tables_are_refused_with_one_line(tmp_path, overrides, message):
    frame = table()
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.assign(label="no").to_csv(tmp_path / "one.csv", index=False)
    frame.assign(x1=[np.nan] * 3 + list(frame.x1[3:])).to_csv(tmp_path / "holes.csv", index=False)
    (tmp_path / "t.txt.gz").write_bytes(b"")
    cfg = config(tmp_path, "task=tabular", *(o.format(d=tmp_path) for o in overrides))
    with pytest.raises(HarnessError, match=None) as err:
        build(cfg, {"task": "tabular"})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_rows_can_be_dropped_and_text_targets_are_not_regression(tmp_path):
    frame = table()
    frame.assign(x1=[np.nan] * 3 + list(frame.x1[3:])).to_csv(tmp_path / "holes.csv", index=False)
    job = build(
        config(
            tmp_path,
            "task=tabular",
            f"task.path={tmp_path}/holes.csv",
            "task.target=label",
            "task.features=[x1,x2]",
            "task.missing=drop",
        ),
        {"task": "tabular"},
    )
    assert len(job.parts.data.train) + len(job.parts.data.val) + len(job.parts.data.test) == 197
    with pytest.raises(HarnessError, match="is not numeric, so it cannot be a regression target"):
        build(
            config(
                tmp_path, "task=tabular_regression", f"task.path={tmp_path}/holes.csv", "task.target=label", "task.features=[x2]"
            ),
            {"task": "tabular_regression"},
        )


def test_a_bad_table_from_the_command_line_is_one_line_and_no_run(tmp_path):
    table().to_csv(tmp_path / "t.csv", index=False)
    out = run_cli("task=tabular", f"task.path={tmp_path}/t.csv", "task.target=label", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: feature column 'id' is not numeric and has 120 distinct values in training, "
        "more than task.max_categories=50 to one-hot encode; drop it (task.features=[...]) "
        "or encode it yourself"
    ]
    _, runs = mlflow_runs(tmp_path, "tabular")
    assert runs == []


def test_a_run_logs_the_hash_of_the_data_file_it_read(tmp_path):
    import hashlib
    import json

    path = tmp_path / "t.csv"
    table().drop(columns=["id"]).to_csv(path, index=False)
    out = run_cli("task=tabular", f"task.path={path}", "task.target=label", "epochs=1", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    _, (run_,) = mlflow_runs(tmp_path, "tabular")
    assert json.loads(run_.data.tags["data_files"]) == {"t.csv": hashlib.sha256(path.read_bytes()).hexdigest()[:16]}
