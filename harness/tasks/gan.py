"""Adversarial training on the mixture of 8 Gaussians on a ring (the standard mode-collapse test;
no download): a generator maps noise to 2-D points, a discriminator tells them from real ones.

Every split holds noise ``x`` (``[N, latent]``, fixed by the data seed) and real samples ``y``
(``[N, 2]``). The model holds both players; its ``forward(z)`` gives ``[G(z) | D(G(z))]``, so that
evaluation and the logged loss (the generator's) go through the harness's shared code. ``step``
makes each batch's two updates: the discriminator ``d_steps`` times on real vs generated samples,
then the generator, each player with its own param group of the one optimizer (so the chosen
optimizer and schedule drive both; ``task.generator`` / ``task.discriminator`` override its
hyperparameters per player, e.g. ``task.discriminator.lr``).

Metrics on generated samples against a split's real ones: energy distance (primary), modes
covered (a mode counts when at least 1% of the samples are high-quality ones near it) and the
share of high-quality samples (within 3 standard deviations of a mode).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from harness import HarnessError
from harness.tasks import Data, Split, Task, check_number, check_positive_int, check_seed
from harness.tasks.models import check_model, mlp

MODES = 8


def ring_centers(radius: float) -> Tensor:
    angles = torch.arange(MODES) * 2 * math.pi / MODES
    return radius * torch.stack([angles.cos(), angles.sin()], 1)


ENERGY_SAMPLES = 2000  # the energy distance compares the first this-many samples of each side ([n, n] distances)


def energy_distance(a: Tensor, b: Tensor) -> Tensor:
    """2 E|A - B| - E|A - A'| - E|B - B'| (Szekely), Euclidean; 0 when the distributions match."""
    a, b = a[:ENERGY_SAMPLES], b[:ENERGY_SAMPLES]
    return 2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean()


def mode_metrics(samples: Tensor, centers: Tensor, std: float) -> dict[str, Tensor]:
    d = torch.cdist(samples, centers)
    nearest, which = d.min(1)
    good = nearest < 3 * std
    per_mode = torch.bincount(which[good], minlength=len(centers))
    return {"modes": (per_mode >= max(1, 0.01 * len(samples))).sum().float(), "high_quality": good.float().mean()}


class Players(nn.Module):
    def __init__(self, generator: nn.Module, discriminator: nn.Module):
        super().__init__()
        self.generator, self.discriminator = generator, discriminator

    def forward(self, z: Tensor) -> Tensor:
        fake = self.generator(z)
        return torch.cat([fake, self.discriminator(fake)], 1)


class GAN(Task):
    name = "gan"
    targets = ("adversarial",)
    primary_metric = "test/energy"
    mode = "min"
    own_step = True

    def __init__(
        self,
        n_train: int = 10000,
        n_val: int = 2000,
        n_test: int = 2000,
        radius: float = 2.0,
        std: float = 0.02,
        latent: int = 2,
        hidden: Sequence[int] = (128, 128),
        activation: str = "relu",
        d_steps: int = 1,
        generator: dict | None = None,
        discriminator: dict | None = None,
        data_seed: int = 0,
    ):
        self.sizes = [check_positive_int(f"task.{k}", v) for k, v in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test))]
        self.radius = check_number("task.radius", radius, low=1e-6, what="a number > 0")
        self.std = check_number("task.std", std, low=1e-6, what="a number > 0")
        self.latent = check_positive_int("task.latent", latent)
        self.hidden, _ = check_model("mlp", hidden, activation, (1, 1))
        self.activation, self.d_steps = activation, check_positive_int("task.d_steps", d_steps)
        from omegaconf import DictConfig, OmegaConf

        self.players = {
            who: dict(OmegaConf.to_container(knobs) if isinstance(knobs, DictConfig) else knobs or {})
            for who, knobs in (("generator", generator), ("discriminator", discriminator))
        }
        for who, knobs in self.players.items():
            bad = [k for k in knobs if k == "params" or not isinstance(k, str)]
            if bad:
                raise HarnessError(f"task.{who} holds optimizer hyperparameters for that player (e.g. lr, betas); got {bad}")
            from harness.config.rules import NON_NEGATIVE, RULES, check_float32
            from harness.config.values import check_rule

            for key, value in knobs.items():  # the optimizer's own rules, but a player's lr may be 0 (frozen)
                rule = NON_NEGATIVE if key == "lr" else RULES["optimizer"].get(key)
                if rule is not None and value is not None:
                    check_rule(f"task.{who}.{key}", value, rule)
            check_float32(knobs, f"task.{who}")
        self.data_seed = check_seed("task.data_seed", data_seed)

    def load(self) -> Data:
        g = torch.Generator().manual_seed(self.data_seed)
        centers = ring_centers(self.radius)

        def split(n: int) -> Split:
            real = centers[torch.randint(0, MODES, (n,), generator=g)] + self.std * torch.randn(n, 2, generator=g)
            return Split(torch.randn(n, self.latent, generator=g), real)

        return Data(*(split(n) for n in self.sizes))

    def model(self) -> nn.Module:
        return Players(mlp(self.latent, 2, self.hidden, self.activation), mlp(2, 1, self.hidden, self.activation))

    def param_groups(self, model: nn.Module):
        assert isinstance(model, Players), "a GAN task trains its own model(): a generator and a discriminator"
        return [
            {"params": list(model.generator.parameters()), **self.players["generator"]},
            {"params": list(model.discriminator.parameters()), **self.players["discriminator"]},
        ]

    def step(self, model: nn.Module, loss_fn: Any, z: Tensor, real: Tensor, optimizer) -> tuple[Tensor, Tensor]:
        """loss_fn: a GAN objective, with d_loss, g_loss and penalty (harness.losses_gan.GANLoss)."""
        assert isinstance(model, Players), "a GAN task trains its own model(): a generator and a discriminator"
        fake = model.generator(z)
        for _ in range(self.d_steps):  # the discriminator's update(s): the generator has no gradient here
            d_loss = loss_fn.d_loss(model.discriminator(real), model.discriminator(fake.detach())) + loss_fn.penalty(
                model.discriminator, real, fake.detach()
            )
            optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
            optimizer.step()
        d_fake = model.discriminator(fake)
        g_loss = loss_fn.g_loss(d_fake.squeeze(1))
        optimizer.zero_grad(set_to_none=True)
        g_loss.backward()
        for p in model.discriminator.parameters():  # the generator's update alone: params without a gradient are not stepped
            p.grad = None
        optimizer.step()
        return g_loss.detach(), torch.cat([fake.detach(), d_fake.detach()], 1)

    def metrics(self, output: Tensor, y: Tensor) -> dict[str, Tensor]:
        samples = output[:, :2].float()
        return {
            "energy": energy_distance(samples, y.float()),
            **mode_metrics(samples, ring_centers(self.radius).to(samples.device), self.std),
        }
