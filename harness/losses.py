"""The losses torch lacks, in torch's style: a functional form and a module form, same `reduction`.

Every loss in ``conf/loss/`` declares in its YAML which *targets* it takes:

- ``index``:  integer class indices, shape ``[N]`` (cross-entropy, focal, hinge)
- ``onehot``: class probabilities, shape ``[N, C]`` float (BCE one-vs-rest, KL, MSE on probabilities, Dice)
- ``real``:   real values, shape ``[N, 1]`` (MSE, MAE, Huber, smooth L1, log-cosh)
- ``count``: counts, shape ``[N, 1]`` float, for a model whose output is a log-rate (Poisson NLL
  from torch; MSE, MAE, Huber on exp(output) through ``OnRate``)
- ``sequence``: label strings padded with the class C, shape ``[N, L]`` (CTC, per-position CE)
- ``adversarial``: real samples ``[N, 2]`` for a GAN objective (``harness.losses_gan``, ``task=gan``)
- ``embedding``: class indices ``[N]`` for a metric-learning loss on an embedding task's output
  (triplet, contrastive, margin ranking, cross-entropy on the head: ``harness.losses_metric``)
- ``mask``: per-pixel class indices ``[N, H, W]`` for a segmentation task's per-pixel logits ``[N, C, H, W]``
  (cross-entropy per pixel, soft Dice per image)

A classification task can feed ``index`` and ``onehot`` losses (it builds one-hot targets once);
a regression task feeds ``real`` losses. The harness refuses any other pair before training.
Losses torch already has (CrossEntropyLoss, BCEWithLogitsLoss, MultiMarginLoss, MSELoss, L1Loss,
HuberLoss, SmoothL1Loss) are used straight from ``torch.nn`` through ``_target_``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TARGET_KINDS = ("index", "onehot", "real", "count", "embedding", "sequence", "adversarial", "mask")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _class_weights(alpha, num_classes: int, like: Tensor) -> Tensor | None:
    """alpha: None, a float (binary only: weight of class 1, class 0 gets 1 - alpha), or C weights."""
    if alpha is None:
        return None
    if isinstance(alpha, Tensor):
        w = alpha.to(dtype=like.dtype, device=like.device)
    elif isinstance(alpha, (int, float)):
        if num_classes != 2:
            raise ValueError(f"a scalar focal alpha needs 2 classes, got {num_classes}: give one weight per class")
        w = torch.tensor([1.0 - alpha, alpha], dtype=like.dtype, device=like.device)
    else:
        w = torch.as_tensor(list(alpha), dtype=like.dtype, device=like.device)
    if w.shape != (num_classes,):
        raise ValueError(f"focal alpha needs {num_classes} class weights, got shape {tuple(w.shape)}")
    return w


def focal_loss(logits: Tensor, target: Tensor, gamma: float = 2.0, alpha=None, reduction: str = "mean") -> Tensor:
    r"""Softmax focal loss (Lin et al., 2017) on logits ``[N, C]`` and class indices ``[N]``.

    .. math:: \ell_i = -\alpha_{y_i} (1 - p_{i,y_i})^\gamma \log p_{i,y_i}, \quad p_i = \mathrm{softmax}(x_i)

    ``gamma = 0`` and no ``alpha`` give cross-entropy. ``alpha`` weights classes: one weight per
    class, or for two classes a float, the weight of class 1 (class 0 gets ``1 - alpha``), as in
    RetinaNet's binary form. ``mean`` averages over samples (weights are not renormalised).
    """
    log_p = F.log_softmax(logits, dim=-1).gather(1, target.long().unsqueeze(1)).squeeze(1)
    loss = -((1.0 - log_p.exp()).clamp_min(0.0) ** gamma) * log_p
    w = _class_weights(alpha, logits.shape[-1], logits)
    if w is not None:
        loss = loss * w[target.long()]
    return _reduce(loss, reduction)


def log_cosh_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    r"""Log-cosh loss: :math:`\ell_i = \log\cosh(x_i - y_i)`.

    Quadratic near zero (like MSE/2), linear far away (like MAE - log 2), smooth everywhere.
    Computed stably as :math:`d + \mathrm{softplus}(-2d) - \log 2`.
    """
    d = input - target
    return _reduce(d + F.softplus(-2.0 * d) - math.log(2.0), reduction)


def mse_prob_loss(logits: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    r"""Squared error between softmax probabilities and one-hot targets (the Brier score).

    .. math:: \ell_i = \sum_c (\mathrm{softmax}(x_i)_c - q_{i,c})^2

    Its gradient through the softmax vanishes when the prediction is confidently wrong, which is
    the textbook reason classification uses cross-entropy instead.
    """
    return _reduce(((logits.softmax(dim=-1) - target) ** 2).sum(dim=-1), reduction)


def mae_prob_loss(logits: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    r"""Absolute error between softmax probabilities and one-hot targets (MAE for classification).

    .. math:: \ell_i = \sum_c |\mathrm{softmax}(x_i)_c - q_{i,c}|  \;(= 2 (1 - p_{i,y}) \text{ for one-hot } q)

    Bounded, and symmetric in the sense of Ghosh et al. (2017), hence robust to uniformly flipped
    labels; it learns slowly, since its gradient is small where p_y is small.
    """
    return _reduce((logits.softmax(dim=-1) - target).abs().sum(dim=-1), reduction)


def kl_loss(logits: Tensor, target: Tensor, smoothing: float = 0.0, reduction: str = "mean") -> Tensor:
    r"""KL divergence from target probabilities ``q`` to the model's softmax ``p``.

    .. math:: \ell_i = \sum_c q_{i,c} (\log q_{i,c} - \log p_{i,c}), \quad q = (1 - s)\,q + s / C

    ``smoothing`` s mixes the targets with the uniform distribution. With s = 0 and one-hot
    targets this equals cross-entropy. ``mean`` averages over samples (torch's ``batchmean``).
    """
    q = target if smoothing == 0 else (1.0 - smoothing) * target + smoothing / target.shape[-1]
    loss = F.kl_div(F.log_softmax(logits, dim=-1), q, reduction="none").sum(dim=-1)
    return _reduce(loss, reduction)


def dice_loss(logits: Tensor, target: Tensor, smooth: float = 1.0, reduction: str = "mean") -> Tensor:
    r"""Soft Dice loss over the batch, per class, then averaged over classes.

    .. math:: \ell = 1 - \frac{1}{C}\sum_c \frac{2\sum_i p_{i,c} q_{i,c} + s}{\sum_i p_{i,c} + \sum_i q_{i,c} + s}

    ``p`` is the softmax, ``q`` the one-hot target, ``s`` the smoothing term. Dice is a set
    measure, so it is computed over the whole batch; ``reduction='none'`` returns the per-class
    losses ``[C]`` instead of per-sample ones, and ``sum`` sums them.
    """
    p = logits.softmax(dim=-1)
    inter = (p * target).sum(dim=0)
    denom = p.sum(dim=0) + target.sum(dim=0)
    per_class = 1.0 - (2.0 * inter + smooth) / (denom + smooth)
    return _reduce(per_class, reduction)


def soft_dice_loss(logits: Tensor, mask: Tensor, smooth: float = 1.0, reduction: str = "mean") -> Tensor:
    r"""Soft Dice loss per image, over its foreground classes (all but class 0), for segmentation.

    .. math:: \ell_n = 1 - \frac{1}{C - 1}\sum_{c \ge 1} \frac{2\sum_j p_{n,j,c} q_{n,j,c} + s}{\sum_j p_{n,j,c} + \sum_j q_{n,j,c} + s}

    ``logits`` ``[N, C, H, W]``, ``mask`` the class of each pixel ``[N, H, W]``; ``p`` is the softmax over
    classes, ``q`` the one-hot mask, ``j`` runs over an image's pixels. ``reduction='none'`` gives ``[N]``.
    """
    p = logits.softmax(dim=1)[:, 1:]
    q = F.one_hot(mask, logits.shape[1]).movedim(-1, 1)[:, 1:].to(p.dtype)
    pixels = tuple(range(2, p.dim()))
    inter, denom = (p * q).sum(pixels), p.sum(pixels) + q.sum(pixels)
    per_image = 1.0 - ((2.0 * inter + smooth) / (denom + smooth)).mean(dim=1)
    return _reduce(per_image, reduction)


class _Loss(nn.Module):
    def __init__(self, reduction: str = "mean"):
        super().__init__()
        _reduce(torch.zeros(1), reduction)  # validate early
        self.reduction = reduction


class FocalLoss(_Loss):
    """Module form of :func:`focal_loss`. Targets: class indices."""

    def __init__(self, gamma: float = 2.0, alpha: float | Sequence[float] | Tensor | None = None, reduction: str = "mean"):
        super().__init__(reduction)
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        if alpha is not None and not isinstance(alpha, (int, float)):
            alpha = torch.as_tensor(list(alpha) if not isinstance(alpha, Tensor) else alpha, dtype=torch.float32)
            self.register_buffer("alpha", alpha)
        else:
            self.alpha = alpha

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return focal_loss(logits, target, self.gamma, self.alpha, self.reduction)


class LogCoshLoss(_Loss):
    """Module form of :func:`log_cosh_loss`. Targets: real values."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return log_cosh_loss(input, target, self.reduction)


class MSEProbLoss(_Loss):
    """Module form of :func:`mse_prob_loss`. Targets: one-hot probabilities."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return mse_prob_loss(logits, target, self.reduction)


class MAEProbLoss(_Loss):
    """Module form of :func:`mae_prob_loss`. Targets: one-hot probabilities."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return mae_prob_loss(logits, target, self.reduction)


class KLLoss(_Loss):
    """Module form of :func:`kl_loss`. Targets: one-hot probabilities (optionally smoothed)."""

    def __init__(self, smoothing: float = 0.0, reduction: str = "mean"):
        super().__init__(reduction)
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"KL smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = float(smoothing)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return kl_loss(logits, target, self.smoothing, self.reduction)


class DiceLoss(_Loss):
    """Module form of :func:`dice_loss`. Targets: one-hot probabilities."""

    def __init__(self, smooth: float = 1.0, reduction: str = "mean"):
        super().__init__(reduction)
        self.smooth = float(smooth)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return dice_loss(logits, target, self.smooth, self.reduction)


class SoftDiceLoss(_Loss):
    """Module form of :func:`soft_dice_loss`. Targets: per-pixel class indices (``mask``)."""

    def __init__(self, smooth: float = 1.0, reduction: str = "mean"):
        super().__init__(reduction)
        self.smooth = float(smooth)

    def forward(self, logits: Tensor, mask: Tensor) -> Tensor:
        return soft_dice_loss(logits, mask, self.smooth, self.reduction)


class OnRate(nn.Module):
    """A torch regression loss on the counts a log-rate output predicts: ``loss(exp(output), y)``
    (the log-rate clamped at 20 first, so a diverging model gives a large finite loss, not inf).
    ``base``: mse (``nn.MSELoss``), mae (``nn.L1Loss``) or huber (``nn.HuberLoss``, with ``delta``)."""

    BASES = {"mse": nn.MSELoss, "mae": nn.L1Loss, "huber": nn.HuberLoss}

    def __init__(self, base: str = "mse", **kwargs):
        super().__init__()
        if base not in self.BASES:
            raise ValueError(f"loss.base={base!r} is unknown; allowed: {', '.join(self.BASES)}")
        self.loss = self.BASES[base](**kwargs)

    def forward(self, output: Tensor, target: Tensor) -> Tensor:
        return self.loss(output.clamp(max=20.0).exp(), target)


class CTCLoss(nn.Module):
    """Torch's ``CTCLoss`` on per-frame logits ``[N, T, C + 1]`` (the last class the blank) and
    labels padded with ``C`` ``[N, L]``: no alignment of labels to frames is needed.
    ``decode``: greedy, the best class per frame, repeats merged, blanks dropped."""

    def __init__(self, zero_infinity: bool = True):
        super().__init__()
        self.zero_infinity = zero_infinity

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        n, t, c = logits.shape
        blank = c - 1
        log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # [T, N, C + 1]
        lengths = (target != blank).sum(1)
        ctc = nn.CTCLoss(blank=blank, zero_infinity=self.zero_infinity)
        return ctc(log_probs, target, torch.full((n,), t, dtype=torch.long, device=logits.device), lengths)

    @staticmethod
    def decode(logits: Tensor, max_length: int | None = None) -> list[list[int]]:
        blank = logits.shape[-1] - 1
        best = logits.argmax(-1)
        keep = (best != blank) & torch.cat([torch.ones_like(best[:, :1], dtype=torch.bool), best[:, 1:] != best[:, :-1]], 1)
        return [row[k].tolist() for row, k in zip(best, keep)]


class PositionCrossEntropy(nn.Module):
    """The baseline that needs aligned labels: the ``[N, T, C + 1]`` frames average-pooled into L
    equal slots, each scored by cross-entropy against the label at its index (the last class is
    the padding of a short sequence). ``decode``: the best class per slot, padding dropped."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    @staticmethod
    def slots(logits: Tensor, length: int) -> Tensor:
        return F.adaptive_avg_pool1d(logits.transpose(1, 2), length).transpose(1, 2)  # [N, L, C + 1]

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        slots = self.slots(logits, target.shape[1])
        return self.loss(slots.reshape(-1, slots.shape[-1]), target.reshape(-1))

    @classmethod
    def decode(cls, logits: Tensor, max_length: int) -> list[list[int]]:
        pad = logits.shape[-1] - 1
        return [[v for v in row if v != pad] for row in cls.slots(logits, max_length).argmax(-1).tolist()]
