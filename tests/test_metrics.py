"""The torch metrics agree with scikit-learn's definitions."""

import pytest
import torch
from sklearn import metrics as skm

from harness.metrics import average_precision, classification_metrics, regression_metrics


def test_regression_metrics_match_sklearn():
    g = torch.Generator().manual_seed(0)
    y, pred = torch.randn(200, 1, generator=g), torch.randn(200, 1, generator=g)
    m = regression_metrics(pred, y)
    assert m["mse"].item() == pytest.approx(skm.mean_squared_error(y, pred), rel=1e-5)
    assert m["mae"].item() == pytest.approx(skm.mean_absolute_error(y, pred), rel=1e-5)
    assert m["r2"].item() == pytest.approx(skm.r2_score(y, pred), rel=1e-5)


@pytest.mark.parametrize("num_classes", [2, 4])
def test_classification_metrics_match_sklearn(num_classes):
    g = torch.Generator().manual_seed(num_classes)
    y = torch.randint(0, num_classes, (300,), generator=g)
    logits = torch.randn(300, num_classes, generator=g) + 1.5 * torch.nn.functional.one_hot(y, num_classes)
    pred = logits.argmax(1)
    m = classification_metrics(logits, y, minority_class=num_classes - 1)
    labels = list(range(num_classes))
    assert m["accuracy"].item() == pytest.approx(skm.accuracy_score(y, pred))
    assert m["macro_f1"].item() == pytest.approx(skm.f1_score(y, pred, average="macro", labels=labels, zero_division=0), rel=1e-6)
    assert m["balanced_accuracy"].item() == pytest.approx(skm.balanced_accuracy_score(y, pred), rel=1e-6)
    assert m["minority_recall"].item() == pytest.approx(
        skm.recall_score(y, pred, labels=[num_classes - 1], average="macro"), rel=1e-6
    )
    assert ("average_precision" in m) == (num_classes == 2)
    if num_classes == 2:
        score = logits.softmax(1)[:, 1]
        assert m["average_precision"].item() == pytest.approx(skm.average_precision_score(y, score), rel=1e-6)


def test_average_precision_with_tied_scores_matches_sklearn():
    scores = torch.tensor([0.9, 0.8, 0.8, 0.8, 0.3, 0.3, 0.1])
    pos = torch.tensor([1, 0, 1, 1, 0, 1, 0])
    assert average_precision(scores, pos == 1).item() == pytest.approx(skm.average_precision_score(pos, scores), rel=1e-6)


def test_a_class_never_predicted_scores_zero_f1_not_nan():
    logits = torch.tensor([[1.0, 0.0]] * 4)
    m = classification_metrics(logits, torch.tensor([0, 0, 0, 1]), minority_class=1)
    assert m["macro_f1"].item() == pytest.approx(skm.f1_score([0, 0, 0, 1], [0, 0, 0, 0], average="macro", zero_division=0))
    assert m["minority_recall"].item() == 0.0


def test_curve_metrics_say_how_a_run_got_to_its_last_score():
    from harness.engine.record import curve_metrics

    up = curve_metrics("test/accuracy", "max", [0.5, 0.7, 0.8, 0.85, 0.9, 0.92, 0.93, 0.94])
    assert up["test/accuracy_best"] == 0.94 and up["test/accuracy_oscillation"] == pytest.approx(0.0)
    assert up["test/accuracy_epoch_mean"] == pytest.approx(sum([0.5, 0.7, 0.8, 0.85, 0.9, 0.92, 0.93, 0.94]) / 8)
    # back and forth over the last quarter (at least three epochs: 0.5, 0.3, 0.5): a path of 0.4, net 0, over 2 steps
    zigzag = curve_metrics("test/mse", "min", [2.0, 1.0, 0.5, 0.3, 0.5, 0.3, 0.5])
    assert zigzag["test/mse_best"] == 0.3 and zigzag["test/mse_oscillation"] == pytest.approx(0.4 / 2)
    assert zigzag["test/mse_early_oscillation"] == pytest.approx(0.0)  # 2.0, 1.0, 0.5: one way
    assert curve_metrics("test/accuracy", "max", [0.5, 0.2, 0.6, 0.7])["test/accuracy_early_oscillation"] == pytest.approx(
        0.6 / 2
    )
    assert curve_metrics("test/mse", "min", [float("nan")]) == {}
    assert "test/mse_oscillation" not in curve_metrics("test/mse", "min", [1.0, 0.5])  # too short to tell
