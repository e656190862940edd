"""A report's output folder: whether it can be written, and what the report may replace or remove there
(only the files it recorded writing, in ``.harness-report.json``; nothing a user put there)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from pathlib import Path

from harness.report import ReportError

RECORD = ".harness-report.json"  # in a report's folder: what it was made from and the files it wrote (nothing else is removed)


def check_folder(out: Path) -> None:
    """The output folder can be a folder we write into: one line for a file in its way or no permission."""
    for part in (out, *out.parents):
        if part.exists():
            if not part.is_dir():
                raise ReportError(f"cannot write the report into {out}: {part} is a file, not a folder")
            break
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ReportError(f"cannot create the report folder {out}: {e.strerror}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ReportError(f"cannot write the report into {out}: permission denied (pass --out to a folder you can write)")


def read_record(out: Path) -> dict | None:
    """What the report in this folder was made from and which files it wrote (None: no report recorded here)."""
    try:
        record = json.loads((out / RECORD).read_text())
        return record if isinstance(record, dict) and isinstance(record.get("files"), list) else None
    except (OSError, ValueError):
        return None


def claim_folder(out: Path, experiment: str, where: dict, run_ids: list[str], force: bool) -> list[str]:
    """May this report be written into ``out``? Only over nothing, over a report of the same
    experiment (and slice) whose runs it still holds (a report that grew), or with --force. Returns
    the files the earlier report recorded writing there: the only ones this one may remove."""
    check_folder(out)
    record = read_record(out)
    if (out / "report.md").exists() and not force:
        if record is None:
            raise ReportError(
                f"{out} already holds a report.md this command did not record writing; pass --force to "
                "replace it (files it did not write are kept), or --out another folder"
            )
        same = record.get("experiment") == experiment and record.get("where", {}) == where
        if not same or not set(record.get("runs", [])) <= set(run_ids):
            raise ReportError(
                f"{out} holds a report made from other runs ({len(record.get('runs', []))} runs of "
                f"{record.get('experiment')!r}, generated {record.get('generated')}); pass --force to "
                "replace it, or --out another folder"
            )
    return [f for f in (record or {}).get("files", []) if isinstance(f, str) and f == Path(f).name]


def record_folder(out: Path, experiment: str, where: dict, run_ids: list[str], written: list[str], earlier: list[str]) -> None:
    """Remove what the earlier report wrote and this one did not (a figure no longer made), nothing
    else, and record what this one wrote and read."""
    for name in sorted(set(earlier) - set(written) - {RECORD}):
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()
    (out / RECORD).write_text(
        json.dumps(
            {
                "experiment": experiment,
                "where": where,
                "runs": sorted(run_ids),
                "files": written,
                "generated": time.strftime("%Y-%m-%d %H:%M"),
            },
            indent=1,
        )
    )


def safe_name(name: str) -> str:
    """A folder name under reports/ for an experiment: no separators, never '.' or '..' or hidden."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    return re.sub(r"^\.+", lambda m: "_" * len(m.group()), safe) or "_"
