"""End-to-end: `python -m harness ...` in a subprocess, then the MLflow store read back."""

import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import ROOT, SHARED_DATA, mlflow_runs, run_cli

pytestmark = pytest.mark.slow  # each test starts python + torch + MLflow (several seconds)


def only_run(cwd, experiment):
    client, runs = mlflow_runs(cwd, experiment)
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return client, runs[0]


def test_default_run_lands_in_mlflow_db_in_the_working_directory(tmp_path):
    env = {"PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "harness", "epochs=2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, **env},
    )
    assert out.returncode == 0, out.stderr
    assert "epoch 2/2" in out.stdout and "finished: test/macro_f1" in out.stdout  # progress on a terminal
    assert (tmp_path / "mlflow.db").exists()
    client, run = only_run(tmp_path, "imbalanced")
    assert run.info.status == "FINISHED" and run.info.run_name == "epochs=2"
    tags = run.data.tags
    for key, value in {
        "task": "imbalanced",
        "loss": "ce",
        "optimizer": "adam",
        "schedule": "constant",
        "batch_size": "128",
        "seed": "0",
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "outcome": "finished",
        "harness_version": "0.1.0",
        "primary_metric": "test/macro_f1",
    }.items():
        assert tags[key] == value, key
    assert len(tags["config_hash"]) == 16
    import platform

    assert tags["python_version"] == platform.python_version() and tags["torch_version"] == torch.__version__
    assert tags["mlflow_version"] and tags.get("git_dirty") in ("true", "false", None)  # None: not a git checkout
    params = run.data.params
    assert params["optimizer"] == "adam" and params["loss"] == "ce" and params["optimizer.lr"] == "0.001"
    assert params["task.imbalance_ratio"] == "100" and params["epochs"] == "2"
    # internal keys stay in config.yaml only: class paths, logging and tracking knobs
    assert not [
        k
        for k in params
        if k.endswith(("_target_", "_partial_"))
        or k.startswith(("tracking.", "study."))
        or k in ("progress", "resume", "data_dir", "eval_batch_size", "loss.targets")
    ]
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [1, 2]
    for key in (
        "val/loss",
        "test/loss",
        "test/accuracy",
        "test/macro_f1",
        "test/balanced_accuracy",
        "test/minority_recall",
        "test/average_precision",
        "train/accuracy",
        "lr",
        "epoch_seconds",
        "samples_per_second",
        "lr_step",
    ):
        assert key in run.data.metrics, key
    config = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
    assert "imbalance_ratio: 100" in open(config).read()


def test_headline_example_focal_with_adam(tmp_path):
    out = run_cli("loss=focal", "optimizer=adam", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    _, run = only_run(tmp_path, "imbalanced")
    assert run.info.run_name == "loss=focal,optimizer=adam"
    assert run.data.tags["loss"] == "focal" and run.data.params["loss.gamma"] == "2.0"


def test_regression_with_outliers_and_huber(tmp_path):
    out = run_cli("task=regression", "loss=huber", "loss.delta=0.5", "task.outlier_fraction=0.2", "epochs=3", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    _, run = only_run(tmp_path, "regression")
    assert run.data.params["loss.delta"] == "0.5" and run.data.params["task.outlier_fraction"] == "0.2"
    assert {"test/mse", "test/mae", "test/r2", "val/mse"} <= set(run.data.metrics)
    assert run.data.tags["primary_metric"] == "test/mse" and run.data.tags["primary_mode"] == "min"


def test_mnist_cnn_with_sgd_cosine_on_tiny_idx_files(tmp_path, tiny_mnist):
    out = run_cli(
        "task=mnist",
        f"data_dir={tiny_mnist}",
        "task.val_size=50",
        "task.model=cnn",
        "loss=ce",
        "optimizer=sgd",
        "optimizer.lr=0.05",
        "batch_size=64",
        "schedule=cosine",
        "epochs=3",
        "seed=1",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    client, run = only_run(tmp_path, "mnist")
    assert {"test/accuracy", "test/macro_f1", "test/loss"} <= set(run.data.metrics)
    lrs = [m.value for m in client.get_metric_history(run.info.run_id, "lr_step")]
    assert lrs[0] == pytest.approx(0.05) and lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.01


def test_long_tailed_mnist_on_tiny_idx_files(tmp_path, tiny_mnist):
    out = run_cli(
        "task=imbalanced",
        "task.dataset=mnist_lt",
        "task.imbalance_ratio=10",
        f"data_dir={tiny_mnist}",
        "task.val_size=50",
        "epochs=2",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    _, run = only_run(tmp_path, "imbalanced")
    assert "test/minority_recall" in run.data.metrics and "test/average_precision" not in run.data.metrics


def test_one_run_on_real_mnist(tmp_path):
    if not (SHARED_DATA / "MNIST" / "raw" / "t10k-images-idx3-ubyte").exists():
        pytest.skip("../shared/data/MNIST/raw is not beside this checkout")
    out = run_cli("task=mnist", f"data_dir={SHARED_DATA}", "epochs=1", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    _, run = only_run(tmp_path, "mnist")
    assert run.data.metrics["test/accuracy"] > 0.9


def test_divergence_is_recorded_not_crashed(tmp_path):
    out = run_cli("task=regression", "optimizer=sgd", "optimizer.lr=1e6", "epochs=5", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    _, run = only_run(tmp_path, "regression")
    assert run.info.status == "FINISHED"
    assert run.data.tags["outcome"] == "diverged" and run.data.tags["diverged_epoch"] == "1"


def test_a_crash_marks_the_run_failed(tmp_path):
    out = run_cli("loss._target_=tests.helpers.ExplodingLoss", "epochs=2", cwd=tmp_path, env={"PYTHONPATH": str(ROOT)})
    assert out.returncode != 0 and "boom from ExplodingLoss" in out.stderr
    _, run = only_run(tmp_path, "imbalanced")
    assert run.info.status == "FAILED" and run.data.tags["outcome"] == "failed"
    assert "boom" in run.data.tags["error"]


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, "KILLED"), (signal.SIGTERM, "KILLED")])
def test_interrupt_marks_the_run_killed(tmp_path, sig, status):
    cmd = [
        sys.executable,
        "-m",
        "harness",
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        "epochs=100000",
        "task.n_train=4000",
        "batch_size=8",
        "tracking.flush_seconds=0",
    ]  # epochs of 500 steps: the signal lands in epoch 2
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        for line in proc.stdout:  # wait for training to be under way
            if line.startswith("epoch "):  # "epoch 1/100000 ...", not the "epochs=..." header
                break
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig  # the shell convention: 130 for Ctrl-C, 143 for SIGTERM
    _, run = only_run(tmp_path, "imbalanced")
    assert run.info.status == status and run.data.tags["outcome"] == "killed"
    assert "train/loss" in run.data.metrics  # what was logged before the interrupt is kept


# End to end through the CLI, one per kind of refusal (Hydra's own, a knob, a loss that does not
# fit, a build error, missing data); the other knobs are checked in-process in test_checks.py.
BAD_INPUTS = [
    (["loss=foo"], "Could not find 'loss/foo'; available: bce, ce, ce_head, ce_weighted"),
    (["foo=1"], "Could not override 'foo'"),
    (["epochs=abc"], "epochs must be a positive integer"),
    (["task=regression", "loss=focal"], "losses that fit regression: huber, log_cosh, mae, mse, smooth_l1"),
    (["+optimizer.foo=3"], "unexpected keyword argument 'foo'"),
    (["task=mnist", "data_dir=DATA_DIR_MISSING", "task.download=false"], "MNIST is not in"),
]


@pytest.mark.parametrize("args, message", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_one_line_nonzero_exit_no_run_left(tmp_path, args, message):
    args = [a.replace("DATA_DIR_MISSING", str(tmp_path / "nodata")) for a in args]
    out = run_cli(*args, cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], out.stderr
    assert mlflow_runs(tmp_path, "imbalanced")[1] == [] and mlflow_runs(tmp_path, "mnist")[1] == []


def test_device_cuda_without_a_gpu_is_one_clear_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = run_cli("device=cuda", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.strip() == (
        "error: device=cuda but no CUDA GPU is visible to torch here; use device=cpu or device=auto"
    )


def test_unreachable_tracking_server_fails_fast(tmp_path):
    import socket

    with socket.socket() as s:  # a free loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "harness", f"tracking.uri=http://127.0.0.1:{port}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 2 and time.monotonic() - t0 < 60
    assert out.stderr.strip().startswith(f"error: the MLflow tracking server http://127.0.0.1:{port} is not reachable")


def test_a_single_run_of_an_experiment_says_which_of_its_sweeps_fixed_knobs_it_trains_without(tmp_path):
    # sequence_losses_long fixes task.max_length=6 in its sweep; without --multirun Hydra ignores the sweep, so this
    # run trains strings of up to 4 digits: a cost measured this way was once quoted for the study (3.9 s an epoch, not 13)
    small = ("epochs=1", "task.n_train=64", "task.n_val=32", "task.n_test=32")
    out = run_cli("experiment=sequence_losses_long", *small, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (
        "note: this experiment's sweep sets task.max_length=6; a single run trains the config's task.max_length=4 "
        "(give them as overrides to train the study's workload, or use --multirun)"
    ) in out.stdout, out.stdout
    _, run = only_run(tmp_path, "sequence_losses_long")
    assert run.data.params["task.max_length"] == "4"  # the note tells the truth about what trained


def test_the_note_names_only_fixed_knobs_a_run_does_not_set():
    from hydra.core.hydra_config import HydraConfig

    from harness.engine.job import compose, unswept_note

    cfg = compose("experiment=sequence_losses_mnist")
    note = unswept_note(cfg, HydraConfig.get())
    assert note is not None and "task.max_length=6, task.jitter=14" in note and "task.max_length=4, task.jitter=4" in note
    cfg = compose("experiment=sequence_losses_mnist", "task.max_length=6", "task.jitter=14")  # given: nothing to say
    assert unswept_note(cfg, HydraConfig.get()) is None
    cfg = compose("experiment=sequence_losses_mnist", "task.max_length=6", "task.jitter=14.0")  # 14.0 is 14
    assert unswept_note(cfg, HydraConfig.get()) is None
    cfg = compose("experiment=mnist_optimizers_search")  # its sweep's weight_decay 0.0 is adam's own: nothing to say
    assert unswept_note(cfg, HydraConfig.get()) is None
    cfg = compose("experiment=regression_outliers")  # grids only (loss=..., lr=...): a single run picks one, as Hydra says
    assert unswept_note(cfg, HydraConfig.get()) is None
