"""harness: compare loss functions and optimizers, every run tracked in MLflow."""

__version__ = "0.1.0"


class HarnessError(Exception):
    """A problem with the user's input or environment: shown as one line, exit status 2."""
