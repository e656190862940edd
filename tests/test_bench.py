"""The benchmark suite's --quick mode completes and writes its files (a smoke test: targets are not asserted)."""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, SHARED_DATA, write_idx_mnist

pytestmark = pytest.mark.slow


def test_bench_quick_writes_its_table(tmp_path):
    data = SHARED_DATA if (SHARED_DATA / "MNIST" / "raw" / "train-images-idx3-ubyte").exists() \
        else write_idx_mnist(tmp_path / "data", n_train=16000, n_test=1000)
    out = subprocess.run([sys.executable, "-m", "harness.bench", "--quick", "--data-dir", str(data), "--out", str(tmp_path / "bench")],
                         capture_output=True, text=True, timeout=900, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "bench" / "bench.json").read_text())
    keys = [r["key"] for r in report["rows"]]
    assert keys == ["loop", "tracking", "data_path", "threads", "sweep_regression", "startup", "memory", "quality",
                    "sweep_overhead", "stacked_study", "stacked_mnist", "whole_process"]
    for r in report["rows"]:
        assert r["ratio"]["median"] > 0, r
    assert report["machine"]["cores"] and report["machine"]["torch"]
    md = (tmp_path / "bench" / "bench.md").read_text()
    assert "| measure | result | target | met | notes |" in md and "loop efficiency" in md
    assert "| measure | result |" in out.stdout  # the table is printed too


def test_bench_refuses_a_missing_data_dir(tmp_path):
    out = subprocess.run([sys.executable, "-m", "harness.bench", "--quick", "--data-dir", str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 2 and out.stderr.startswith("error: MNIST is not in")
