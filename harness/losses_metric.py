"""Metric-learning losses: triplet, contrastive, margin ranking, and cross-entropy on a classifier
head as their baseline. They take ``embedding`` targets (class labels ``[N]``) and the output of an
embedding task's model: ``[N, dim + C]``, the embedding (its first ``dim`` columns) followed by the
logits of a linear head on it (see ``harness.tasks.embedding``). The harness passes ``dim``.

Pairs and triplets are formed inside each batch from the labels. Torch's ``TripletMarginLoss`` and
``MarginRankingLoss`` compute the losses; only what torch lacks is written here: the mining and
the contrastive loss.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from harness.losses import _reduce

MININGS = ("random", "semi_hard", "batch_hard")


def contrastive_loss(d: Tensor, y: Tensor, margin: float = 1.0, reduction: str = "mean") -> Tensor:
    r"""Contrastive loss (Hadsell, Chopra and LeCun, 2006) on pair distances ``d`` and pair labels
    ``y`` (1 for a dissimilar pair, 0 for a similar one):

    .. math:: \ell = (1 - y)\, d^2 / 2 + y\, \max(0, m - d)^2 / 2

    Similar pairs are pulled together; dissimilar ones pushed apart until they are ``m`` apart.
    """
    y = y.to(d.dtype)
    return _reduce((1 - y) * d.pow(2) / 2 + y * (margin - d).clamp_min(0).pow(2) / 2, reduction)


def distances(e: Tensor) -> Tensor:
    """Euclidean distances between the rows of e, [B, B], with a gradient that stays finite at 0."""
    norms = e.pow(2).sum(1)
    sq = norms.unsqueeze(1) + norms.unsqueeze(0) - 2 * e @ e.T
    return sq.clamp_min(1e-12).sqrt()


def masks(y: Tensor) -> tuple[Tensor, Tensor]:
    """(positive, negative) pair masks of a batch's labels: same label but not itself; another label."""
    same = y.unsqueeze(0) == y.unsqueeze(1)
    eye = torch.eye(len(y), dtype=torch.bool, device=y.device)
    return same & ~eye, ~same


@torch.no_grad()
def mine(d: Tensor, y: Tensor, mining: str, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(anchor, positive, negative) index triplets from a batch's distances ``d`` and labels ``y``.

    - ``batch_hard`` (Hermans et al., 2017): per anchor, its farthest positive and nearest negative;
    - ``semi_hard`` (FaceNet, Schroff et al., 2015): per positive pair (a, p), the nearest negative
      farther from a than p is; when there is none, the farthest negative (as TensorFlow Addons does);
    - ``random``: per anchor, a positive and a negative drawn uniformly (from ``generator``).
    Anchors with no positive or no negative in the batch take no part.
    """
    pos, neg = masks(y)
    anchors = (pos.any(1) & neg.any(1)).nonzero().squeeze(1)
    if mining == "batch_hard":
        p = d.masked_fill(~pos, float("-inf"))[anchors].argmax(1)
        n = d.masked_fill(~neg, float("inf"))[anchors].argmin(1)
        return anchors, p, n
    if mining == "semi_hard":
        a, p = (pos & (neg.any(1, keepdim=True))).nonzero(as_tuple=True)
        dan = d[a]  # [P, B]: distances from each pair's anchor
        farther = neg[a] & (dan > d[a, p].unsqueeze(1))
        nearest_farther = dan.masked_fill(~farther, float("inf")).argmin(1)
        farthest = dan.masked_fill(~neg[a], float("-inf")).argmax(1)
        return a, p, torch.where(farther.any(1), nearest_farther, farthest)
    if mining == "random":
        rows = (pos[anchors].float().cpu(), neg[anchors].float().cpu())
        if not len(anchors):
            return anchors, anchors, anchors
        p, n = (torch.multinomial(w, 1, generator=generator).squeeze(1).to(d.device) for w in rows)
        return anchors, p, n
    raise ValueError(f"mining must be one of {', '.join(MININGS)}, got {mining!r}")


class EmbeddingLoss(nn.Module):
    """Splits the model's output into the embedding (first ``dim`` columns) and the head's logits.
    On more than ``CHUNK`` samples (a whole split at evaluation) the loss is the mean of its values
    on consecutive chunks, so that its pair matrices stay ``CHUNK`` x ``CHUNK``."""

    CHUNK = 2048

    def __init__(self, dim: int):
        super().__init__()
        self.dim = int(dim)

    def embedding(self, out: Tensor) -> Tensor:
        return out[:, : self.dim]

    def forward(self, out: Tensor, y: Tensor) -> Tensor:
        if len(y) <= self.CHUNK:
            return self.batch_loss(out, y)
        parts = [
            (self.batch_loss(out[i : i + self.CHUNK], y[i : i + self.CHUNK]), len(y[i : i + self.CHUNK]))
            for i in range(0, len(y), self.CHUNK)
        ]
        return cast(Tensor, sum(v * n for v, n in parts)) / len(y)

    def batch_loss(self, out: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError


def check_mining(mining: str) -> str:
    if mining not in MININGS:
        raise ValueError(f"loss.mining={mining!r} is unknown; allowed: {', '.join(MININGS)}")
    return mining


class TripletLoss(EmbeddingLoss):
    """Torch's ``TripletMarginLoss``, max(0, d(a, p) - d(a, n) + margin), on triplets mined in the batch."""

    def __init__(self, dim: int, margin: float = 0.2, mining: str = "semi_hard", seed: int = 0):
        super().__init__(dim)
        self.mining = check_mining(mining)
        self.loss = nn.TripletMarginLoss(margin=margin)
        self.generator = torch.Generator().manual_seed(seed)

    def batch_loss(self, out: Tensor, y: Tensor) -> Tensor:
        e = self.embedding(out)
        a, p, n = mine(distances(e.detach()), y, self.mining, self.generator)
        if not len(a):
            return e.sum() * 0.0  # no anchor with a positive and a negative in this batch
        return self.loss(e[a], e[p], e[n])


class MarginRankingLoss(EmbeddingLoss):
    """Torch's ``MarginRankingLoss`` on the distances of a negative and a positive pair of each
    mined triplet: max(0, -(d(a, n) - d(a, p)) + margin), the negative ranked farther."""

    def __init__(self, dim: int, margin: float = 0.2, mining: str = "batch_hard", seed: int = 0):
        super().__init__(dim)
        self.mining = check_mining(mining)
        self.loss = nn.MarginRankingLoss(margin=margin)
        self.generator = torch.Generator().manual_seed(seed)

    def batch_loss(self, out: Tensor, y: Tensor) -> Tensor:
        e = self.embedding(out)
        d = distances(e)
        a, p, n = mine(d.detach(), y, self.mining, self.generator)
        if not len(a):
            return e.sum() * 0.0
        return self.loss(d[a, n], d[a, p], torch.ones_like(d[a, n]))


class ContrastiveLoss(EmbeddingLoss):
    """``contrastive_loss`` over every pair (i < j) of the batch, y = 1 where the labels differ."""

    def __init__(self, dim: int, margin: float = 1.0):
        super().__init__(dim)
        self.margin = float(margin)

    def batch_loss(self, out: Tensor, y: Tensor) -> Tensor:
        d = distances(self.embedding(out))
        i, j = torch.triu_indices(len(y), len(y), offset=1, device=y.device)
        return contrastive_loss(d[i, j], y[i] != y[j], self.margin)


class HeadCrossEntropy(EmbeddingLoss):
    """The baseline: cross-entropy on the logits of the linear head over the embedding (its last columns)."""

    def __init__(self, dim: int, label_smoothing: float = 0.0):
        super().__init__(dim)
        self.loss = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def batch_loss(self, out: Tensor, y: Tensor) -> Tensor:
        return self.loss(out[:, self.dim :], y)
