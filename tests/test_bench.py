"""The benchmark suite's --quick mode completes and writes its files (a smoke test: targets are not asserted)."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, SHARED_DATA, write_idx_mnist


@pytest.mark.slow
@pytest.mark.extended  # minutes each: CI runs them after the default suite (pytest -m extended)
@pytest.mark.parametrize(
    "part, keys",
    [
        ("loop", ["loop", "tracking", "data_path", "threads", "sweep_regression", "startup", "memory", "quality"]),
        ("sweeps", ["sweep_overhead", "stacked_study", "stacked_mnist", "whole_process", "fresh_store", "stacked_conv"]),
        ("cost", ["cost_tracked", "cost_launchers", "cost_batched", "cost_eval", "cost_eval_wide"]),
    ],
)  # two tests: pytest -n 2 runs them side by side
def test_bench_quick_writes_its_table(tmp_path, part, keys):
    data = (
        SHARED_DATA
        if (SHARED_DATA / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()
        else write_idx_mnist(tmp_path / "data", n_train=16000, n_test=1000)
    )
    scratch = tmp_path / "tmp"  # where the bench makes its work folder (stores, sweep folders)
    scratch.mkdir()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.bench",
            "--quick",
            "--only",
            part,
            "--data-dir",
            str(data),
            "--out",
            str(tmp_path / "bench"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(scratch)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert not [p.name for p in scratch.iterdir() if p.name.startswith("harness-bench-")]  # its work folder is removed
    report = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert [r["key"] for r in report["rows"]] == keys and report["complete"]
    for r in report["rows"]:
        assert r["ratio"]["median"] > 0, r
    assert report["machine"]["cores"] and report["machine"]["torch"]
    md = (tmp_path / "bench" / "bench.md").read_text()
    assert "| measure | result | target | met | notes |" in md and "Incomplete" not in md
    assert {"loop": "loop efficiency", "sweeps": "per-job overhead", "cost": "tracked / untracked"}[part] in md
    assert "| measure | result |" in out.stdout  # the table is printed too


@pytest.mark.slow
def test_bench_refuses_a_missing_data_dir(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "harness.bench", "--quick", "--data-dir", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 2 and out.stderr.startswith("error: MNIST is not in")


@pytest.mark.slow
def test_bench_only_names_its_parts_and_refuses_others(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "harness.bench", "--only", "loop,bogus"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "error: --only 'loop,bogus': allowed parts are loop, sweeps, overhead, outliers, mnist12, "
        "whole, fresh, conv, cost, tracked, launchers, batched, eval, eval_wide, grid, scaling"
    )


@pytest.mark.slow
def test_a_stopped_bench_says_so_in_one_line(tmp_path):
    import signal
    import time

    data = (
        SHARED_DATA if (SHARED_DATA / "MNIST" / "raw").is_dir() else write_idx_mnist(tmp_path / "data", n_train=2000, n_test=500)
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.bench", "--quick", "--only", "tracked", "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    time.sleep(8)  # inside its first sweep
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted (SIGTERM): the bench stopped"), err
    assert "Traceback" not in err and not list(tmp_path.glob("harness-bench-*"))  # no row measured yet: nothing written


def test_scaling_table_renders_members_per_second():
    from harness.bench.__main__ import markdown
    from harness.bench.sweeps import scaling_markdown

    lines = [
        {"members": 1, "runs": 1, "epochs": 2, "train_s": 2.0, "wall_s": 9.0, "member_epochs_per_s": 1.0, "speedup_vs_1": 1.0},
        {"members": 8, "runs": 8, "epochs": 2, "train_s": 4.0, "wall_s": 11.0, "member_epochs_per_s": 4.0, "speedup_vs_1": 4.0},
    ]
    table = scaling_markdown(lines)
    assert table.splitlines()[2] == "| 1 | 1 | 1 | 2 | 9 |" and table.splitlines()[3] == "| 8 | 4 | 4 | 4 | 11 |"
    report = {
        "machine": {"cpu": "x", "cores": "2", "torch": "t", "device": "cuda", "gpu": "G"},
        "quick": False,
        "reps": 1,
        "epochs": 6,
        "threads_auto": 2,
        "rows": [],
        "scaling": lines,
        "date": "d",
    }
    md = markdown(report)
    assert "(G)" in md and "| measure |" not in md and table in md  # no empty rows table when only the scaling ran
    assert "Incomplete" not in md
    assert "**Incomplete: the bench stopped before its last part" in markdown({**report, "complete": False})


def test_the_performance_page_tables_are_the_bench_files():
    from harness.bench.page import BLOCK, PAGE, render

    page = PAGE.read_text()
    assert len(BLOCK.findall(page)) >= 3
    assert page == render(page), "docs/performance.md is stale: python -m harness.bench.page"


def test_the_profile_sums_each_phase_from_its_functions_and_indents_the_nested():
    """harness.bench.profile: a phase's seconds are the cumulative times of its functions (the stacked
    engine's and a single run's added), nothing else's; nested phases are shown as part of the row above."""
    from harness.bench.profile import PHASES, phase_seconds, table

    class Fake:  # pstats.Stats' table: {(file, line, name): (cc, nc, tt, cumulative, callers)}
        stats = {
            ("/x/harness/engine/stacked.py", 132, "train"): (1, 1, 0.1, 2.0, {}),
            ("/x/harness/engine/train.py", 69, "train"): (1, 1, 0.1, 0.5, {}),
            ("/x/harness/engine/stacked.py", 221, "evaluate"): (1, 1, 0.1, 0.25, {}),
            ("/x/harness/engine/other.py", 1, "train"): (1, 1, 0.1, 9.0, {}),  # another file's train: not counted
            ("/x/harness/tracking/runs.py", 107, "start"): (20, 20, 0.1, 1.5, {}),  # an older checkout: runs opened alone
            ("/x/harness/tracking/runs.py", 230, "end_many"): (1, 1, 0.1, 0.75, {}),
            ("/x/harness/tracking/runs.py", 142, "end"): (20, 20, 0.1, 0.5, {}),  # end_many ran: its fallback is not added
        }

    seconds = phase_seconds(Fake())  # type: ignore[arg-type]
    assert seconds["training: steps and evaluation"] == 2.5
    assert seconds["evaluation"] == 0.25
    assert seconds["import torch"] == 0.0
    assert seconds["run creation: runs, tags, params, config.yaml"] == 1.5
    assert seconds["run end: last metrics, outcome tags, status"] == 0.75
    result = {"way": "stacked_tracked", "wall": 3.0, "profiled": 2.9, "phases": seconds}
    rows = table([result]).splitlines()
    assert rows[0] == "| phase | stacked, tracked |" and len(rows) == 4 + len(PHASES)
    assert "| &nbsp;&nbsp;of which: evaluation | 0.25 |" in rows
    assert "| training: steps and evaluation | 2.50 |" in rows
