"""Issue 8, classes 4 and 5, in-process: every knob is checked before anything is built, with a
message that says what is allowed; `_target_` must name the kind of object its group needs."""

import os

import pytest
from hydra.core.hydra_config import HydraConfig

from harness import HarnessError
from harness.config.checks import check_config
from harness.engine.build import build
from harness.engine.job import compose
from tests.conftest import write_idx_mnist


def check(*overrides: str):
    """What run() does before a run opens: compose, check every knob, build task, model, loss, optimizer."""
    cfg = compose("tracking.enabled=false", "progress=false", *overrides)
    names = {g: HydraConfig.get().runtime.choices[g] for g in ("task", "loss", "optimizer", "schedule")}
    check_config(cfg, names)
    return build(cfg, names)


BAD_KNOBS = [
    (["task.activation=swish"], "task.activation='swish' is unknown; allowed: relu, tanh, gelu, sigmoid"),
    (["task.hidden=[8,-1]"], "task.hidden must be a list of positive integers"),
    (["task.hidden=[a]"], "task.hidden must be a list of positive integers"),
    (["task.n_train=0"], "task.n_train must be a positive integer"),
    (["task.imbalance_ratio=nan"], "task.imbalance_ratio must be a finite number"),
    (["task=regression", "task.noise=nan"], "task.noise must be a finite number"),
    (["task=regression", "task.noise=-1"], "task.noise must be a finite number >= 0"),
    (["seed=18446744073709551616"], "seed must be an integer in [0, 2**32 - 1]"),
    (["seed=4294967296"], "seed must be an integer in [0, 2**32 - 1]"),  # would alias seed=0 under another hash
    (["seed=-1"], "seed must be an integer in [0, 2**32 - 1]"),
    (["loss=ce", "loss.label_smoothing=2"], "loss.label_smoothing must be a number in [0, 1]"),
    (["task=regression", "loss=huber", "loss.delta=-1"], "loss.delta must be a finite number > 0"),
    (["+loss.reduction=none"], "loss.reduction must be 'mean' or 'sum'"),
    (["schedule=warmup_cosine", "schedule.warmup_fraction=2"], "schedule.warmup_fraction must be a number in [0, 1]"),
    (["schedule=warmup_constant", "schedule.warmup_epochs=0"], "schedule.warmup_epochs must be a positive integer"),
    (["schedule=step", "schedule.step_epochs=-1"], "schedule.step_epochs must be a finite number > 0"),
    (["optimizer=sgd", "optimizer.lr=nan"], "optimizer.lr must be a finite number"),
    (["optimizer=sgd", "optimizer.lr=inf"], "optimizer.lr must be a finite number"),
    (["optimizer.betas=[0.9,1.5]"], "optimizer.betas must be two numbers in [0, 1)"),
    (["optimizer.weight_decay=-1"], "optimizer.weight_decay must be a finite number >= 0"),
    (["lr_scaling=cubic"], "lr_scaling must be one of none, linear, sqrt"),
    (["tracking.lock_timeout=-1"], "tracking.lock_timeout must be a finite number >= 0"),
    (["eval_batch_size=0"], "eval_batch_size must be 'auto' or a positive integer"),
    (["epochs=0"], "epochs must be a positive integer"),
    (["batch_size=0"], "batch_size must be a positive integer or 'full'"),
    (["optimizer.lr=0"], "optimizer.lr must be a"),
    (["optimizer.lr=fast"], "optimizer.lr must be a"),
    (["schedule=step", "schedule.gamma=abc"], "schedule.gamma must be a number"),
    (["optimizer=nesterov", "optimizer.nesterov=3"], "optimizer.nesterov must be true or false"),
    (["task=regression", "task.outlier_fraction=1.0"], "task.outlier_fraction must be a number in [0, 1)"),
    (["task.imbalance_ratio=0.5"], "task.imbalance_ratio must be a finite number >= 1"),
    (
        ["task=mnist", "loss=mse"],
        "losses that fit mnist: bce, ce, ce_weighted, dice, focal, focal_a25, focal_g1, focal_g5, hinge, kl, mae_prob, mse_prob",
    ),
    (["device=tpu"], "device='tpu' is unknown"),
    (["threads=0"], "threads must be 'auto' or a positive integer"),
]


@pytest.mark.parametrize("overrides, message", BAD_KNOBS, ids=[" ".join(o) for o, _ in BAD_KNOBS])
def test_a_bad_knob_is_refused_with_what_is_allowed(overrides, message):
    with pytest.raises(HarnessError) as e:
        check(*overrides)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_bad_cnn_channels_and_idx_files_are_refused(tmp_path):
    root = write_idx_mnist(tmp_path / "data", n_train=60, n_test=20)
    with pytest.raises(HarnessError, match="task.channels must be a list of 2 positive integers"):
        check("task=mnist", f"data_dir={root}", "task.download=false", "task.model=cnn", "task.channels=[0]")
    with pytest.raises(HarnessError, match="task.val_size=5000 leaves no training images"):  # 60 images in the file
        check("task=mnist", f"data_dir={root}", "task.download=false")
    broken = write_idx_mnist(tmp_path / "broken", n_train=60, n_test=20)
    (broken / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(os.urandom(5000))
    with pytest.raises(HarnessError, match="train-images-idx3-ubyte"):
        check("task=mnist", f"data_dir={broken}", "task.download=false", "task.val_size=10")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["experiment=nosuch"], "experiment/nosuch"),
        (["task=nope"], "task/nope"),
        (["task.foo=3"], "Could not override 'task.foo'"),
    ],
)
def test_unknown_options_and_keys_are_refused_by_composition(overrides, message):
    with pytest.raises(Exception, match=message):
        compose(*overrides)


TARGETS = [
    (["loss._target_=os.makedirs", "+loss.name=X"], "loss._target_=os.makedirs is not a loss class (a torch.nn.Module)"),
    (["optimizer._target_=builtins.print"], "is not an optimizer class (a torch.optim.Optimizer)"),
    (["task._target_=os.system"], "is not a harness Task class"),
    (["schedule._target_=os.remove"], "is not a schedule from harness.schedules or a torch LR scheduler class"),
    (["+loss.nested={_target_: os.system}"], "loss.nested._target_ may not be set"),
]


@pytest.mark.parametrize("overrides, message", TARGETS, ids=[" ".join(o) for o, _ in TARGETS])
def test_a_target_of_the_wrong_kind_is_refused_before_it_is_called(tmp_path, monkeypatch, overrides, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HarnessError) as e:
        check(*overrides)
    assert message in str(e.value)
    assert list(tmp_path.iterdir()) == []  # os.makedirs("X") never ran


def test_user_classes_of_the_right_kind_still_work():
    job = check("loss._target_=tests.helpers.ExplodingLoss", "optimizer._target_=torch.optim.Adamax")
    assert type(job.parts.loss).__name__ == "ExplodingLoss" and type(job.optimizer).__name__ == "Adamax"


def test_a_launcher_knob_of_the_wrong_type_says_why_in_one_line():
    from hydra.errors import ConfigCompositionException

    from harness.config.compose import one_line

    try:
        try:
            raise ValueError("Value 'maybe' is not a valid bool (type str)\n    full_key: hydra.launcher.vmap_on_cpu")
        except ValueError as cause:
            raise ConfigCompositionException("Error merging override hydra.launcher.vmap_on_cpu=maybe") from cause
    except ConfigCompositionException as e:
        assert one_line(e) == (
            "Error merging override hydra.launcher.vmap_on_cpu=maybe: Value 'maybe' is not a valid bool (type str)"
        )
