"""Importable by `python -m harness loss._target_=tests.helpers.X` in end-to-end tests."""

import torch


class ExplodingLoss(torch.nn.Module):
    """Raises on first use: a run that crashes mid-training."""

    def __init__(self, **ignored):
        super().__init__()

    def forward(self, input, target):
        raise RuntimeError("boom from ExplodingLoss")
