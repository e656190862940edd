"""The loop rows of ``python -m harness.bench``: the harness's training loop against the raw loop, epoch
by epoch, start-up, memory and the data path."""

from __future__ import annotations

import os
import statistics

from harness.bench.common import (
    cores,
    dataloader_epoch,
    harness_run,
    import_breakdown,
    raw_loop,
    startup,
    stats,
    steady_epochs,
    sweep_throughput,
    tensor_epoch,
)

# ---------------------------------------------------------------- the suite


def loop_rows(row, data_dir, dev, device, store, data, reps, epochs, subset, threads, quick, work) -> None:
    """The rows of one run against a raw loop: loop, tracking, data path, threads, joblib sweeps,
    start-up, memory, quality."""
    # warm-up: import MLflow and open the store once (start-up is timed below, in fresh processes)
    harness_run(data_dir, 1, dev, store, "task.n_train=1000")

    # 1 + 2: loop efficiency and tracking overhead, interleaved so that noise hits all three alike
    raw, on, off = [], [], []
    for _ in range(reps):
        raw.append(statistics.median(raw_loop(data, epochs, 128, threads, device)[1:] or [0]))
        on.append(statistics.median(steady_epochs(harness_run(data_dir, epochs, dev, store, *subset))))
        off.append(statistics.median(steady_epochs(harness_run(data_dir, epochs, dev, store, "tracking.enabled=false", *subset))))
    ratio = stats([a / b for a, b in zip(on, raw)])
    row(
        "loop",
        "loop efficiency: harness s/epoch / raw loop s/epoch",
        stats(on),
        stats(raw),
        ratio,
        "<= 1.10",
        ratio["median"] <= 1.10,
        f"s/epoch, each column's own median: harness {statistics.median(on):.3f}, raw {statistics.median(raw):.3f} "
        "(the result is the median of the paired ratios)",
    )
    ratio = stats([a / b for a, b in zip(on, off)])
    row("tracking", "tracking overhead: MLflow on / off", stats(on), stats(off), ratio, "<= 1.03", ratio["median"] <= 1.03)

    # 3: data path
    batches = 50 if quick else None
    loader_rates, tensor_rates = [], []
    for _ in range(reps):
        s, n = dataloader_epoch(data_dir, 128, threads, device, batches)
        loader_rates.append(n / s)
        s, n = tensor_epoch(data, 128, threads, device, batches)
        tensor_rates.append(n / s)
    ratio = stats([t / d for t, d in zip(tensor_rates, loader_rates)])
    row(
        "data_path",
        "data path: preloaded tensors / torchvision DataLoader (samples/s)",
        stats(tensor_rates),
        stats(loader_rates),
        ratio,
        ">= 20 (expected)",
        ratio["median"] >= 20,
        f"{'first 50 batches' if quick else 'one epoch'}, batch 128",
    )

    # 4: threads
    choices = {"auto": "auto", "1": 1, f"all ({os.cpu_count()})": os.cpu_count()}
    per: dict[str, list[float]] = {k: [] for k in choices}
    for _ in range(reps):
        for label, t in choices.items():
            r = harness_run(data_dir, epochs, dev, store, "tracking.enabled=false", f"threads={t}", *subset)
            per[label].append(statistics.median(steady_epochs(r)))
    best = min(statistics.median(v) for v in per.values())
    ratio = stats([v / best for v in per["auto"]])
    row(
        "threads",
        "threads: auto s/epoch / best of (1, auto, all)",
        stats(per["auto"]),
        {"median": best},
        ratio,
        "<= 1.10",
        ratio["median"] <= 1.10,
        ", ".join(f"{k}: {statistics.median(v):.3f} s" for k, v in per.items()) + f" (auto = {threads})",
    )

    # 5: sweep throughput, for jobs that do not scale with threads (small regression MLPs) and, in the
    # full run, for the MNIST MLP (which does: 2 threads run it ~1.4x faster than 1)
    kinds = [("regression", ["task=regression", f"epochs={30 if quick else 200}"])]
    if not quick:
        kinds.append(("mnist", ["task=mnist", f"data_dir={data_dir}", "epochs=2", "task.n_train=20000"]))
    for kind, sweep_args in kinds:
        jobs = 8
        wall, span, seen = [], [], {}
        for _ in range(1 if quick else min(2, reps)):  # each repetition is two whole sweeps
            r = sweep_throughput(jobs, sweep_args, work)
            wall.append(r["sequential"]["wall"] / r["joblib"]["wall"])
            span.append(r["sequential"]["span"] / r["joblib"]["span"])
            seen = {k: v["threads"] for k, v in r.items()}
        ratio = stats(wall)
        row(
            f"sweep_{kind}",
            f"sweep throughput, 8 {kind} jobs: sequential / joblib wall time",
            stats(wall),
            None,
            ratio,
            ">= 1.7 (2 cores)" if cores() == 2 else None,
            ratio["median"] >= 1.7 if cores() == 2 else None,
            f"steady state (first job start to last job end) {statistics.median(span):.2f}x; threads per job: "
            f"sequential {seen['sequential']}, joblib {seen['joblib']}",
        )

    # 6 + 7: start-up and memory
    seconds, rss = startup(data_dir, dev, store, reps)
    offenders = import_breakdown(data_dir, store)
    st = stats(seconds)
    row(
        "startup",
        "start-up: process start to first training step (s)",
        st,
        None,
        st,
        "<= 3 s",
        st["median"] <= 3.0,
        "imports: " + ", ".join(f"{m} {t:.2f}s" for m, t in offenders),
    )
    m = stats(rss)
    row("memory", "peak RSS of a default MNIST run (MB)", m, None, m, "<= 1536 MB", m["median"] <= 1536)

    # 8: quality at speed
    q_epochs = 2 if quick else 10
    acc5, acc10, t98 = [], [], []
    for seed in range(1 if quick else 3):
        r = harness_run(data_dir, q_epochs, dev, store, "tracking.enabled=false", f"seed={seed}", *subset)
        accs = [h["test/accuracy"] for h in r.history]
        acc5.append(accs[min(4, len(accs) - 1)])
        acc10.append(accs[-1])
        elapsed, reached = 0.0, None
        for h in r.history:
            elapsed += h["epoch_seconds"]
            if h["test/accuracy"] >= 0.98:
                reached = elapsed
                break
        t98.append(reached)
    a10 = stats(acc10)
    hit = [t for t in t98 if t is not None]
    row(
        "quality",
        f"MNIST test accuracy after {min(5, q_epochs)} / {q_epochs} epochs (default MLP, Adam)",
        a10,
        stats(acc5),
        a10,
        "98% within 10 epochs",
        (len(hit) == len(t98)) if not quick else None,
        f"after {min(5, q_epochs)}: {statistics.median(acc5):.4f}; time to 98%: "
        + (f"{statistics.median(hit):.1f} s of training ({len(hit)}/{len(t98)} seeds)" if hit else "not reached"),
    )
