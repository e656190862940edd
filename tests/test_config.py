"""Config composition for every group option, and one short in-process run per loss and optimizer."""

import math

import pytest
from hydra.core.hydra_config import HydraConfig

from harness import HarnessError
from harness.config.checks import CONF_DIR
from harness.engine.build import build, losses_for
from harness.engine.job import compose
from harness.engine.run import run as run_result

OPTIONS = {g: sorted(p.stem for p in (CONF_DIR / g).glob("*.yaml")) for g in ("task", "loss", "optimizer", "schedule")}
SMALL = ["tracking.enabled=false", "progress=false", "epochs=2", "task.n_train=300", "task.n_val=100", "task.n_test=200"]
CLASSIFICATION_LOSSES = [
    "bce",
    "ce",
    "ce_weighted",
    "dice",
    "focal",
    "focal_a25",
    "focal_g1",
    "focal_g5",
    "hinge",
    "kl",
    "mae_prob",
    "mse_prob",
]
REGRESSION_LOSSES = ["huber", "log_cosh", "mae", "mse", "smooth_l1"]
GAN_LOSSES = ["gan_hinge", "gan_least_squares", "gan_minimax", "gan_nonsat", "gan_wasserstein"]
SEQUENCE_LOSSES = ["ctc", "position_ce"]
COUNT_LOSSES = ["huber_counts", "mae_counts", "mse_counts", "poisson_nll"]
SEGMENTATION_LOSSES = ["pixel_ce", "soft_dice"]
EMBEDDING_LOSSES = ["ce_head", "contrastive", "margin_ranking", "triplet", "triplet_batch_hard", "triplet_random"]


compose_cfg = compose  # what `python -m harness OVERRIDES` hands to run()


def run(cfg):
    return run_result(cfg).final


def names_of(cfg):
    return {g: HydraConfig.get().runtime.choices[g] for g in ("task", "loss", "optimizer", "schedule")}


def test_every_axis_has_the_options_the_issue_names():
    assert set(OPTIONS["loss"]) == set(
        CLASSIFICATION_LOSSES
        + REGRESSION_LOSSES
        + COUNT_LOSSES
        + EMBEDDING_LOSSES
        + SEQUENCE_LOSSES
        + GAN_LOSSES
        + SEGMENTATION_LOSSES
    )
    assert set(OPTIONS["optimizer"]) == {
        "sgd",
        "momentum",
        "nesterov",
        "rmsprop",
        "adagrad",
        "adam",
        "adamw",
        "nadam",
        "radam",
        "muon",
        "adafactor",
        "lbfgs",
        "lion",
        "schedulefree_adamw",
        "prodigy",
        "soap",
    }
    assert set(OPTIONS["schedule"]) == {
        "constant",
        "step",
        "exponential",
        "cosine",
        "warmup_cosine",
        "warmup_constant",
        "onecycle",
    }
    assert set(OPTIONS["task"]) == {
        "regression",
        "mnist",
        "fashion_mnist",
        "segmentation",
        "imbalanced",
        "counts",
        "embedding",
        "sequence",
        "gan",
        "tabular",
        "tabular_regression",
    }


@pytest.mark.parametrize(
    "task, natural",
    [
        ("imbalanced", "ce"),
        ("mnist", "ce"),
        ("fashion_mnist", "ce"),
        ("segmentation", "pixel_ce"),
        ("regression", "mse"),
        ("counts", "poisson_nll"),
        ("embedding", "triplet"),
        ("sequence", "ctc"),
        ("gan", "gan_nonsat"),
        ("tabular", "ce"),
        ("tabular_regression", "mse"),
    ],
)
def test_a_task_without_a_loss_gets_its_natural_loss(task, natural):
    cfg = compose_cfg(f"task={task}")
    assert HydraConfig.get().runtime.choices["loss"] == natural
    assert cfg.loss._target_ == compose_cfg(f"loss={natural}").loss._target_


def test_the_command_line_loss_wins_over_the_natural_one():
    compose_cfg("task=regression", "loss=huber", "loss.delta=0.5")
    assert HydraConfig.get().runtime.choices["loss"] == "huber"
    assert compose_cfg("task=regression", "loss=huber", "loss.delta=0.5").loss.delta == 0.5


def test_default_run_needs_no_download():
    cfg = compose_cfg()
    assert cfg.task.dataset == "synthetic" and HydraConfig.get().runtime.choices["task"] == "imbalanced"


@pytest.mark.parametrize("task", OPTIONS["task"])
def test_losses_that_fit_each_task(task, tmp_path):
    cfg = compose_cfg(f"task={task}", f"data_dir={tmp_path}")
    from hydra.utils import instantiate

    fits = losses_for(instantiate(cfg.task))
    assert fits == {
        "regression": REGRESSION_LOSSES,
        "tabular_regression": REGRESSION_LOSSES,
        "counts": COUNT_LOSSES,
        "embedding": EMBEDDING_LOSSES,
        "sequence": SEQUENCE_LOSSES,
        "gan": GAN_LOSSES,
        "segmentation": SEGMENTATION_LOSSES,
    }.get(task, CLASSIFICATION_LOSSES)


@pytest.mark.parametrize("loss", SEGMENTATION_LOSSES)
def test_every_segmentation_loss_trains(loss):
    final = run(compose_cfg("task=segmentation", f"loss={loss}", *SMALL))
    assert math.isfinite(final["train/loss"]) and 0.0 <= final["test/dice"] <= 1.0 and 0.0 <= final["test/iou"] <= 1.0


@pytest.mark.parametrize("loss", CLASSIFICATION_LOSSES)
def test_every_classification_loss_trains(loss):
    cfg = compose_cfg("task=imbalanced", f"loss={loss}", *SMALL)
    final = run(cfg)
    assert math.isfinite(final["train/loss"]) and 0.0 <= final["test/macro_f1"] <= 1.0


@pytest.mark.parametrize("loss", REGRESSION_LOSSES)
def test_every_regression_loss_trains(loss):
    final = run(compose_cfg("task=regression", f"loss={loss}", *SMALL))
    assert math.isfinite(final["test/mse"]) and final["test/r2"] <= 1.0


@pytest.mark.parametrize("optimizer", OPTIONS["optimizer"])
@pytest.mark.parametrize("schedule", ["constant", "onecycle"])
def test_every_optimizer_trains(optimizer, schedule):
    final = run(compose_cfg("task=regression", f"optimizer={optimizer}", f"schedule={schedule}", *SMALL))
    assert math.isfinite(final["test/mse"])


@pytest.mark.parametrize("schedule", OPTIONS["schedule"])
def test_every_schedule_builds_for_the_run_length(schedule):
    cfg = compose_cfg("task=regression", f"schedule={schedule}", "batch_size=100", *SMALL)
    job = build(cfg, names_of(cfg))
    assert job.parts.batch_size == 100 and job.scheduler.optimizer is job.optimizer


def test_any_torch_optimizer_through_target():
    final = run(compose_cfg("task=regression", "optimizer._target_=torch.optim.Adamax", "~optimizer.betas", *SMALL))
    assert math.isfinite(final["test/mse"])


def test_full_batch_and_per_sample_batch_sizes():
    cfg = compose_cfg("task=regression", "batch_size=full", *SMALL)
    assert build(cfg, names_of(cfg)).parts.batch_size == 300
    cfg = compose_cfg(
        "task=regression", "batch_size=1", "epochs=1", *SMALL[:2], "task.n_train=50", "task.n_val=10", "task.n_test=10"
    )
    assert math.isfinite(run(cfg)["test/mse"])


def test_class_weights_balanced_for_ce_and_focal():
    cfg = compose_cfg("task=imbalanced", "loss=ce", "loss.weight=balanced", "task.imbalance_ratio=9", *SMALL)
    w = build(cfg, names_of(cfg)).parts.loss.weight
    assert w[1] / w[0] == pytest.approx(9, rel=0.3)
    cfg = compose_cfg("task=imbalanced", "loss=ce_weighted", *SMALL)
    assert build(cfg, names_of(cfg)).parts.loss.weight[1] > 10
    cfg = compose_cfg("task=imbalanced", "loss=focal_g5", *SMALL)
    assert build(cfg, names_of(cfg)).parts.loss.gamma == 5.0
    cfg = compose_cfg("task=imbalanced", "loss=focal", "loss.alpha=[0.25,0.75]", *SMALL)
    assert build(cfg, names_of(cfg)).parts.loss.alpha.tolist() == [0.25, 0.75]
    cfg = compose_cfg("task=imbalanced", "loss=ce", "loss.weight=[1,2,3]", *SMALL)
    with pytest.raises(HarnessError, match="needs 2 class weights"):
        build(cfg, names_of(cfg))


def test_same_seed_same_metrics_other_seed_other_metrics():
    a = run(compose_cfg("task=imbalanced", "seed=3", *SMALL))
    b = run(compose_cfg("task=imbalanced", "seed=3", *SMALL))
    c = run(compose_cfg("task=imbalanced", "seed=4", *SMALL))
    drop = ("epoch_seconds", "samples_per_second")
    assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}
    assert a["train/loss"] != c["train/loss"]


def test_divergence_is_an_outcome_not_a_crash(capsys):
    final = run(compose_cfg("task=regression", "optimizer=sgd", "optimizer.lr=1e6", "progress=true", *SMALL[:1], *SMALL[2:]))
    assert not math.isfinite(final["train/loss"])
    assert "diverged at epoch 1" in capsys.readouterr().out
