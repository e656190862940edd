"""M models of one architecture as one: their parameters stacked ``[M, ...]`` and called in one go (batched
matrix products for a plain MLP, ``torch.func.vmap`` over ``functional_call`` for any other model), and
whether a model can be stacked at all; the bundle's losses over many members at once and their targets."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from harness.engine.train import as_targets

# a loss without a vmap batching rule (kl_div, multi_margin_loss) still vectorises, through torch's slower fallback
warnings.filterwarnings("ignore", message="There is a performance drop because we have not yet implemented the batching rule")

ACTIVATIONS = {
    nn.ReLU: torch.relu,
    nn.Tanh: torch.tanh,
    nn.Sigmoid: torch.sigmoid,
    nn.GELU: lambda h: nn.functional.gelu(h),
}  # GELU's default (exact) form only: see batched_mlp


# one step of a batched MLP: ("linear", weight's name, bias's name) or ("activation", function, None)
Layer = tuple[str, Any, Any]


class StackedModel:
    """M models of one architecture as stacked parameters, called as one."""

    def __init__(self, models: list[nn.Module]):
        params, buffers = stack_module_state(models)  # leaves [M, ...] that require grad
        self.params, self.buffers = params, buffers
        self.size = len(models)
        self.layers = batched_mlp(models[0])
        base = copy.deepcopy(models[0]).to("meta")

        def one(p, b, x):
            return functional_call(base, (p, b), (x,))

        self.per_member = vmap(one, in_dims=(0, 0, 0))  # each member its own batch [M, B, ...]
        self.shared_input = vmap(one, in_dims=(0, 0, None))  # every member on the same inputs [N, ...]

    def __call__(self, x: Tensor, shared: bool = False, members: slice | list[int] | Tensor | None = None) -> Tensor:
        """[M, B, ...] inputs, one batch per member -> [M, B, out]; shared: [N, ...] inputs for all
        members -> [M, N, out]. ``members`` (shared inputs only) picks some of the members."""
        params, buffers = self.params, self.buffers
        if members is not None:
            params = {k: v[members] for k, v in params.items()}
            buffers = {k: v[members] for k, v in buffers.items()}
        if self.layers is not None:
            return self.mlp(self.layers, params, x, shared)
        return (self.shared_input if shared else self.per_member)(params, buffers, x)

    def mlp(self, layers: list[Layer], params: dict[str, Tensor], x: Tensor, shared: bool) -> Tensor:
        """An MLP's forward pass as batched matrix products (the same arithmetic as vmap's, with less
        dispatch per step: a small model's step is mostly dispatch)."""
        h = x.reshape(len(x), -1) if shared else x.reshape(x.shape[0], x.shape[1], -1)
        for kind, a, b in layers:
            if kind == "linear":
                w, bias = params[a], params[b]
                h = (
                    torch.baddbmm(bias.unsqueeze(1), h, w.transpose(1, 2))
                    if h.dim() == 3
                    else torch.matmul(h, w.transpose(1, 2)) + bias.unsqueeze(1)
                )
            else:
                h = a(h)
        return h

    def views(self, start: int, stop: int) -> list[Tensor]:
        """Members start..stop-1's slices of every parameter, sharing storage with the stack: an
        optimizer stepping them updates the stacked model in place."""
        return [p.detach()[start:stop] for p in self.params.values()]

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None


def batched_mlp(model: nn.Module) -> list[Layer] | None:
    """The layers of a plain MLP (a Sequential of Flatten at the front, Linear with bias, and the
    activations in ACTIVATIONS), as (kind, ...) steps; None for any other model, which goes through vmap."""
    if not isinstance(model, nn.Sequential):
        return None
    steps: list[Layer] = []
    for i, (name, m) in enumerate(model.named_children()):
        if isinstance(m, nn.Flatten) and i == 0 and m.start_dim == 1:
            continue
        if type(m) is nn.Linear and m.bias is not None:
            steps.append(("linear", f"{name}.weight", f"{name}.bias"))
        elif type(m) in ACTIVATIONS and (type(m) is not nn.GELU or m.approximate == "none"):
            steps.append(("activation", ACTIVATIONS[type(m)], None))
        else:
            return None
    return steps


def stackable(model: nn.Module, sample: Tensor) -> str | None:
    """Why this model cannot be stacked (None if it can): buffers (BatchNorm) or randomness (dropout) in
    the forward pass would make a member differ from its solo run."""
    if any(True for _ in model.buffers()):
        return "its model has buffers (e.g. BatchNorm), which a stacked forward pass cannot keep per member"
    if any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules()):
        return "its model uses dropout, whose random masks would differ from a solo run's"
    try:
        StackedModel([model, model])(sample[:2].unsqueeze(0).expand(2, *sample[:2].shape))
    except Exception as e:
        return f"its model cannot be vectorised with torch.func.vmap ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
    return None


# ---------------------------------------------------------------- a bundle's losses and targets


def batched_loss(loss: nn.Module, per_sample_mean: bool) -> Callable[[Tensor, Tensor], Tensor] | None:
    """For a loss whose 'mean' is the mean of its per-sample values (its traits say
    ``per_sample_mean: true``; weighted cross-entropy: their weighted mean), one call for many members:
    (outputs [G, B, ...], targets [G, B, ...]) -> [G]. None for any other loss (Dice's mean is over the
    batch as a set), which runs member by member."""
    if not per_sample_mean or getattr(loss, "reduction", None) != "mean":
        return None
    if isinstance(loss, nn.CrossEntropyLoss) and loss.ignore_index >= 0:
        return None  # an ignored class would change each member's denominator
    per_sample: Any = copy.copy(loss)  # the same module (weights shared), reduction 'none'
    per_sample.reduction = "none"
    weight = loss.weight if isinstance(loss, nn.CrossEntropyLoss) else None

    def batched(out: Tensor, y: Tensor) -> Tensor:
        g, b = out.shape[:2]
        values = per_sample(out.reshape(g * b, *out.shape[2:]), y.reshape(g * b, *y.shape[2:])).reshape(g, b, -1)
        if weight is not None:  # torch's weighted mean: sum of w_y * loss over the sum of w_y
            return values.sum(dim=(1, 2)) / weight[y].reshape(g, b).sum(dim=1)
        return values.mean(dim=(1, 2))

    return batched


def target_tensors(y: Tensor, kinds: set[str], num_classes: int) -> dict[str, Tensor]:
    """The targets of every kind the members' losses take (``train.as_targets``, as the plain loop makes them)."""
    return {kind: as_targets(y, kind, num_classes) for kind in kinds}


def stack(tensors: list[Tensor]) -> Tensor:
    return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)  # one data set: a view, no copy


def members_index(ks: list[int]) -> slice | list[int]:
    """ks as a slice when they are consecutive (a view, cheaper to take and to back-propagate through)."""
    return slice(ks[0], ks[-1] + 1) if ks == list(range(ks[0], ks[-1] + 1)) else ks
