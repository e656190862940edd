"""python -m harness.report --gallery: the loss functions and their gradients, drawn once for the docs."""

from __future__ import annotations

from collections.abc import Callable

from harness.report.figures import plt, save


def loss_gallery(path_regression, path_classification) -> tuple[str, str]:
    """Each loss (harness and torch implementations) and its gradient, against the error or the
    probability of the true class."""
    import torch
    import torch.nn.functional as F

    from harness.losses import focal_loss, log_cosh_loss, mse_prob_loss

    e = torch.linspace(-3, 3, 601, requires_grad=True)
    zero = torch.zeros_like(e)
    curves: dict[str, Callable] = {
        "MSE": lambda d: F.mse_loss(d, zero, reduction="none"),
        "MAE": lambda d: F.l1_loss(d, zero, reduction="none"),
    }
    for delta in (0.5, 1.0, 2.0):
        curves[f"Huber (delta={delta})"] = lambda d, delta=delta: F.huber_loss(d, zero, reduction="none", delta=delta)
    curves["smooth L1 (beta=1; = Huber delta=1)"] = lambda d: F.smooth_l1_loss(d, zero, reduction="none", beta=1.0)
    curves["log-cosh"] = lambda d: log_cosh_loss(d, zero, reduction="none")
    fig, axes = plt().subplots(1, 2, figsize=(12, 4.5))
    for name, fn in curves.items():
        loss = fn(e)
        (grad,) = torch.autograd.grad(loss.sum(), e)
        style = "--" if name.startswith("smooth") else "-"  # it lies exactly on Huber with delta=1
        axes[0].plot(e.detach(), loss.detach(), style, label=name)
        axes[1].plot(e.detach(), grad, style, label=name)
    axes[0].set(title="Regression losses", xlabel="error (prediction - target)", ylabel="loss", ylim=(0, 4.5))
    axes[1].set(
        title="Their gradients: how hard an error pulls", xlabel="error (prediction - target)", ylabel="d loss / d prediction"
    )
    axes[0].legend(fontsize=8)
    first = save(fig, path_regression)

    # two classes: the logit margin sets p(true class); losses from the harness's own implementations
    margin = torch.linspace(-6, 6, 601, requires_grad=True)
    logits = torch.stack([torch.zeros_like(margin), margin], dim=1)
    y = torch.ones(len(margin), dtype=torch.long)
    onehot = F.one_hot(y, 2).float()
    cls: dict[str, Callable] = {"cross-entropy": lambda z: F.cross_entropy(z, y, reduction="none")}
    for gamma in (1.0, 2.0, 5.0):
        cls[f"focal (gamma={gamma:g})"] = lambda z, gamma=gamma: focal_loss(z, y, gamma=gamma, reduction="none")
    cls["MSE on probabilities"] = lambda z: mse_prob_loss(z, onehot, reduction="none")
    cls["hinge (margin 1)"] = lambda z: F.multi_margin_loss(z, y, reduction="none")
    p = torch.sigmoid(margin).detach()
    fig, axes = plt().subplots(1, 2, figsize=(12, 4.5))
    for name, fn in cls.items():
        loss = fn(logits)
        (grad,) = torch.autograd.grad(loss.sum(), margin)
        axes[0].plot(p, loss.detach(), label=name)
        axes[1].plot(p, -grad, label=name)
    axes[0].set(title="Classification losses (two classes)", xlabel="probability of the true class", ylabel="loss", ylim=(0, 5))
    axes[1].set(
        title="Their gradients: push on the true-class logit",
        xlabel="probability of the true class",
        ylabel="- d loss / d logit of the true class",
    )
    axes[0].legend(fontsize=8)
    return first, save(fig, path_classification)
