"""The commands the README's tour and the getting-started page show, run as written on small budgets (one
epoch each, a small MNIST subset), so the pages stay true."""

import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.conftest import ROOT, SHARED_DATA, write_idx_mnist

pytestmark = pytest.mark.slow
SMALL = ["epochs=1"]


def commands(page: str) -> list[str]:
    """The `python -m harness...` lines of the page's bash blocks, continuation lines joined; a line with `...`
    is a pattern, not a command."""
    text = (ROOT / page).read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("python -m harness") and "..." not in line:
                out.append(line)
    return out


def run(line: str, cwd, data) -> subprocess.CompletedProcess:
    args = shlex.split(line)[1:]  # python -> this interpreter
    harness = args[:2] == ["-m", "harness"]
    extra = [*SMALL, f"data_dir={data}", "task.n_train=500"] if "task=mnist" in line else SMALL if harness else []
    if "--help" in args:
        extra = []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, *args, *extra], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.extended  # the tour's named study is 450 runs even at one epoch each: a few minutes on 2 cores
def test_the_readme_tour_runs_as_written(tmp_path):
    data = SHARED_DATA if (SHARED_DATA / "MNIST" / "raw").exists() else write_idx_mnist(tmp_path / "data", n_train=6000)
    lines = commands("README.md")
    assert any("loss=focal optimizer=adam" in line for line in lines) and any("--help" in line for line in lines)
    assert any("study.stage=confirm" in line for line in lines) and lines[-1].startswith("python -m harness.report")
    for line in lines:
        out = run(line, tmp_path, data)
        assert out.returncode == 0, f"{line}\n{out.stdout[-1500:]}\n{out.stderr[-1500:]}"
        expected = (
            "--help"
            if "--help" in line
            else "sweep done:"
            if "--multirun" in line
            else "wrote"
            if ".report" in line
            else "finished:"
        )
        assert expected == "--help" or expected in out.stdout, line
        assert " 0 failed" in out.stdout or "--multirun" not in line, line


def test_the_getting_started_page_runs_as_written(tmp_path):
    lines = commands("docs/getting-started.md")
    assert [line.split()[2] for line in lines] == ["harness", "harness", "harness", "harness.report"]
    outs = [run(line, tmp_path, tmp_path) for line in lines]
    for line, out in zip(lines, outs, strict=True):
        assert out.returncode == 0, f"{line}\n{out.stdout[-1500:]}\n{out.stderr[-1500:]}"
    assert "finished: test/macro_f1" in outs[0].stdout
    assert "45 finished" in outs[1].stdout and "30 not selected (confirmation)" in outs[2].stdout
    report = (tmp_path / "reports" / "regression" / "report.md").read_text()
    assert "fresh seeds" in report and "| loss=mae " in report
