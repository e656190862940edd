"""`python -m harness [overrides]`: one run; `python -m harness --multirun ...`: a sweep."""
import os
import sys

import hydra
from omegaconf import DictConfig

from harness import signals
from harness.run import run


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig):
    return run(cfg)  # a sweeper that searches (hydra/sweeper=search) reads the result's final metrics


def one_line(e: Exception) -> str:
    """Hydra's composition errors (unknown option or key, bad override syntax) as one line."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.startswith("\t")]
    message = lines[0] if lines else type(e).__name__
    options = getattr(e, "options", None)
    if options:
        message += f"; available: {', '.join(options)}"
        if "Could not find 'task/" in message or "Could not find 'experiment/" in message:
            message += " (a task or study of your own: add hydra.searchpath=[file://YOUR_CONF_DIR], see the README)"
    elif message.startswith("Error merging override") and e.__cause__ is not None:
        message += f": {str(e.__cause__).splitlines()[0]}"  # the reason: "Value 'maybe' is not a valid bool (type str)"
    elif len(lines) > 1 and lines[1].startswith("To append"):
        message += f" No such key in the config (to add one: {lines[1].split(' use ', 1)[-1]})"
    return message.replace("In 'config': ", "")


def cli() -> None:
    from hydra.errors import HydraException, InstantiationException

    from harness import HarnessError, sweep

    user_wants_traces = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let composition errors reach us instead of Hydra's multi-line report
    signals.install()  # from here on a stop signal is an exception that closes what is open
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
        stopped = e if isinstance(e, signals.Stopped) else signals.Stopped()
        if sweep.ACTIVE is not None:
            sweep.ACTIVE.abort(str(stopped))
        else:
            from harness.run import KILLED

            print(f"interrupted ({stopped})" + (f": MLflow run {', '.join(KILLED)} is marked KILLED" if KILLED else ""),
                  file=sys.stderr)
        sys.exit(stopped.exit_code)


if __name__ == "__main__":
    cli()
