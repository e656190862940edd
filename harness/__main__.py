"""`python -m harness [overrides]`: one run; `python -m harness --multirun ...`: a sweep."""

import os
import sys

from harness.tracking import signals


def stopped_line(e: KeyboardInterrupt, during: str = "") -> int:
    """Print how the process was stopped; returns its exit code (130 for Ctrl-C, 143 for SIGTERM)."""
    stopped = e if isinstance(e, signals.Stopped) else signals.Stopped()
    print(f"interrupted ({stopped}){during}", file=sys.stderr)
    return stopped.exit_code


def split_overrides(text: str) -> list[str]:
    """A run's comma-joined overrides tag (runs logged before the JSON tag), split at the commas that
    separate overrides, not those inside brackets, braces or quotes (``optimizer.betas=[0.5,0.999]``)."""
    out, depth, quote, part = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0 and "=" in part:
            out.append(part)
            part = ""
            continue
        part += ch
    return out + ([part] if part else [])


def rerun_argv(argv: list[str]) -> list[str]:
    """``python -m harness --rerun RUN_ID [overrides]``: the command line that made that run, from its
    record in the store (``tracking.uri=`` among the overrides, else $MLFLOW_TRACKING_URI or
    sqlite:///mlflow.db), with any further overrides after it."""
    import json

    from harness import HarnessError
    from harness.tracking.uris import check_uri, first_line, quiet_mlflow, sqlite_path

    at = argv.index("--rerun")
    ids = [a for a in argv[at + 1 :] if "=" not in a and not a.startswith("-")]
    if not ids:
        raise HarnessError("--rerun takes a run id: python -m harness --rerun RUN_ID [overrides]")
    run_id = ids[0]
    extra = [a for i, a in enumerate(argv) if i and i != at and not (a == run_id and i > at)]
    if "--multirun" in extra or "-m" in extra:
        raise HarnessError("--rerun reruns one run; it does not go with --multirun")
    uri = next(
        (a.split("=", 1)[1] for a in extra if a.startswith("tracking.uri=")),
        os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"),
    )
    check_uri(uri)
    path = sqlite_path(uri) if uri.startswith("sqlite:") else None
    if path is not None and not path.exists():  # MLflow would create an empty store to look in
        raise HarnessError(f"there is no MLflow store at {path}; pass tracking.uri=... to the store that has run {run_id}")
    quiet_mlflow()
    from mlflow.tracking import MlflowClient

    try:
        run = MlflowClient(tracking_uri=uri).get_run(run_id)
    except Exception as e:
        raise HarnessError(
            f"no run {run_id} in {uri} ({first_line(e)}); pass tracking.uri=... to the store that has it"
        ) from None
    tags = run.data.tags
    if tags.get("harness.role") == "sweep":
        raise HarnessError(f"run {run_id} is a sweep's parent; rerun one of its jobs (their ids are its child runs)")
    if "harness.overrides_json" in tags:
        overrides = json.loads(tags["harness.overrides_json"])
    elif "harness.overrides" in tags:
        overrides = split_overrides(tags["harness.overrides"])
    else:
        raise HarnessError(f"run {run_id} was not made by the harness (it has no harness.overrides tag)")
    keep = [o for o in overrides if not o.startswith(("tracking.uri=", "hydra.", "resume="))]
    print(f"rerunning run {run_id} ({run.info.run_name}): python -m harness {' '.join(keep + extra)}", flush=True)
    return (
        [argv[0], *keep, *extra]
        if any(a.startswith("tracking.uri=") for a in extra)
        else [argv[0], *keep, *extra, f"tracking.uri={uri}"]
    )


def cli() -> None:
    signals.install()  # first: a stop while torch, MLflow and Hydra import is one line too, not a traceback
    try:
        with signals.deferred():  # noted, and raised once the imports are whole (one cut off midway breaks numpy)
            import hydra
            from hydra.errors import HydraException, InstantiationException
            from omegaconf import DictConfig

            from harness import HarnessError
            from harness.config.compose import one_line
            from harness.engine.run import run
            from harness.sweep import callback as sweep
    except KeyboardInterrupt as e:
        sys.exit(stopped_line(e, " while starting up: nothing was written"))

    @hydra.main(version_base="1.3", config_path="../conf", config_name="config")
    def main(cfg: DictConfig):
        return run(cfg)  # a sweeper that searches (hydra/sweeper=search) reads the result's final metrics

    if "--rerun" in sys.argv:
        try:
            sys.argv = rerun_argv(sys.argv)
        except HarnessError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
    user_wants_traces = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let composition errors reach us instead of Hydra's multi-line report
    try:
        main()
    except HydraException as e:
        if user_wants_traces or isinstance(e, InstantiationException):
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)
    except HarnessError as e:  # a sweeper's bad setting (hydra/sweeper=search); the sweep's parent closes as FAILED
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM, SIGHUP; the run that was open is already closed
        if sweep.ACTIVE is not None:
            stopped = e if isinstance(e, signals.Stopped) else signals.Stopped()
            sweep.ACTIVE.abort(str(stopped))
            sys.exit(stopped.exit_code)
        from harness.engine.record import KILLED

        sys.exit(stopped_line(e, f": MLflow run {', '.join(KILLED)} is marked KILLED" if KILLED else ""))


if __name__ == "__main__":
    cli()
