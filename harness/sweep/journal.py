"""A sweep's folder and journal: ``<sweep dir>/harness_sweep.json`` (the sweep's info, written once by
its callback) and ``<sweep dir>/harness_jobs/<num>.json`` (each job's line: ``running`` with its run id
as soon as its MLflow run exists, then its outcome), read by every process of the sweep; the progress
line and the summary table come from it."""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

SWEEP_FILE = "harness_sweep.json"


JOBS_DIR = "harness_jobs"


REUSED_FILE = "harness_reused_runs.json"  # a sweep parent's artifact: the earlier runs its skipped jobs reused


OUTCOMES = ("finished", "diverged", "failed", "killed", "skipped", "unselected")  # unselected: a confirmation passed it


DIED = "found RUNNING by a later sweep: its process died; rerun"


def sweep_dir(hydra_cfg) -> Path:
    path = Path(hydra_cfg.sweep.dir)
    return path if path.is_absolute() else Path(hydra_cfg.runtime.cwd) / path


def read_sweep(directory: Path) -> dict[str, Any] | None:
    path = directory / SWEEP_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)  # atomic: a reader never sees half a file


def record_job(directory: Path, num: int, outcome: dict[str, Any]) -> None:
    jobs = directory / JOBS_DIR
    jobs.mkdir(parents=True, exist_ok=True)
    write_atomic(jobs / f"{num}.json", outcome)


def job_recorded(directory: Path, num: int) -> bool:
    return (directory / JOBS_DIR / f"{num}.json").exists()


def read_journal(directory: Path) -> list[dict[str, Any]]:
    out = []
    for p in sorted((directory / JOBS_DIR).glob("*.json")):
        with contextlib.suppress(OSError, ValueError):
            out.append(json.loads(p.read_text()))
    return out


PROGRESS_EVERY = 5.0  # seconds between two progress lines of a sweep from one process


_last_progress = [0.0]


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
        if seconds >= 60
        else f"{seconds}s"
    )


def progress_line(directory: Path, info: SweepInfo, force: bool = False) -> str | None:
    """Jobs done out of the sweep's total and an estimate of the time left (from the pace so far),
    read from the journal, which every process of the sweep writes; None while one was shown less
    than PROGRESS_EVERY seconds ago (unless ``force``). A confirmation sweep's estimate counts only the
    jobs it can still run: at most its selected settings times its seeds (the others pass at once)."""
    now = time.time()
    if not force and now - _last_progress[0] < PROGRESS_EVERY:
        return None
    _last_progress[0] = now
    journal = [o for o in read_journal(directory) if o.get("outcome") in OUTCOMES]
    total, started = info.jobs, info.started
    done = len(journal)
    ran = [o for o in journal if o.get("outcome") not in ("skipped", "unselected")]
    counts = ", ".join(f"{n} {k}" for k in OUTCOMES if (n := sum(o["outcome"] == k for o in journal)))
    line = f"sweep: {done}/{total or '?'} jobs done ({counts})"
    if started:
        elapsed = now - started
        line += f", {duration(elapsed)} elapsed"
        left = jobs_left(journal, info)
        if ran and left:
            line += f", about {duration(elapsed / len(ran) * left)} left"
    return line


def jobs_left(journal: list[dict[str, Any]], info: SweepInfo) -> int:
    """How many of the sweep's jobs may still train: its jobs not yet done; in a confirmation sweep, at most
    its selected settings times its seeds, less the jobs of those already done (run, or skipped by a resume)."""
    total, done = info.jobs or 0, len(journal)
    left = max(0, total - done)
    if info.confirm:
        runs_at_most = len(info.confirm.get("selected") or ()) * len(info.confirm.get("seeds") or ())
        passed = sum(o.get("outcome") == "unselected" for o in journal)
        left = min(left, max(0, runs_at_most - (done - passed)))
    return left


def show_progress(ctx: JobContext | None, force: bool = False) -> None:
    """Print the sweep's progress line (a job of a sweep, after it ends; a bundle, after its members end)."""
    if ctx and ctx.sweep:
        line = progress_line(ctx.dir, ctx.sweep, force)
        if line:
            print(line, flush=True)


def summary_table(outcomes: list[dict[str, Any]]) -> str:
    """One row per job; the overrides column leaves out those every job shares."""
    common = set.intersection(*(set(o.get("overrides", "").split(",")) for o in outcomes)) if len(outcomes) > 1 else set()
    rows = [("#", "outcome", "metric", "value", "seconds", "overrides")]
    for o in sorted(outcomes, key=lambda o: o["num"]):
        o = {**o, "overrides": ",".join(x for x in o.get("overrides", "").split(",") if x not in common)}
        value = o.get("value")
        rows.append(
            (
                str(o["num"]),
                o["outcome"],
                o.get("metric") or "",
                "" if value is None else f"{value:.4f}",
                "" if o.get("seconds") is None else f"{o['seconds']:.1f}",
                o.get("overrides", ""),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + "  " + r[5] for r in rows)


@contextlib.contextmanager
def folder_lock(directory: Path):
    import fcntl

    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def claim(directory: Path, info: dict[str, Any]) -> None:
    """Make this sweep the owner of its folder: refused while another live sweep owns it; a folder
    left by a finished or dead sweep is taken over, its journal moved aside."""
    from harness import HarnessError
    from harness.tracking.store import process_alive

    directory.mkdir(parents=True, exist_ok=True)
    with folder_lock(directory):
        old = read_sweep(directory)
        if old is not None:
            if not old.get("finished") and process_alive({"process": old.get("process", "")}):
                raise HarnessError(
                    f"the sweep folder {directory} is in use by the running sweep {old.get('sweep_id')}; "
                    "let it finish or choose another hydra.sweep.dir"
                )
            with contextlib.suppress(OSError):
                (directory / JOBS_DIR).rename(directory / f"{JOBS_DIR}.{old.get('sweep_id', 'previous')}")
        write_atomic(directory / SWEEP_FILE, info)


@dataclass(frozen=True)
class SweepInfo:
    """The sweep's own file (sweep.json), written by the sweep callback before its jobs start."""

    sweep_id: str | None = None
    experiment: str | None = None
    parent_run_id: str | None = None
    jobs: int | None = None
    varies: tuple[str, ...] = ()
    tracking_uri: str | None = None
    process: str | None = None
    started: float | None = None
    confirm: dict | None = None  # study.stage=confirm: {"round", "seeds", "selected": settings} (harness.sweep.confirm)

    @classmethod
    def read(cls, directory: Path) -> SweepInfo | None:
        data = read_sweep(directory)
        if data is None:
            return None
        known = {f.name for f in fields(cls)}
        kept: dict[str, Any] = {k: tuple(v) if k == "varies" else v for k, v in data.items() if k in known}
        return cls(**kept)


@dataclass(frozen=True)
class JobContext:
    """A job's place in a --multirun: its number and overrides, the sweep's folder and file, the
    launcher that runs it and how many jobs run at once on this machine."""

    num: int
    overrides: str
    dir: Path
    sweep: SweepInfo | None
    launcher: Any  # the launcher's config node (hydra.launcher)
    parallel: int

    def record(self, outcome: str, **info) -> None:
        """This job's line in the sweep's journal."""
        record_job(self.dir, self.num, {"num": self.num, "overrides": self.overrides, "outcome": outcome, **info})

    @property
    def launcher_target(self) -> str:
        return str(self.launcher.get("_target_", ""))


def job_context(hc=None) -> JobContext | None:
    """For a job of a --multirun (hc: its hydra config node): its JobContext; None for a single run."""
    from hydra.types import RunMode

    if hc is None or hc.mode != RunMode.MULTIRUN:
        return None
    directory = sweep_dir(hc)
    sweep = SweepInfo.read(directory)
    return JobContext(
        num=int(hc.job.num),
        overrides=",".join(hc.overrides.task),
        dir=directory,
        sweep=sweep,
        launcher=hc.launcher,
        parallel=parallel_jobs(hc.launcher, sweep.jobs if sweep else None),
    )


def parallel_jobs(launcher, total_jobs: int | None) -> int:
    """How many jobs of a sweep run at once on this machine, from the launcher config."""
    target = str(launcher.get("_target_", ""))
    total = total_jobs or 10**6
    if "Joblib" in target:
        n = int(launcher.get("n_jobs") or -1)
        cores = os.cpu_count() or 1
        return min(total, n if n > 0 else max(1, cores + 1 + n))  # joblib: -1 is all cores, -2 all but one, ...
    if target.endswith("LocalLauncher"):  # submitit_local starts every job at once (up to array_parallelism)
        return min(total, int(launcher.get("array_parallelism") or 256))
    return 1  # the basic and stacked launchers run one job at a time; on a cluster each job has its own allocation
