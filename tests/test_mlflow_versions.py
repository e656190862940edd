"""The rows the harness writes into MLflow's tables itself (harness/tracking/sqlruns.py and sqlwrite.py) read back as
MLflow's own under the oldest MLflow that pyproject.toml allows, not only the one installed (issue 30): that version is
installed into a folder of its own (pip --no-deps --target) and put first on the path of a pytest run of those tests."""

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.extended]  # a pip install: CI runs it after the default suite


def oldest_allowed() -> str:
    """The lower bound of the mlflow requirement in pyproject.toml ("mlflow>=3.17,<4" -> "3.17")."""
    found = re.search(r'"mlflow>=([0-9.]+),<', (ROOT / "pyproject.toml").read_text())
    assert found, "pyproject.toml no longer pins mlflow as >=X,<Y"
    return found.group(1)


def test_the_tables_the_harness_writes_read_back_under_the_oldest_mlflow_allowed(tmp_path):
    version, target = oldest_allowed(), tmp_path / "mlflow"
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target)]
        + [f"{name}=={version}" for name in ("mlflow", "mlflow-skinny", "mlflow-tracing")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if pip.returncode != 0:
        pytest.skip(
            f"pip could not install MLflow {version} (no package index reachable?): {pip.stderr.strip().splitlines()[-1:]}"
        )
    env = {"PYTHONPATH": f"{target}:{ROOT}", "PATH": "/usr/bin:/bin"}
    used = subprocess.run(
        [sys.executable, "-c", "import mlflow; print(mlflow.__version__)"], capture_output=True, text=True, env=env
    )
    assert used.stdout.strip().startswith(version), used.stderr[-2000:]
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_sqlruns.py", "tests/test_sqlwrite.py"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:]
    assert " passed" in out.stdout and "skipped" not in out.stdout
