"""Every loss: values against hand-computed numbers or torch references, gradients by gradcheck."""

import math

import pytest
import torch
import torch.nn.functional as F

from harness.losses import (
    DiceLoss,
    FocalLoss,
    KLLoss,
    LogCoshLoss,
    MAEProbLoss,
    MSEProbLoss,
    dice_loss,
    focal_loss,
    kl_loss,
    log_cosh_loss,
    mae_prob_loss,
    mse_prob_loss,
)

LOGITS = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
Y = torch.tensor([0, 2])
ONEHOT = F.one_hot(Y, 3).float()


def softmax_rows():
    return [[math.exp(v) / sum(math.exp(u) for u in row) for v in row] for row in LOGITS.tolist()]


def test_focal_matches_hand_computed_value():
    p = softmax_rows()
    pt = [p[0][0], p[1][2]]
    expected = sum(-((1 - q) ** 2) * math.log(q) for q in pt) / 2
    assert focal_loss(LOGITS, Y, gamma=2.0).item() == pytest.approx(expected, rel=1e-6)


def test_focal_with_gamma_zero_is_cross_entropy_and_alpha_weights_classes():
    assert focal_loss(LOGITS, Y, gamma=0.0).item() == pytest.approx(F.cross_entropy(LOGITS, Y).item(), rel=1e-6)
    w = [0.2, 0.3, 0.5]
    per = F.cross_entropy(LOGITS, Y, reduction="none")
    assert focal_loss(LOGITS, Y, gamma=0.0, alpha=w).item() == pytest.approx(((per * torch.tensor(w)[Y]).mean()).item(), rel=1e-6)


def test_binary_focal_alpha_is_the_weight_of_class_one():
    logits, y = torch.tensor([[0.0, 1.0], [1.0, -1.0]]), torch.tensor([1, 0])
    per = F.cross_entropy(logits, y, reduction="none")
    expected = (0.25 * per[0] + 0.75 * per[1]) / 2
    assert FocalLoss(gamma=0.0, alpha=0.25)(logits, y).item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="2 classes"):
        focal_loss(LOGITS, Y, alpha=0.25)


def test_focal_down_weights_easy_examples():
    easy, hard = torch.tensor([[5.0, 0.0]]), torch.tensor([[0.2, 0.0]])
    y = torch.tensor([0])
    ratio_focal = focal_loss(easy, y).item() / focal_loss(hard, y).item()
    ratio_ce = F.cross_entropy(easy, y).item() / F.cross_entropy(hard, y).item()
    assert ratio_focal < ratio_ce / 10


def test_log_cosh_values_and_limits():
    d = torch.tensor([0.0, 0.5, -3.0, 40.0])
    got = log_cosh_loss(d, torch.zeros(4), reduction="none")
    assert got[:3].tolist() == pytest.approx([math.log(math.cosh(v)) for v in (0.0, 0.5, -3.0)], rel=1e-6, abs=1e-7)
    assert got[3].item() == pytest.approx(40 - math.log(2), rel=1e-6)  # no overflow where cosh would
    assert LogCoshLoss(reduction="sum")(d, torch.zeros(4)).item() == pytest.approx(got.sum().item())


def test_mae_prob_is_twice_one_minus_the_true_class_probability():
    p = LOGITS.softmax(dim=-1)
    expected = (2 * (1 - (p * ONEHOT).sum(dim=-1))).mean().item()
    assert mae_prob_loss(LOGITS, ONEHOT).item() == pytest.approx(expected, rel=1e-6)
    assert MAEProbLoss()(LOGITS, ONEHOT).item() == pytest.approx(expected, rel=1e-6)


def test_mse_prob_is_the_brier_score():
    p = softmax_rows()
    expected = ((p[0][0] - 1) ** 2 + p[0][1] ** 2 + p[0][2] ** 2 + p[1][0] ** 2 + p[1][1] ** 2 + (p[1][2] - 1) ** 2) / 2
    assert mse_prob_loss(LOGITS, ONEHOT).item() == pytest.approx(expected, rel=1e-6)
    assert MSEProbLoss()(LOGITS, ONEHOT).item() == pytest.approx(expected, rel=1e-6)


def test_kl_without_smoothing_is_cross_entropy_and_with_smoothing_matches_label_smoothing():
    assert kl_loss(LOGITS, ONEHOT).item() == pytest.approx(F.cross_entropy(LOGITS, Y).item(), rel=1e-6)
    s = 0.1
    q = (1 - s) * ONEHOT + s / 3
    entropy = -(q * q.log()).sum(dim=1).mean()
    ce_smoothed = F.cross_entropy(LOGITS, Y, label_smoothing=s)
    assert KLLoss(smoothing=s)(LOGITS, ONEHOT).item() == pytest.approx((ce_smoothed - entropy).item(), rel=1e-5)


def test_dice_hand_computed_and_perfect_prediction():
    p = torch.tensor(softmax_rows())
    smooth = 1.0
    per_class = [
        1 - (2 * (p[:, c] * ONEHOT[:, c]).sum() + smooth) / (p[:, c].sum() + ONEHOT[:, c].sum() + smooth) for c in range(3)
    ]
    assert dice_loss(LOGITS, ONEHOT).item() == pytest.approx(float(sum(per_class) / 3), rel=1e-6)
    confident = 50 * ONEHOT
    assert DiceLoss(smooth=0.0)(confident, ONEHOT).item() < 1e-6 + 1 / 3  # class 1 is absent: its dice is 0/0 -> counts as loss 1
    assert DiceLoss(reduction="none")(LOGITS, ONEHOT).shape == (3,)


def test_soft_dice_is_per_image_over_the_foreground():
    from harness.losses import SoftDiceLoss, soft_dice_loss

    torch.manual_seed(0)
    logits, mask = torch.randn(3, 2, 5, 5), torch.randint(0, 2, (3, 5, 5))
    p = logits.softmax(1)[:, 1]
    q = (mask == 1).float()
    by_hand = [1 - (2 * (p[n] * q[n]).sum() + 1) / (p[n].sum() + q[n].sum() + 1) for n in range(3)]
    assert soft_dice_loss(logits, mask, reduction="none").tolist() == pytest.approx([float(v) for v in by_hand], rel=1e-6)
    assert SoftDiceLoss()(logits, mask).item() == pytest.approx(float(sum(by_hand) / 3), rel=1e-6)
    perfect = 50 * torch.nn.functional.one_hot(mask, 2).movedim(-1, 1).float()
    assert SoftDiceLoss(smooth=0.0)(perfect, mask).item() < 1e-6
    # an image whose foreground is tiny weighs as much as one whose foreground is large: the loss is per image
    small, large = torch.zeros(1, 5, 5, dtype=torch.long), torch.ones(1, 5, 5, dtype=torch.long)
    small[0, 0, 0] = 1
    miss = torch.stack([20 * torch.ones(2, 5, 5), torch.zeros(2, 5, 5)], 1)  # predicts background everywhere
    both = soft_dice_loss(miss, torch.cat([small, large]), smooth=0.0, reduction="none")
    assert both.tolist() == pytest.approx([1.0, 1.0], abs=1e-3)


@pytest.mark.parametrize(
    "fn, target",
    [
        (lambda x, t: focal_loss(x, t, gamma=2.0, alpha=[0.2, 0.3, 0.5]), Y),
        (lambda x, t: mse_prob_loss(x, t), ONEHOT.double()),
        (lambda x, t: mae_prob_loss(x, t), ONEHOT.double()),
        (lambda x, t: kl_loss(x, t, smoothing=0.1), ONEHOT.double()),
        (lambda x, t: dice_loss(x, t), ONEHOT.double()),
        (lambda x, t: log_cosh_loss(x, t), torch.zeros(2, 3, dtype=torch.double)),
    ],
)
def test_gradients_match_finite_differences(fn, target):
    x = LOGITS.double().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: fn(z, target), (x,))


def test_focal_gradient_equals_cross_entropy_gradient_at_gamma_zero():
    a = LOGITS.clone().requires_grad_(True)
    b = LOGITS.clone().requires_grad_(True)
    focal_loss(a, Y, gamma=0.0).backward()
    F.cross_entropy(b, Y).backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-6)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(gamma=-1)
    with pytest.raises(ValueError, match="smoothing"):
        KLLoss(smoothing=1.0)
    with pytest.raises(ValueError, match="reduction"):
        LogCoshLoss(reduction="avg")
