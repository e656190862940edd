"""python -m harness.report EXPERIMENT [--tracking-uri URI] [--out DIR] [--target TASK=VALUE ...]
python -m harness.report --gallery [--out DIR]"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from harness.report import ReportError
from harness.report.access import check_store, listing, waiting_out_locks
from harness.report.aggregate import DEFAULT_TARGETS
from harness.report.build import REPORTS, TOLERANCE, build_report
from harness.report.folder import RECORD, check_folder, read_record, safe_name
from harness.report.gallery import loss_gallery
from harness.report.load import (
    parse_where,
)

__all__ = ["RECORD", "main", "read_record", "safe_name", "waiting_out_locks"]


def parse_targets(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        task, _, value = item.partition("=")
        try:
            out[task] = float(value)
        except ValueError:
            raise ReportError(f"--target takes TASK=NUMBER (e.g. mnist=0.98), got {item!r}") from None
    return out


def parse_margin(text: str | None) -> object:
    if text is None:
        return None
    from harness.config.values import margin_ok

    value: object = text.strip()
    if not str(value).endswith("%"):
        try:
            value = float(str(value))
        except ValueError:
            value = None
    if value is None or not margin_ok(value):
        raise ReportError(f"--margin must be a number > 0 (in the metric's units) or N% (of the reference's mean), got {text!r}")
    return value


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.report", description="Tables and figures from an MLflow experiment.")
    p.add_argument("experiment", nargs="?", help="MLflow experiment name (a study's name, or a task's)")
    p.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"),
        help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)",
    )
    p.add_argument("--out", help="output folder (default: reports/EXPERIMENT, or reports/gallery, in the current folder)")
    p.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="TASK=VALUE",
        help=f"time-to-target threshold of a task's primary metric (defaults: {DEFAULT_TARGETS})",
    )
    p.add_argument("--gallery", action="store_true", help="plot the loss functions and their gradients instead")
    p.add_argument(
        "--list", action="store_true", help="list the store's experiments and their sweeps (also what no EXPERIMENT does)"
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=TOLERANCE,
        help=f"good region: grid settings within this fraction of a method's best validation score (default {TOLERANCE})",
    )
    p.add_argument(
        "--margin",
        help="the smallest difference that matters, for a study that declared none (a number in the metric's units, "
        "or N%% of the reference's mean); the report says it was given after the runs",
    )
    p.add_argument("--no-log", action="store_true", help="do not log the report to the sweep's parent run")
    p.add_argument(
        "--sweep",
        metavar="ID",
        help="report on this sweep (its id or its parent run's id) instead of the default "
        "unit: the newest sweep with the runs it reused, or all the sweeps of a declared study",
    )
    p.add_argument("--all-sweeps", action="store_true", help="report on every run of the experiment, whatever sweep made it")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace a report in the output folder that was made from other runs (files it did not write are kept)",
    )
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="report on a slice: only the runs whose param KEY equals VALUE (repeatable); "
        "default output reports/EXPERIMENT-KEY-VALUE, not logged to the parent run",
    )
    args = p.parse_args(argv)
    try:
        if not math.isfinite(args.tolerance) or not 0 <= args.tolerance < 1:
            raise ReportError(f"--tolerance must be a number in [0, 1) (a fraction of the best score), got {args.tolerance}")
        if args.gallery:
            out = Path(args.out or REPORTS / "gallery")
            check_folder(out)
            paths = loss_gallery(out / "regression_losses.png", out / "classification_losses.png")
            print("wrote " + ", ".join(paths))
            return 0
        if not args.experiment or args.list:
            check_store(args.tracking_uri)
            print(waiting_out_locks(lambda: listing(args.tracking_uri), args.tracking_uri))
            return 0
        margin = parse_margin(args.margin)
        where = parse_where(args.where)
        if "sweep_id" in where:  # --where sweep_id=ID is --sweep ID
            if args.sweep and args.sweep != where["sweep_id"]:
                raise ReportError("--sweep and --where sweep_id=... name different sweeps; give one")
            args.sweep = where.pop("sweep_id")
        if args.sweep and args.all_sweeps:
            raise ReportError("--sweep ID and --all-sweeps exclude each other")
        check_store(args.tracking_uri)
        name = args.experiment + "".join(f"-{k}-{v}" for k, v in where.items())
        out = waiting_out_locks(
            lambda: build_report(
                args.experiment,
                args.tracking_uri,
                Path(args.out or REPORTS / safe_name(name)),
                parse_targets(args.target),
                not args.no_log and not where,
                args.tolerance,
                where,
                args.force,
                args.sweep,
                args.all_sweeps,
                margin,
            ),
            args.tracking_uri,
        )
        figures = [f for f in (read_record(out) or {}).get("files", []) if f.endswith(".png")]
        print(f"wrote {out / 'report.md'}, {out / 'report.html'}, {out / 'summary.csv'} and {len(figures)} figures")
        return 0
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the folder went read-only, the disk is full, ...
        print(f"error: cannot write the report: {e.strerror or e}" + (f" ({e.filename})" if e.filename else ""), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
