"""Each selected run's test metric at a matched training loss (harness/report/matched.py)."""

import math

import pandas as pd
import pytest

from harness.report.matched import with_matched_loss


def tables():
    """Batch 32 fits fast (training loss 1.0, 0.5, 0.2, 0.1), batch 512 slowly (1.0, 0.8, 0.6, 0.4): the target is
    0.4 (512's worst final loss), which 32 reaches at epoch 3. A third setting (batch 512 at another LR) is not
    selected and gets nothing."""
    fast, slow = [1.0, 0.5, 0.2, 0.1], [1.0, 0.8, 0.6, 0.4]
    runs, hist = [], []
    for run_id, batch, lr, seed, losses, stage in (
        ("a0", "32", "0.1", "0", fast, "select"),
        ("a1", "32", "0.1", "1", fast, "select"),
        ("a5", "32", "0.1", "5", [1.0, 0.6, 0.45, 0.3], "confirm"),  # a fresh run of the same setting: reaches 0.4 at 4
        ("b0", "512", "0.3", "0", slow, "select"),
        ("b1", "512", "0.3", "1", [1.0, 0.7, 0.5, 0.35], "select"),
        ("c0", "512", "3.0", "0", [2.0, 2.0, 2.0, 2.0], "select"),
    ):
        runs.append(
            {
                "run_id": run_id,
                "task": "mnist",
                "param:batch_size": batch,
                "param:optimizer.lr": lr,
                "seed": seed,
                "stage": stage,
                "outcome": "finished",
                "primary_metric": "test/accuracy",
                "final:train/loss": losses[-1],
            }
        )
        for epoch, loss in enumerate(losses, start=1):
            hist += [(run_id, "train/loss", epoch, loss), (run_id, "test/accuracy", epoch, epoch / 10 + (batch == "512") / 100)]
    selected = pd.DataFrame(
        [
            {"problem": "mnist", "method": "batch_size=32", "run_ids": ["a0", "a1"]},
            {"problem": "mnist", "method": "batch_size=512", "run_ids": ["b0", "b1"]},
        ]
    )
    return pd.DataFrame(runs), pd.DataFrame(hist, columns=["run_id", "key", "step", "value"]), selected


def test_each_selected_run_is_read_where_its_training_loss_first_reaches_the_loosest_final_fit():
    runs, hist, selected = tables()
    out = with_matched_loss(runs, hist, selected, ["task", "param:batch_size", "param:optimizer.lr"])
    got = dict(zip(out["run_id"], out["final:test/accuracy_at_matched_loss"]))
    assert got["a0"] == got["a1"] == 0.3  # epoch 3: loss 0.2 <= 0.4
    assert got["a5"] == 0.4  # the fresh run of the selected setting too: loss 0.3 at epoch 4
    assert got["b0"] == got["b1"] == pytest.approx(0.41)  # 512's worst final fit (0.4) is the target: both at epoch 4
    assert math.isnan(got["c0"])  # not a selected setting
    assert list(runs.columns) == list(out.columns)[:-1]  # the runs themselves are left as they were


def test_nothing_to_match_without_training_losses_or_with_one_method():
    runs, hist, selected = tables()
    assert with_matched_loss(runs, hist[hist.key != "train/loss"], selected, ["task"]) is runs
    one = with_matched_loss(runs, hist, selected.iloc[:1], ["task", "param:batch_size", "param:optimizer.lr"])
    assert "final:test/accuracy_at_matched_loss" not in one
