"""python -m harness.bench [--quick] [--device cpu|cuda] [--data-dir DIR] [--out DIR]

Holds the harness against a raw PyTorch loop and its own targets. Every figure is a ratio of two
things timed side by side in this process (or in one sweep), repeated; the table gives the median
with [min, max]. Writes bench.md and bench.json into a new folder of its own (harness-bench-DATE in the
current folder) or --out, and prints the table. --quick runs the run-cost rows and the whole-process row.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from harness.bench.common import ROOT, machine
from harness.bench.loop import loop_rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.bench", description=__doc__.split("\n\n")[1])
    p.add_argument("--quick", action="store_true", help="the run-cost rows and the whole-process row, small, in a few minutes")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument(
        "--data-dir",
        default=os.environ.get("HARNESS_DATA_DIR", str(ROOT.parent / "shared" / "data")),
        help="folder holding MNIST/raw (default: $HARNESS_DATA_DIR or ../shared/data)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="where bench.md and bench.json go (default: a new folder harness-bench-DATE here; the published "
        "tables are --out reports/bench)",
    )
    p.add_argument("--reps", type=int, default=None, help="repetitions per figure (default 5, --quick 1)")
    p.add_argument("--sweeps-only", action="store_true", help="only the sweep rows (overhead, stacked launcher, whole process)")
    p.add_argument(
        "--only",
        default=None,
        help="comma-separated parts to run, of: loop, sweeps (or one of its rows: "
        "overhead, outliers, mnist12, whole, fresh, conv), cost (or one of its rows: tracked, launchers, batched, eval, eval_wide), grid, "
        "scaling (default: loop,sweeps,cost, plus grid and scaling when asked for; --quick: cost,whole)",
    )
    p.add_argument("--grid", action="store_true", help="add the full mnist_optimizers grid (108 runs x 10 epochs; long on a CPU)")
    p.add_argument(
        "--scaling",
        action="store_true",
        help="add a members-per-second vs bundle-size table (bundles of 1 to 64 MNIST MLPs, 2 epochs)",
    )
    args = p.parse_args(argv)
    from harness.bench.cost import COST_ROWS
    from harness.bench.sweeps import SWEEP_ROWS

    allowed = ("loop", "sweeps", *SWEEP_ROWS, "cost", *COST_ROWS, "grid", "scaling")
    parts = (
        set(args.only.split(","))
        if args.only
        else {"cost", "whole"}
        if args.quick
        else ({"sweeps"} if args.sweeps_only else {"loop", "sweeps", "cost"})
        | {k for k in ("grid", "scaling") if getattr(args, k)}
    )
    if not parts or parts - set(allowed):
        print(f"error: --only {args.only!r}: allowed parts are {', '.join(allowed)}", file=sys.stderr)
        return 2

    from harness import HarnessError
    from harness.engine.device import resolve_device
    from harness.tasks.mnist import MNIST

    try:
        device = resolve_device(args.device)
        MNIST(data_dir=args.data_dir, download=False).load()
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    quick, reps = args.quick, args.reps or (1 if args.quick else 5)
    epochs = 3 if quick else 6
    subset = ["task.n_train=10000"] if quick else []
    from harness.engine.device import resolve_threads

    threads = resolve_threads("auto")
    args.out = args.out or f"harness-bench-{time.strftime('%Y%m%d-%H%M%S')}"
    work = Path(tempfile.mkdtemp(prefix="harness-bench-"))  # the bench's stores and sweep folders; removed at the end
    from harness.tracking import signals

    signals.install()
    try:
        return measure(args, parts, device, quick, reps, epochs, subset, threads, work)
    except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM, SIGHUP: one line, the rows measured so far kept
        stopped = e if isinstance(e, signals.Stopped) else signals.Stopped()
        kept = f"the rows it measured are in {args.out}" if Path(args.out).exists() else "no row was measured, nothing written"
        print(f"interrupted ({stopped}): the bench stopped; {kept}", file=sys.stderr)
        return stopped.exit_code
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(args, parts, device, quick: bool, reps: int, epochs: int, subset: list[str], threads: int, work: Path) -> int:
    from harness.tasks.mnist import MNIST

    dev = str(device)
    store = f"sqlite:///{work}/bench.db"
    rows: list[dict] = []
    t_start = time.perf_counter()

    out = Path(args.out)
    scaling: list[dict] = []

    def save(final: bool = False) -> dict:
        """bench.json and bench.md with what is measured so far: a bench stopped at a time limit keeps its rows."""
        report = {
            "machine": machine(dev),
            "quick": quick,
            "reps": reps,
            "epochs": epochs,
            "threads_auto": threads,
            "seconds": time.perf_counter() - t_start,
            "complete": final,
            "rows": rows,
            "scaling": scaling or None,
            "date": time.strftime("%Y-%m-%d %H:%M"),
        }
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(report, indent=2))
        (out / "bench.md").write_text(markdown(report))
        return report

    def row(key, measure, a, b, ratio, target=None, met=None, note=""):
        rows.append(
            {
                "key": key,
                "measure": measure,
                "value": a,
                "baseline": b,
                "ratio": ratio,
                "target": target,
                "met": met,
                "note": note,
            }
        )
        save()
        r = ratio["median"] if isinstance(ratio, dict) else ratio
        verdict = (
            ""
            if not target
            else f" (expected: {target})"
            if met is None
            else f" (target {target}: {'met' if met else 'NOT met'})"
        )
        print(f"  {measure}: {r:.3f}{verdict}" + (f"  {note}" if note else ""), flush=True)

    print(f"harness bench on {dev}{' (quick)' if quick else ''}: {reps} repetitions, {epochs} epochs each", flush=True)
    data = (
        None
        if "loop" not in parts
        else MNIST(data_dir=args.data_dir, download=False, n_train=10000 if quick else None).load().to(device)
    )

    if "loop" in parts:
        loop_rows(row, args.data_dir, dev, device, store, data, reps, epochs, subset, threads, quick, work)
    from harness.bench import sweeps as bench_sweeps
    from harness.bench.cost import COST_ROWS, cost_rows

    cost = COST_ROWS if "cost" in parts else tuple(k for k in COST_ROWS if k in parts)
    if cost:
        cost_rows(row, work, dev, quick, reps, threads, cost)
    sweeps = bench_sweeps.SWEEP_ROWS if "sweeps" in parts else tuple(k for k in bench_sweeps.SWEEP_ROWS if k in parts)
    bench_sweeps.rows(row, work, args.data_dir, dev, quick, reps, "grid" in parts, sweeps)
    if "scaling" in parts:
        print("members per second vs bundle size (stacked launcher, default MNIST MLP):", flush=True)
        bench_sweeps.scaling(work, args.data_dir, dev, quick, out=scaling, on_line=save)

    report = save(final=True)
    print("\n" + markdown(report))
    print(f"wrote {out / 'bench.md'} and {out / 'bench.json'} in {report['seconds']:.0f} s")
    return 0


def fmt(x) -> str:
    if x is None:
        return ""
    if isinstance(x, dict):
        if "min" in x and x.get("n", 1) > 1:
            return f"{x['median']:.3g} [{x['min']:.3g}, {x['max']:.3g}]"
        return f"{x['median']:.3g}"
    return f"{x:.3g}"


def markdown(report: dict) -> str:
    m = report["machine"]
    stopped = (
        ""
        if report.get("complete", True)
        else "**Incomplete: the bench stopped before its last part; these rows are what it measured.**\n\n"
    )
    head = (
        f"# harness bench{' (quick)' if report['quick'] else ''}\n\n{stopped}"
        f"{report['date']}; {m['cpu']}, {m['cores']} cores; torch {m['torch']}; device {m['device']}"
        + (f" ({m['gpu']})" if "gpu" in m else "")
        + f"; threads=auto -> {report['threads_auto']}; "
        f"median [min, max] of {report['reps']} repetitions (sweeps: 2, quality: 3 seeds); harness runs: MNIST, MLP 784-256-10, Adam, batch 128, "
        f"{report['epochs']} epochs, s/epoch = median of epochs 2..n.\n\n"
    )
    lines = ["| measure | result | target | met | notes |", "|---|---|---|---|---|"]
    for r in report["rows"]:
        met = "" if r["met"] is None else ("yes" if r["met"] else "**no**")
        lines.append(f"| {r['measure']} | {fmt(r['ratio'])} | {r['target'] or ''} | {met} | {r['note']} |")
    text = head + ("\n".join(lines) + "\n" if report["rows"] else "")
    if report.get("scaling"):
        from harness.bench.sweeps import scaling_markdown

        epochs = report["scaling"][0]["epochs"]
        text += (
            f"\nMembers per second against bundle size: one stacked sweep of k seeds of the default MNIST MLP, "
            f"{epochs} epoch{'s' if epochs > 1 else ''} each, one bundle; member-epochs / s = k x epochs / the bundle's "
            "training seconds.\n\n" + scaling_markdown(report["scaling"])
        )
    return text


if __name__ == "__main__":
    sys.exit(main())
