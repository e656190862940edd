"""Evaluation metrics computed in torch on the run's device (no host round-trip per batch).

Each function returns 0-dim tensors; the training loop reads all of an epoch's metrics to the host
in one transfer. They match scikit-learn's definitions (tests check that).
"""

from __future__ import annotations

import torch
from torch import Tensor


def regression_metrics(pred: Tensor, y: Tensor) -> dict[str, Tensor]:
    """MSE, MAE and R^2 (1 - SS_res / SS_tot) of predictions against real targets."""
    pred, y = pred.reshape(-1).float(), y.reshape(-1).float()
    err = pred - y
    ss_tot = ((y - y.mean()) ** 2).sum()
    return {
        "mse": (err**2).mean(),
        "mae": err.abs().mean(),
        "r2": 1.0 - (err**2).sum() / ss_tot.clamp_min(torch.finfo(ss_tot.dtype).tiny),
    }


def confusion_matrix(y: Tensor, pred: Tensor, num_classes: int) -> Tensor:
    """Rows: true class, columns: predicted class."""
    return torch.bincount(y.long() * num_classes + pred.long(), minlength=num_classes**2).reshape(num_classes, num_classes)


def average_precision(scores: Tensor, positive: Tensor) -> Tensor:
    """Area under the precision-recall curve as a step function (scikit-learn's average_precision_score)."""
    order = torch.argsort(scores, descending=True, stable=True)
    s, pos = scores[order], positive[order].float()
    tps, fps = pos.cumsum(0), (1.0 - pos).cumsum(0)
    last_of_tie = torch.ones_like(s, dtype=torch.bool)
    last_of_tie[:-1] = s[1:] != s[:-1]  # thresholds at distinct scores only
    tps, fps = tps[last_of_tie], fps[last_of_tie]
    n_pos = pos.sum()
    precision = tps / (tps + fps)
    recall = tps / n_pos.clamp_min(1.0)
    delta = torch.diff(recall, prepend=recall.new_zeros(1))
    return torch.where(n_pos > 0, (delta * precision).sum(), torch.full_like(n_pos, float("nan")))


def classification_metrics(logits: Tensor, y: Tensor, minority_class: int | None = None) -> dict[str, Tensor]:
    """Accuracy and macro-F1; with ``minority_class`` also balanced accuracy, that class's recall,
    and average precision of class 1 when there are two classes."""
    num_classes = logits.shape[-1]
    pred = logits.argmax(dim=-1)
    cm = confusion_matrix(y, pred, num_classes).float()
    tp, support, predicted = cm.diagonal(), cm.sum(dim=1), cm.sum(dim=0)
    recall = tp / support.clamp_min(1.0)
    precision = tp / predicted.clamp_min(1.0)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-12), torch.zeros_like(tp))
    out = {"accuracy": tp.sum() / cm.sum(), "macro_f1": f1.mean()}
    if minority_class is not None:
        present = support > 0
        out["balanced_accuracy"] = recall[present].mean()
        out["minority_recall"] = recall[minority_class]
        if num_classes == 2:
            out["average_precision"] = average_precision(logits.float().softmax(dim=-1)[:, 1], y == 1)
    return out


RETRIEVAL_LIMIT = 5000  # within-split retrieval metrics use at most this many samples (a [n, n] distance matrix)


def _chunks(n: int, size: int = 1024):
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


def nearest_label_accuracy(query: Tensor, qy: Tensor, gallery: Tensor, gy: Tensor) -> Tensor:
    """1-nearest-neighbour accuracy (Euclidean) of query embeddings against a labelled gallery."""
    hits = torch.zeros((), device=query.device)
    for s in _chunks(len(query)):
        hits += (gy[torch.cdist(query[s], gallery).argmin(1)] == qy[s]).sum()
    return hits / max(1, len(query))


def retrieval_metrics(emb: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Leave-one-out retrieval within a set of embeddings (its first ``RETRIEVAL_LIMIT`` samples):
    recall@1 (the nearest other sample has the same label) and MAP@R (Musgrave et al., 2020: with R
    the number of other samples of the query's class, the mean over queries of
    (1/R) sum_{k <= R} precision@k x [the k-th nearest is of its class])."""
    emb, y = emb[:RETRIEVAL_LIMIT].float(), y[:RETRIEVAL_LIMIT]
    n = len(y)
    counts = torch.bincount(y)[y] - 1  # R per query
    r_max = int(counts.max()) if n else 0
    hits, ap = torch.zeros((), device=emb.device), torch.zeros((), device=emb.device)
    valid = (counts > 0).sum().clamp_min(1)
    for s in _chunks(n):
        d = torch.cdist(emb[s], emb)
        d[torch.arange(s.stop - s.start, device=emb.device), torch.arange(s.start, s.stop, device=emb.device)] = float("inf")
        order = d.topk(max(1, r_max), dim=1, largest=False).indices
        rel = (y[order] == y[s].unsqueeze(1)).float()  # [q, r_max]
        hits += rel[:, 0].sum()
        k = torch.arange(1, rel.shape[1] + 1, device=emb.device)
        within = (k.unsqueeze(0) <= counts[s].unsqueeze(1)).float()
        precision = rel.cumsum(1) / k
        ap += ((precision * rel * within).sum(1) / counts[s].clamp_min(1)).sum()
    return {"recall_at_1": hits / max(1, n), "map_at_r": ap / valid}
