"""The models tasks train: an MLP (any widths) and a small CNN for 28x28 images."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from harness.tasks import check_choice, check_widths

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid}
MODELS = ("mlp", "cnn")


def check_model(model: str, hidden, activation: str, channels) -> tuple[list[int], list[int]]:
    """The model knobs of a task (task.model, task.hidden, task.activation, task.channels), checked."""
    check_choice("task.model", model, MODELS)
    check_choice("task.activation", activation, tuple(ACTIVATIONS))
    return check_widths("task.hidden", hidden), check_widths("task.channels", channels, count=2)


def mlp(in_features: int, out_features: int, hidden: Sequence[int], activation: str = "relu") -> nn.Sequential:
    """Flatten, then Linear + activation per hidden width, then a Linear output layer."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; allowed: {', '.join(ACTIVATIONS)}")
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, int(h)), ACTIVATIONS[activation]()]
        width = int(h)
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def small_cnn(out_features: int, channels: Sequence[int] = (16, 32), hidden: int = 128) -> nn.Sequential:
    """Two 3x3 conv + ReLU + 2x2 max-pool blocks on 1x28x28 input, then a hidden Linear layer."""
    c1, c2 = (int(c) for c in channels)
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * 7 * 7, hidden),
        nn.ReLU(),
        nn.Linear(hidden, out_features),
    )
