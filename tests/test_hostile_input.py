"""Hostile suite, 4 and 5 end to end (the in-process cases are in test_checks.py): bad knobs, a
target that is not a loss, swept choices and keys that do not exist: one line before anything is written."""

import pytest

from tests.conftest import run_cli
from tests.hostile import one_error_line, statuses

pytestmark = pytest.mark.slow

# ---------------------------------------------------------------- 4./5. end to end (the rest in test_checks.py)


@pytest.mark.parametrize(
    "args, message",
    [
        (["experiment=nosuch"], "experiment"),
        (["task.hidden=[8,-1]"], "task.hidden"),
        (["loss=ce", "loss.label_smoothing=2"], "loss.label_smoothing"),
        (["seed=18446744073709551616"], "seed must be"),
    ],
)
def test_bad_knobs_are_refused_before_a_run_opens(tmp_path, args, message):
    out = run_cli(*args, cwd=tmp_path)
    assert out.returncode == 2
    one_error_line(out.stderr, message)
    assert not (tmp_path / "mlflow.db").exists() or statuses(tmp_path, "imbalanced") == []


def test_a_target_that_is_not_a_loss_is_never_called(tmp_path):
    made = tmp_path / "made_by_target"
    out = run_cli("loss._target_=os.makedirs", f"+loss.name={made}", cwd=tmp_path)
    assert out.returncode == 2
    one_error_line(out.stderr, "loss._target_", "torch.nn.Module")
    assert not made.exists()


def test_a_swept_choice_that_does_not_exist_is_one_line_before_anything_is_written(tmp_path):
    # Hydra finds it only when it composes the jobs: before this check, after the parent run was made
    out = run_cli("--multirun", "task=regression", "loss=mse,mae", "optimizer=adam,nosuch", "epochs=1", cwd=tmp_path)
    assert out.returncode == 2
    one_error_line(
        out.stderr, "optimizer=nosuch is not an option (in optimizer=adam,nosuch); available: adafactor, adagrad, adam"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no store, no sweep folder


def test_a_swept_key_that_does_not_exist_is_one_line_before_anything_is_written(tmp_path):
    out = run_cli("--multirun", "task=regression", "loss=mse,huber", "optimizer.nosuch=1,2", "epochs=1", cwd=tmp_path)
    assert out.returncode == 2
    one_error_line(
        out.stderr, "Could not override 'optimizer.nosuch'. No such key in the config (to add one: +optimizer.nosuch=1)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no store, no sweep folder
