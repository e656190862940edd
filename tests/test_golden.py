"""The golden fixture store (tests/golden/README.md): a store recorded before the package redesign
still reads, and its report's summary.csv and tuned.csv come out byte for byte as recorded."""

import gzip
import shutil

from harness.report.__main__ import main
from tests.conftest import ROOT

GOLDEN = ROOT / "tests" / "golden"


def test_the_golden_store_reports_byte_identical_tables(tmp_path):
    db = tmp_path / "mlflow.db"
    with gzip.open(GOLDEN / "store.db.gz") as src, db.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    out = tmp_path / "report"
    assert main(["golden", "--tracking-uri", f"sqlite:///{db}", "--out", str(out), "--no-log"]) == 0
    for name in ("summary.csv", "tuned.csv"):
        assert (out / name).read_bytes() == (GOLDEN / name).read_bytes(), f"{name} differs from tests/golden/{name}"


def test_a_margin_given_to_the_report_is_used_and_called_post_hoc(tmp_path):
    import json

    import pandas as pd
    import pytest

    db = tmp_path / "mlflow.db"
    with gzip.open(GOLDEN / "store.db.gz") as src, db.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    out = tmp_path / "report"
    assert main(["golden", "--tracking-uri", f"sqlite:///{db}", "--out", str(out), "--no-log", "--margin", "5%"]) == 0
    tuned = pd.read_csv(out / "tuned.csv")
    for _, part in tuned.groupby("problem"):
        reference = part[part["rank"] == 1].iloc[0]
        assert part["margin"].tolist() == pytest.approx([0.05 * reference["test_mean"]] * len(part))
    assert json.loads((out / "protocol.json").read_text())["margin_post_hoc"] is True
    md = (out / "report.md").read_text()
    assert "margin 5% (given to the report after the runs (post hoc" in md
    assert "regression: what moves test/mse" in md and "residual (interactions and noise)" in md  # factor importance
    for name in ("regression_importance.png", "regression_parallel.png"):
        assert (out / name).stat().st_size > 1000, name
    assert main(["golden", "--tracking-uri", f"sqlite:///{db}", "--out", str(out), "--no-log", "--margin", "-1"]) == 2
