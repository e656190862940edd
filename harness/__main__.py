"""`python -m harness [overrides]`: one run; `python -m harness --multirun ...`: a sweep."""
import os
import sys

import hydra
from omegaconf import DictConfig

from harness import signals
from harness.compose import one_line
from harness.run import run


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig):
    return run(cfg)  # a sweeper that searches (hydra/sweeper=search) reads the result's final metrics


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
