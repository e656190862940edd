import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"

# A test runner started in the background of a script (`cmd &`) inherits SIGINT as ignored, and so
# would every process the tests start: the Ctrl-C tests would then find their child training on.
# The tests stand for a terminal, where Ctrl-C is delivered: a handled SIGINT here is reset to the
# default in each child at exec. (The harness itself keeps an inherited "ignore", as nohup intends.)
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def write_idx_mnist(root: Path, n_train: int = 300, n_test: int = 100, seed: int = 0, folder: str = "MNIST") -> Path:
    """Tiny MNIST in torchvision's raw IDX layout: digit c is a bright c-th row band plus noise
    (folder="FashionMNIST": the same images where the Fashion-MNIST task reads them)."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 60, size=(n, 28, 28), dtype=np.uint8)
        for i, c in enumerate(labels):
            images[i, 2 + 2 * c : 4 + 2 * c, :] = 255
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())
    return root


@pytest.fixture
def tiny_mnist(tmp_path):
    return write_idx_mnist(tmp_path / "data")


def run_cli(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """python -m harness ARGS in cwd, tracking into cwd/mlflow.db, quiet."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    full_env.pop("MLFLOW_TRACKING_URI", None)
    flags = [a for a in args if a.startswith("--")]  # --multirun goes before the overrides
    cmd = [
        sys.executable,
        "-m",
        "harness",
        *flags,
        f"tracking.uri=sqlite:///{cwd}/mlflow.db",
        "progress=false",
        *(a for a in args if not a.startswith("--")),
    ]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)


def mlflow_runs(cwd: Path, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{cwd}/mlflow.db")
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return client, []
    return client, client.search_runs([exp.experiment_id])
