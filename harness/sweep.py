"""Sweeps: one MLflow parent run per ``--multirun``, a journal of its jobs, a summary, resume.

``SweepCallback`` is a Hydra callback (``hydra.callbacks`` in conf/config.yaml). Before any job
starts it claims the sweep's folder (two sweeps never share one), creates the MLflow store, the
experiment and the sweep's parent run *once* (many processes opening a fresh sqlite file at once
race in MLflow's schema migration), closes what dead sweeps left RUNNING in the experiment, and
writes ``<sweep dir>/harness_sweep.json`` so that every job, in whatever process or machine the
launcher puts it, logs into the same experiment under that parent.

Each job keeps its line in the journal ``<sweep dir>/harness_jobs/<num>.json``: ``running`` with
its run id as soon as its MLflow run exists, then its outcome. At the end the callback prints the
table, closes any run whose job's process died (FAILED), closes the parent with the counts, and
exits 1 only if a job failed (diverged is an outcome, not a failure). A stopped sweep (Ctrl-C,
SIGTERM, SIGHUP: ``abort``) stops its worker processes, cancels the SLURM jobs it submitted, closes
every run still open as KILLED and the parent as KILLED with the counts.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

SWEEP_FILE = "harness_sweep.json"
JOBS_DIR = "harness_jobs"
REUSED_FILE = "harness_reused_runs.json"  # a sweep parent's artifact: the earlier runs its skipped jobs reused
OUTCOMES = ("finished", "diverged", "failed", "killed", "skipped")
DIED = "found RUNNING by a later sweep: its process died; rerun"
ACTIVE: SweepCallback | None = None  # the sweep this process runs, for the stop handler in harness.__main__


def sweep_dir(hydra_cfg) -> Path:
    path = Path(hydra_cfg.sweep.dir)
    return path if path.is_absolute() else Path(hydra_cfg.runtime.cwd) / path


def swept_groups(overrides: list[str]) -> set[str]:
    """Config keys/groups that the command line sweeps over (task=a,b -> {'task'})."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return {o.key_or_group for o in OverridesParser.create().parse_overrides(overrides) if o.is_sweep_override()}


def sweep_overrides(hydra_cfg) -> list:
    """The sweep's parsed overrides: the study's grid (hydra.sweeper.params), then the command line's.
    Parsed with the running Hydra's config loader, as its sweeper does: ``task=glob(*)`` lists a group's options."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    loader = GlobalHydra.instance().hydra.config_loader if GlobalHydra.instance().is_initialized() else None
    params = [f"{k}={v}" for k, v in (hydra_cfg.sweeper.get("params") or {}).items()]
    return OverridesParser.create(config_loader=loader).parse_overrides(params + list(hydra_cfg.overrides.task))


def count_jobs(hydra_cfg) -> int | None:
    """How many jobs this sweep launches, computed as Hydra's basic sweeper will (None if unknown)."""
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

        grid = len(BasicSweeper.split_arguments(sweep_overrides(hydra_cfg), None)[0])
        trials = hydra_cfg.sweeper.get("n_trials")  # hydra/sweeper=search: each grid point once per trial
        return grid * trials if isinstance(trials, int) and not isinstance(trials, bool) else grid
    except Exception:  # another sweeper (optuna, ...): unknown
        return None


def check_sweep(config: DictConfig) -> None:
    """What Hydra would refuse in a sweep's jobs is one line before the sweep writes anything: Hydra
    composes the jobs only when it launches them, after the parent run is made. A swept option that
    does not exist (``optimizer=adam,nosuch``) is named with the values it came from; then one job of
    each combination of swept group choices is composed (the jobs differ in nothing else Hydra checks:
    an unknown key, a bad value for a typed one), through the sweep's composer, which keeps them for
    the sweeper."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    from harness import HarnessError
    from harness.compose import one_line

    if not GlobalHydra.instance().is_initialized():
        return
    check_plugins(config)
    loader = GlobalHydra.instance().hydra.config_loader
    try:
        parsed = sweep_overrides(config.hydra)
        jobs = BasicSweeper.split_arguments(parsed, None)[0]
    except Exception:  # another sweeper's syntax: Hydra checks its jobs as they come
        return
    groups = set()
    for o in parsed:
        if o.is_delete() or o.is_hydra_override() or o.package is not None or not loader.repository.group_exists(o.key_or_group):
            continue
        groups.add(o.key_or_group)
        if o.is_discrete_sweep():
            options = loader.repository.get_group_options(o.key_or_group)
            for value in o.sweep_string_iterator():
                if value not in options and value != "null":
                    raise HarnessError(
                        f"{o.key_or_group}={value} is not an option (in {o.input_line}); available: {', '.join(sorted(options))}"
                    )
    composed, first = set(), None
    for job in jobs:
        choices = tuple(item for item in job if item.split("=", 1)[0] in groups)
        if choices not in composed:
            composed.add(choices)
            try:
                cfg = loader.load_sweep_config(config, list(job))
            except HydraException as e:
                raise HarnessError(one_line(e)) from None
            first = first if first is not None else cfg
    objective = (config.hydra.get("sweeper") or {}).get("objective")
    if objective and first is not None and str(config.hydra.sweeper.get("_target_", "")).startswith("hydra_plugins.harness_"):
        check_objective(objective, first)


def check_objective(objective: str, cfg: DictConfig) -> None:
    """A search's objective must be a metric its runs log (``val/nosuch`` ran the whole search for nothing)."""
    from omegaconf import open_dict

    from harness import HarnessError
    from harness.build import metric_names
    from harness.checks import check_config

    job = cfg.copy()
    with open_dict(job):
        choices = dict(job.hydra.runtime.choices)
        del job["hydra"]
    names = {g: choices.get(g) or "?" for g in ("task", "loss", "optimizer", "schedule")}
    try:
        check_config(job, names)
        logged = metric_names(job, names)
    except HarnessError:
        return  # the job itself is refused as it runs, with its own line
    if objective not in logged:
        raise HarnessError(
            f"hydra.sweeper.objective={objective} is not a metric these runs log; they log "
            f"{', '.join(m for m in logged if not m.startswith('train/'))} (and train/ of each)"
        )


def check_plugins(config: DictConfig) -> None:
    """The harness's own launcher and sweeper check their knobs (``max_members=0``, ``n_trials=0``, a
    NaN search bound) here, before the parent run is made; other plugins check theirs as they start."""
    from hydra.utils import instantiate

    from harness import HarnessError

    for part in ("launcher", "sweeper"):
        node = config.hydra.get(part)
        if node is None or not str(node.get("_target_", "")).startswith("hydra_plugins.harness_"):
            continue
        try:
            plugin = instantiate(node, _convert_="all")
        except Exception as e:
            raise HarnessError(f"hydra.{part}: {str(e.__cause__ or e).splitlines()[0]}") from None
        plugin.check()


def swept_keys(hydra_cfg) -> list[str]:
    """The keys a sweep varies (more than one value, from the command line or the study's grid), in order."""
    try:
        parsed = sweep_overrides(hydra_cfg)
    except Exception:  # another sweeper's syntax: name runs by all their overrides
        return []
    keys = []
    for o in parsed:
        if not o.is_sweep_override() or (o.is_discrete_sweep() and len(list(o.sweep_string_iterator())) < 2):
            continue
        key = o.get_key_element().lstrip("+~")
        if key not in keys:
            keys.append(key)
    return keys + [k for k in (hydra_cfg.sweeper.get("space") or {}) if k not in keys]  # hydra/sweeper=search


def experiment_name(cfg: DictConfig, task_choice: str, task_is_swept: bool = False) -> str:
    """tracking.experiment, else the task's name ("multitask" for a sweep over tasks), + the suffix."""
    name = cfg.tracking.experiment or ("multitask" if task_is_swept else task_choice)
    return f"{name}{cfg.tracking.get('experiment_suffix') or ''}"


def study_tags(config: DictConfig) -> dict[str, str]:
    """The study's declaration (what it compares, what it tunes per method) for the parent run, where the report reads it."""
    study = config.get("study") or {}
    compare, tune = list(study.get("compare") or []), list(study.get("tune") or [])
    return {"harness.compare": json.dumps(compare), "harness.tune": json.dumps(tune)} if compare else {}


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


def progress_line(directory: Path, info: dict[str, Any], force: bool = False) -> str | None:
    """Jobs done out of the sweep's total and an estimate of the time left (from the pace so far),
    read from the journal, which every process of the sweep writes; None while one was shown less
    than PROGRESS_EVERY seconds ago (unless ``force``)."""
    now = time.time()
    if not force and now - _last_progress[0] < PROGRESS_EVERY:
        return None
    _last_progress[0] = now
    journal = [o for o in read_journal(directory) if o.get("outcome") in OUTCOMES]
    total, started = info.get("jobs"), info.get("started")
    done = len(journal)
    ran = [o for o in journal if o.get("outcome") != "skipped"]
    counts = ", ".join(f"{n} {k}" for k in OUTCOMES if (n := sum(o["outcome"] == k for o in journal)))
    line = f"sweep: {done}/{total or '?'} jobs done ({counts})"
    if started:
        elapsed = now - started
        line += f", {duration(elapsed)} elapsed"
        if total and ran and done < total:
            line += f", about {duration(elapsed / len(ran) * (total - done))} left"
    return line


def show_progress(ctx: dict | None, force: bool = False) -> None:
    """Print the sweep's progress line (a job of a sweep, after it ends; a bundle, after its members end)."""
    if ctx and ctx.get("sweep"):
        line = progress_line(ctx["dir"], ctx["sweep"], force)
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


def terminate_children(timeout: float = 10.0) -> int:
    """Stop this process's worker processes (joblib's loky workers, submitit_local jobs): SIGTERM,
    which closes their runs as KILLED, then SIGKILL for any still alive after `timeout` seconds."""
    import psutil

    children = [c for c in psutil.Process().children(recursive=True) if not is_resource_tracker(c)]
    for c in children:
        with contextlib.suppress(psutil.Error):
            c.terminate()
    _, alive = psutil.wait_procs(children, timeout=timeout)
    for c in alive:
        with contextlib.suppress(psutil.Error):
            c.kill()
    return len(children)


def cancel_cluster_jobs(directory: Path, since: float) -> list[str]:
    """Cancel (``scancel``) the SLURM jobs this sweep submitted that may still be queued or running:
    hydra-submitit-launcher keeps a folder per job, named by its SLURM id, under
    ``<sweep dir>/.submitit``; only folders made since this sweep started count (an earlier sweep
    in the folder, or an earlier cluster that numbered its jobs from 1 again, is left alone).
    Cancelled jobs get SIGTERM and close their runs KILLED; a finished id is refused by scancel,
    harmlessly. Returns the job ids asked to stop."""
    import shutil
    import subprocess

    folder, scancel = directory / ".submitit", shutil.which("scancel")
    if scancel is None or not folder.is_dir():
        return []
    ids = sorted(
        {
            p.name.split("_")[0]
            for p in folder.iterdir()
            if p.is_dir() and p.name.split("_")[0].isdigit() and p.stat().st_mtime >= since - 1
        }
    )
    if ids:
        try:
            subprocess.run([scancel, *ids], capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as e:
            print(f"warning: scancel {' '.join(ids)} failed ({e}); cancel this sweep's SLURM jobs by hand", file=sys.stderr)
    return ids


def is_resource_tracker(process) -> bool:
    """loky's resource tracker: it holds no run, and leaves by itself when this process exits
    (killing it makes loky start another, which prints tracebacks about what the first one freed)."""
    import psutil

    try:
        return any("resource_tracker" in part for part in process.cmdline())
    except psutil.Error:
        return False


def close_dead_sweeps(store, experiment_id: str) -> int:
    """Close the parent runs (and their RUNNING children) of sweeps in this experiment whose process
    died (kill -9, a lost node): children FAILED, parent KILLED with the job counts."""
    from harness.tracking import signals
    from harness.tracking.store import process_alive

    client = store.client
    parents = store.call(client.search_runs, [experiment_id], "tags.`harness.role` = 'sweep' and attributes.status = 'RUNNING'")
    closed = 0
    for p in parents:
        if process_alive(p.data.tags):
            continue
        children = store.call(client.search_runs, [experiment_id], f"tags.`mlflow.parentRunId` = '{p.info.run_id}'")
        outcomes = []
        with signals.deferred():
            for c in children:
                outcome = c.data.tags.get("outcome", "failed")
                if c.info.status == "RUNNING" and not process_alive(c.data.tags):
                    store.close_run(c.info.run_id, "FAILED", {"outcome": "failed", "error": DIED})
                    outcome = "failed"
                outcomes.append(outcome)
            counts = {f"jobs_{k}": str(sum(o == k for o in outcomes)) for k in OUTCOMES}
            store.close_run(
                p.info.run_id,
                "KILLED",
                {"outcome": "killed", **counts, "error": "found RUNNING by a later sweep: its process died"},
            )
        closed += 1
    return closed


class SweepCallback(Callback):
    def __init__(self) -> None:
        self.store = None
        self.parent_run_id: str | None = None
        self.experiment_id: str | None = None
        self.directory: Path | None = None
        self.info: dict[str, Any] = {}
        self.started = 0.0

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra turns a callback's exception into a warning and carries on; a sweep that cannot
        # reach its store must stop instead, so exit here (SystemExit passes through Hydra).
        from harness import HarnessError, compose
        from harness.tracking import signals

        signals.install()
        compose.install()  # each job composed once, for whatever launcher
        try:
            self._start(config)
        except HarnessError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except Exception:
            traceback.print_exc()
            sys.exit(1)

    def _start(self, config: DictConfig) -> None:
        global ACTIVE
        from harness.checks import check_run_knobs
        from harness.tracking import signals
        from harness.tracking.store import open_store, process_tag

        hc = config.hydra
        check_run_knobs(config)
        check_sweep(config)
        self.directory = directory = sweep_dir(hc)
        overrides = list(hc.overrides.task)
        experiment = experiment_name(config, hc.runtime.choices.get("task", "task"), "task" in swept_groups(overrides))
        sweep_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        varies = swept_keys(hc)
        self.info = {
            "sweep_id": sweep_id,
            "experiment": experiment,
            "parent_run_id": None,
            "jobs": count_jobs(hc),
            "varies": varies,
            "tracking_uri": str(config.tracking.uri) if config.tracking.enabled else None,
            "process": process_tag(),
            "started": time.time(),
        }
        self.started = self.info["started"]
        if config.tracking.enabled:  # a store that cannot be used stops the sweep before it leaves a folder
            self.store = open_store(config.tracking.uri, config.tracking.lock_timeout)  # creates the store once, here
            experiment_id = self.experiment_id = self.store.experiment_id(experiment)
        claim(directory, self.info)
        if config.tracking.enabled:
            if closed := close_dead_sweeps(self.store, experiment_id):
                print(f"closed {closed} sweep(s) in {experiment!r} whose process had died (marked KILLED)", flush=True)
            with signals.deferred():
                name = f"sweep: {' x '.join(varies) or 'one job'} ({self.info['jobs'] or '?'} jobs)"
                run = self.store.call(
                    self.store.client.create_run,
                    experiment_id,
                    run_name=name,
                    tags={
                        "harness.role": "sweep",
                        "sweep_id": sweep_id,
                        "overrides": " ".join(overrides)[:5000],
                        "launcher": str(hc.launcher._target_).rsplit(".", 1)[-1],
                        "outcome": "running",
                        "process": process_tag(),
                        **study_tags(config),
                    },
                )
                self.parent_run_id = self.info["parent_run_id"] = run.info.run_id
                write_atomic(directory / SWEEP_FILE, self.info)
        ACTIVE = self
        atexit.register(self._at_exit)
        suffix = config.tracking.get("experiment_suffix") or ""
        print(
            f"sweep {sweep_id}: {self.info['jobs'] or 'unknown number of'} jobs, experiment {experiment!r}"
            + (
                f" (with tracking.experiment_suffix={suffix}, which smoke=on sets to keep a wiring test apart "
                "from the full study's runs)"
                if suffix and experiment.endswith(suffix)
                else ""
            )
            + (f", parent run {self.parent_run_id}" if self.parent_run_id else "")
            + f", outputs in {directory}",
            flush=True,
        )

    # ---------------------------------------------------------------- the end, normal or not

    def settle(self, outcome: str, error: str) -> list[dict[str, Any]]:
        """The journal, with every job still 'running' closed in MLflow as `outcome` (its process is
        gone: it died, or was stopped with the sweep)."""
        from harness import HarnessError

        status = {"killed": "KILLED", "failed": "FAILED"}[outcome]
        outcomes = read_journal(self.directory)
        for o in outcomes:
            if o["outcome"] != "running":
                continue
            if self.store is not None and o.get("run_id"):
                try:
                    if self.store.call(self.store.client.get_run, o["run_id"]).info.status == "RUNNING":
                        self.store.close_run(o["run_id"], status, {"outcome": outcome, "error": error})
                except HarnessError as e:
                    print(f"error: run {o['run_id']} could not be closed: {e}", file=sys.stderr)
            o.update(outcome=outcome, error=error)
            record_job(self.directory, o["num"], o)
        return outcomes

    def finish(self, outcomes: list[dict[str, Any]], status: str | None = None) -> dict[str, int]:
        """Print the table and the counts, close the parent run, mark the folder's sweep finished."""
        from harness.tracking import signals

        counts = {k: sum(o["outcome"] == k for o in outcomes) for k in OUTCOMES}
        if outcomes:
            print("\n" + summary_table(outcomes), flush=True)
        missing = (self.info.get("jobs") or 0) - len(outcomes)
        print(
            "sweep "
            + ("stopped" if status == "KILLED" else "done")
            + ": "
            + ", ".join(f"{v} {k}" for k, v in counts.items())
            + (f", {missing} not run" if missing > 0 else "")
            + f" in {time.time() - self.started:.1f}s",
            flush=True,
        )
        failed = counts["failed"] + counts["killed"]
        status = status or ("FAILED" if failed else "FINISHED")
        if self.store is not None and self.parent_run_id:
            from mlflow.entities import Metric, RunTag

            now = int(time.time() * 1000)
            outcome = {"KILLED": "killed", "FAILED": "failed"}.get(status, "finished")
            with signals.deferred():
                self.store.call(
                    self.store.client.log_batch,
                    self.parent_run_id,
                    metrics=[Metric(f"jobs_{k}", v, now, 0) for k, v in counts.items()],
                    tags=[RunTag("outcome", outcome)] + [RunTag(f"jobs_{k}", str(v)) for k, v in counts.items()],
                )
                reused = sorted({o["run_id"] for o in outcomes if o["outcome"] == "skipped" and o.get("run_id")})
                if reused:  # resume: the finished runs of earlier sweeps that stand for this sweep's jobs (the report reads them)
                    self.store.call(self.store.client.log_dict, self.parent_run_id, {"runs": reused}, REUSED_FILE)
                self.store.call(self.store.client.set_terminated, self.parent_run_id, status=status)
                self.parent_run_id = None
        with contextlib.suppress(OSError):
            write_atomic(self.directory / SWEEP_FILE, {**self.info, "finished": True})
        return counts

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global ACTIVE
        outcomes = self.settle("failed", "its process ended without closing the run (killed or crashed)")
        if not outcomes:
            print("sweep done: no job recorded an outcome", flush=True)
        counts = self.finish(outcomes)
        ACTIVE = None
        if self.store is not None and self.experiment_id:
            from harness.tracking.uris import runs_link

            print(f"runs in the MLflow UI: {runs_link(self.store.uri, self.experiment_id)}", flush=True)
            print(f"report: {report_command(self.info.get('experiment'), self.store.uri)}", flush=True)
        if counts["failed"] + counts["killed"]:
            sys.exit(1)

    def abort(self, why: str) -> None:
        """The sweep was stopped (Ctrl-C, SIGTERM, SIGHUP): stop the workers, close what is open as KILLED."""
        global ACTIVE
        from harness.tracking import signals

        ACTIVE = None
        with signals.deferred():
            stopped = terminate_children()
            cancelled = cancel_cluster_jobs(self.directory, self.started)
            outcomes = self.settle("killed", f"stopped with its sweep ({why})")
            self.finish(outcomes, "KILLED")
        print(
            f"interrupted ({why}): the sweep's open runs and its parent run are marked KILLED"
            + (f"; {stopped} worker process(es) stopped" if stopped else "")
            + (f"; SLURM job(s) {', '.join(cancelled)} cancelled" if cancelled else ""),
            file=sys.stderr,
            flush=True,
        )

    def _at_exit(self) -> None:
        """Last resort (the process exits some other way): never leave the parent RUNNING."""
        if self.parent_run_id is not None:
            with contextlib.suppress(Exception):
                self.finish(self.settle("failed", "the sweep process exited before the sweep ended"), "FAILED")


def report_command(experiment: str | None, uri: str) -> str:
    """The command that makes this sweep's report, as a person would type it in the same folder."""
    import shlex

    default = os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    where = "" if uri == default or uri == f"sqlite:///{Path('mlflow.db').resolve()}" else f" --tracking-uri {shlex.quote(uri)}"
    return f"python -m harness.report {shlex.quote(experiment or 'EXPERIMENT')}{where}"


def job_context(hc=None) -> dict[str, Any] | None:
    """For a job of a --multirun (hc: its hydra config node): its number, overrides, sweep folder
    and the sweep's info; None for a single run."""
    from hydra.types import RunMode

    if hc is None or hc.mode != RunMode.MULTIRUN:
        return None
    directory = sweep_dir(hc)
    sweep = read_sweep(directory) or {}
    return {
        "num": int(hc.job.num),
        "overrides": ",".join(hc.overrides.task),
        "dir": directory,
        "sweep": sweep,
        "launcher": hc.launcher,
        "parallel": parallel_jobs(hc.launcher, sweep.get("jobs")),
    }


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
