"""Each schedule's LR curve, stepped once per optimizer step."""

import math

import pytest
import torch

from harness import schedules


def curve(factory, steps=100, steps_per_epoch=10, lr=1.0, **kw):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = schedules.build(lambda o, **run: factory(o, **run, **kw), opt, steps, steps_per_epoch)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_constant():
    assert set(curve(schedules.constant)) == {1.0}


def test_step_decays_every_step_epochs():
    lrs = curve(schedules.step, step_epochs=3, gamma=0.1)
    assert lrs[29] == pytest.approx(1.0) and lrs[30] == pytest.approx(0.1) and lrs[60] == pytest.approx(0.01)


def test_exponential_is_gamma_per_epoch():
    lrs = curve(schedules.exponential, gamma=0.5)
    assert lrs[10] == pytest.approx(0.5) and lrs[20] == pytest.approx(0.25) and lrs[5] == pytest.approx(0.5**0.5)


def test_cosine_goes_from_lr_to_min_lr():
    lrs = curve(schedules.cosine, min_lr=0.1)
    assert (
        lrs[0] == 1.0
        and lrs[50] == pytest.approx(0.55)
        and lrs[-1] == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi * 99 / 100)) / 2)
    )
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_warmup_cosine_rises_linearly_then_anneals():
    lrs = curve(schedules.warmup_cosine, warmup_fraction=0.1, start_factor=0.01)
    assert lrs[0] == pytest.approx(0.01) and lrs[10] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 0.01


def test_warmup_constant_is_the_tutorials_formula():
    lrs = curve(schedules.warmup_constant, warmup_epochs=3)  # 10 steps an epoch
    assert lrs[0] == lrs[9] == pytest.approx(1 / 3) and lrs[10] == pytest.approx(2 / 3) and lrs[20] == pytest.approx(1.0)
    assert set(lrs[20:]) == {1.0}


def test_onecycle_peaks_at_the_optimizer_lr():
    lrs = curve(schedules.onecycle, pct_start=0.3)
    peak = max(range(100), key=lambda i: lrs[i])
    assert lrs[0] == pytest.approx(1 / 25) and lrs[peak] == pytest.approx(1.0, rel=1e-3) and 25 <= peak <= 32
    assert lrs[-1] < 1e-3


def test_build_passes_only_the_run_length_a_torch_scheduler_accepts():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    from functools import partial

    sched = schedules.build(partial(torch.optim.lr_scheduler.StepLR, step_size=5), opt, total_steps=100, steps_per_epoch=10)
    assert isinstance(sched, torch.optim.lr_scheduler.StepLR)
