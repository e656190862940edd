"""The run-cost rows of ``python -m harness.bench`` (issue 30), each a ratio of two things measured side by side:

(a) ``tracked``: the 20-job regression sweep, stacked, tracked / untracked wall time (target <= 1.2);
(b) ``launchers``: the same sweep, tracked, stacked / basic launcher wall time (target <= 0.5);
(c) ``batched``: the harness's bundle of those 20 members (its training seconds, from its runs) / a
    hand-written batched loop of the same 20 MLPs (stacked weights, ``torch.baddbmm``, one Adam, the same
    data, batch size, epochs and losses, validation and test evaluated each epoch; target <= 1.5);
(e) ``eval``: one evaluation of 15,000 MNIST-sized images by the small CNN on one thread (a sweep's job on a CPU),
    in the chunks ``eval_batch_size=auto`` picks there / in chunks of 4096 (the old default; target <= 1.0);
    ``eval_wide``: the same for 3,000 canvases of 6 MNIST digits (28 x 252) by the sequence model, against chunks
    of 256 (auto's value before it shrank for wide inputs; target <= 1.0).
The whole-process row (d) is ``sweeps.py``'s ``whole``.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from harness.bench.common import run_sweep, span, stats

REGRESSION_20 = ["task=regression", "loss=mse,mae,huber,log_cosh", "seed=0,1,2,3,4", "epochs=5"]
COST_ROWS = ("tracked", "launchers", "batched", "eval", "eval_wide")
LOSSES = {
    "mse": lambda out, y: F.mse_loss(out, y, reduction="none").mean(dim=(1, 2)),
    "mae": lambda out, y: F.l1_loss(out, y, reduction="none").mean(dim=(1, 2)),
    "huber": lambda out, y: F.huber_loss(out, y, reduction="none").mean(dim=(1, 2)),
    "log_cosh": lambda out, y: (out - y + F.softplus(-2 * (out - y)) - torch.log(torch.tensor(2.0))).mean(dim=(1, 2)),
}


def batched_floor(members: int, epochs: int, batch_size: int, threads: int, device: str) -> float:
    """Seconds of the hand-written batched loop: ``members`` 64-64 MLPs of the regression task as stacked
    weights, trained together (one Adam over the stacked tensors), four losses in equal groups, every
    member evaluated on validation and test each epoch."""
    from harness.tasks.regression import Regression

    torch.set_num_threads(threads)
    dev = torch.device(device)
    data = Regression().load().to(dev)
    x, y = data.train.x, data.train.y
    g = torch.Generator().manual_seed(0)
    sizes = [x.shape[1], 64, 64, y.shape[1]]
    weights = [(torch.randn(members, a, b, device=dev) / a**0.5).requires_grad_() for a, b in zip(sizes, sizes[1:])]
    biases = [torch.zeros(members, 1, b, device=dev, requires_grad=True) for b in sizes[1:]]
    opt = torch.optim.Adam(weights + biases, lr=1e-3)
    groups = [list(range(i, members, len(LOSSES))) for i in range(len(LOSSES))]

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        h = inputs.expand(members, *inputs.shape)
        for i, (w, b) in enumerate(zip(weights, biases)):
            h = torch.baddbmm(b, h, w)
            if i < len(weights) - 1:
                h = torch.relu(h)
        return h

    t0 = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=g).to(dev)
        for start in range(0, len(y), batch_size):
            idx = order[start : start + batch_size]
            out, target = forward(x[idx]), y[idx].expand(members, -1, -1)
            loss = sum(fn(out[k], target[k]).sum() for fn, k in zip(LOSSES.values(), groups))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            scores = [((forward(s.x) - s.y) ** 2).mean(dim=(1, 2)) for s in (data.val, data.test)]
            torch.stack(scores).tolist()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return time.perf_counter() - t0


def cost_rows(row, work: Path, device: str, quick: bool, reps: int, threads: int, which=COST_ROWS) -> None:
    """Adds the rows of ``which`` through ``row(key, measure, value, baseline, ratio, target, met, note)``."""
    n = 1 if quick else min(3, reps)
    args = [*REGRESSION_20, f"device={device}", f"threads={threads}"]
    tracked_walls, members_seconds = [], []
    if "tracked" in which or "batched" in which:
        ratios, untracked_walls = [], []
        for _ in range(n):
            on, runs = run_sweep(work, "cost_tracked", args, "stacked")
            off, _ = run_sweep(work, "cost_untracked", [*args, "tracking.enabled=false"], "stacked")
            ratios.append(on / off)
            tracked_walls.append(on)
            untracked_walls.append(off)
            members_seconds.append(max(float(r.data.tags.get("train_seconds", 0)) for r in runs))
        if "tracked" in which:
            r = stats(ratios)
            row(
                "cost_tracked",
                "20-job regression sweep, stacked: tracked / untracked wall time",
                stats(tracked_walls),
                stats(untracked_walls),
                r,
                "<= 1.2",
                r["median"] <= 1.2,
                f"tracked {statistics.median(tracked_walls):.1f} s, untracked {statistics.median(untracked_walls):.1f} s, "
                f"a difference of {(statistics.median(tracked_walls) - statistics.median(untracked_walls)) / 20:.3f} s a run, "
                f"the process's fixed costs of tracking (MLflow's import, the store, the sweep's parent run) included; "
                f"{threads} thread(s)",
            )
    if "launchers" in which:
        ratios, basics, stackeds, spans = [], [], [], []
        for _ in range(n):
            stacked, stacked_runs = run_sweep(work, "cost_stacked", args, "stacked")
            basic, basic_runs = run_sweep(work, "cost_basic", args, "basic")
            ratios.append(stacked / basic)
            stackeds.append(stacked)
            basics.append(basic)
            spans.append((span(stacked_runs), span(basic_runs)))
        span_s, span_b = (statistics.median(x) for x in zip(*spans))
        r = stats(ratios)
        row(
            "cost_launchers",
            "20-job regression sweep, tracked: stacked / basic launcher wall time",
            stats(stackeds),
            stats(basics),
            r,
            "<= 0.5",
            r["median"] <= 0.5,
            f"stacked {statistics.median(stackeds):.1f} s, basic {statistics.median(basics):.1f} s; from the first run's start "
            f"to the last one's end (the process's start-up left out): stacked {span_s:.2f} s, basic {span_b:.2f} s, "
            f"{span_s / span_b:.2f}x; {threads} thread(s)",
        )
    if "batched" in which:
        floors = [batched_floor(20, 5, 128, threads, device) for _ in range(n)]
        r = stats([m / f for m, f in zip(members_seconds, floors)])
        row(
            "cost_batched",
            "a bundle of the 20 regression members (its training seconds) / a hand-written batched loop of them",
            stats(members_seconds),
            stats(floors),
            r,
            "<= 1.5",
            r["median"] <= 1.5,
            f"bundle {statistics.median(members_seconds):.2f} s (opening its runs to closing them, evaluation and metric "
            f"writes included), hand-written {statistics.median(floors):.2f} s; {threads} thread(s)",
        )
    for case in EVAL_ROWS:
        if case in which:
            eval_row(row, case, device, quick, reps, 1)  # where auto differs from 4096: one thread


EVAL_ROWS = {  # key: (what it measures, the chunk auto is measured against (the default it replaced), input shape, inputs)
    "eval": ("evaluation of 15,000 MNIST images by the small CNN, one thread", 4096, (1, 28, 28), 15000),
    "eval_wide": (
        "evaluation of 3,000 strings of 6 MNIST digits (28 x 252) by the sequence model, one thread",
        256,
        (1, 28, 6 * (28 + 14)),  # sequence_losses_mnist's canvases: 6 digits, each after a gap of up to 14 columns
        3000,
    ),
}


def eval_model(case: str) -> torch.nn.Module:
    """The model of an evaluation row: ``eval``, the small CNN; ``eval_wide``, the sequence task's column model."""
    if case == "eval":
        from harness.tasks.models import small_cnn

        return small_cnn(10, [16, 32], 128)
    from harness.tasks.sequence import ColumnNet

    return ColumnNet(28, 16, 11)


def eval_seconds(case: str, chunk: int, threads: int, device: str, reps: int) -> list[float]:
    """Seconds to evaluate the row's inputs (random values) in chunks of ``chunk``, ``reps`` times."""
    from harness.engine.train import outputs_of
    from harness.tasks import Split

    torch.set_num_threads(threads)
    dev = torch.device(device)
    _, _, shape, n = EVAL_ROWS[case]
    model = eval_model(case).to(dev)
    split = Split(torch.randn(n, *shape, generator=torch.Generator().manual_seed(0)).to(dev), torch.zeros(n))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        outputs_of(model, split, chunk)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - t0)
    return times


def eval_row(row, case: str, device: str, quick: bool, reps: int, threads: int) -> None:
    """(e): the evaluation chunk auto picks against the one it replaced, interleaved so that noise hits both alike."""
    from harness.engine.device import resolve_eval_chunk

    what, baseline, shape, _ = EVAL_ROWS[case]
    auto = resolve_eval_chunk("auto", torch.device(device), threads, sample_values=int(torch.Size(shape).numel()))
    eval_seconds(case, auto, threads, device, 1)  # warm-up
    ours, old = [], []
    for _ in range(1 if quick else reps):
        ours.append(statistics.median(eval_seconds(case, auto, threads, device, 3)))
        old.append(statistics.median(eval_seconds(case, baseline, threads, device, 3)))
    r = stats([a / b for a, b in zip(ours, old)])
    row(
        f"cost_{case}",
        f"{what}: eval_batch_size=auto / {baseline}",
        stats(ours),
        stats(old),
        r,
        "<= 1.0",
        r["median"] <= 1.0,
        f"auto is {auto} on {device}: {statistics.median(ours):.2f} s, {baseline}: {statistics.median(old):.2f} s; "
        f"{threads} thread(s)",
    )
