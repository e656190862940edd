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
