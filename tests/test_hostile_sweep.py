"""A hostile user against the sweep's own knobs (issue 26): the harness's launcher and sweeper
refuse a bad knob in one line before the sweep writes anything (no store, no parent run)."""

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow

SPACE = "+hydra.sweeper.space={optimizer.lr: 'loguniform(1e-4, 1)'}"


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["hydra.launcher.max_members=0"], "hydra.launcher.max_members must be a positive integer, got 0"),
        (["hydra/sweeper=search", "hydra.sweeper.n_trials=0", SPACE], "hydra.sweeper.n_trials must be a positive integer, got 0"),
        (["hydra/sweeper=search", "+hydra.sweeper.space={optimizer.lr: 'uniform(nan, 1)'}"], "bounds must be finite numbers"),
        (
            ["hydra/sweeper=search", "hydra.sweeper.n_trials=2", "hydra.sweeper.objective=val/nosuch", SPACE],
            "hydra.sweeper.objective=val/nosuch is not a metric these runs log; they log val/loss, val/mse",
        ),
    ],
)
def test_a_bad_launcher_or_sweeper_knob_writes_nothing(tmp_path, overrides, needle):
    out = run_cli("--multirun", "task=regression", "epochs=1", "seed=0,1", *overrides, cwd=tmp_path)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], out.stderr[-2000:]
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "multirun").exists()
