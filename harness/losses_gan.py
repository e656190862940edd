"""GAN objectives for ``task=gan``: each gives the discriminator's loss on its logits for real and
generated samples, the generator's loss on the logits of its samples, and (WGAN-GP) a penalty.
With l a discriminator logit and softplus(l) = log(1 + e^l):

- ``nonsat`` (non-saturating, Goodfellow et al. 2014): D: softplus(-l_real) + softplus(l_fake)
  (binary cross-entropy); G: softplus(-l_fake), i.e. -log D(G(z));
- ``minimax``: D as nonsat; G: -softplus(l_fake), i.e. log(1 - D(G(z))), the original game;
- ``hinge`` (Lim and Ye 2017): D: max(0, 1 - l_real) + max(0, 1 + l_fake); G: -l_fake;
- ``least_squares`` (LSGAN, Mao et al. 2017): D: ((l_real - 1)^2 + l_fake^2) / 2; G: (l_fake - 1)^2 / 2;
- ``wasserstein`` with gradient penalty (Gulrajani et al. 2017): D: l_fake - l_real + lambda
  (||grad D(x_hat)|| - 1)^2 at x_hat between a real and a generated sample; G: -l_fake.

Means over the batch. The module's ``forward(output, real)`` is the generator's loss on the
logits the model's output carries (its last column), which is what a run logs as its loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

OBJECTIVES = ("nonsat", "minimax", "hinge", "least_squares", "wasserstein")


class GANLoss(nn.Module):
    def __init__(self, objective: str = "nonsat", gp_weight: float = 10.0, seed: int = 0):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"loss.objective={objective!r} is unknown; allowed: {', '.join(OBJECTIVES)}")
        self.objective, self.gp_weight = objective, float(gp_weight)
        self.generator = torch.Generator().manual_seed(seed)  # the penalty's interpolation weights

    def d_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        o = self.objective
        if o in ("nonsat", "minimax"):
            return F.softplus(-real).mean() + F.softplus(fake).mean()
        if o == "hinge":
            return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
        if o == "least_squares":
            return ((real - 1).pow(2).mean() + fake.pow(2).mean()) / 2
        return fake.mean() - real.mean()

    def g_loss(self, fake: Tensor) -> Tensor:
        o = self.objective
        if o == "nonsat":
            return F.softplus(-fake).mean()
        if o == "minimax":
            return -F.softplus(fake).mean()
        if o == "least_squares":
            return (fake - 1).pow(2).mean() / 2
        return -fake.mean()  # hinge, wasserstein

    def penalty(self, discriminator: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
        if self.objective != "wasserstein" or self.gp_weight == 0:
            return real.new_zeros(())
        eps = torch.rand(len(real), 1, generator=self.generator).to(real.device)
        x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
        (grad,) = torch.autograd.grad(discriminator(x_hat).sum(), x_hat, create_graph=True)
        return self.gp_weight * (grad.norm(dim=1) - 1).pow(2).mean()

    def forward(self, output: Tensor, real: Tensor) -> Tensor:
        return self.g_loss(output[:, -1])
