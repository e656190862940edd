"""harness: compare loss functions and optimizers, every run tracked in MLflow."""

import os

__version__ = "0.1.0"


class HarnessError(Exception):
    """A problem with the user's input or environment: shown as one line, exit status 2."""


def _register_resolvers() -> None:
    """${harness_uid:} in conf/config.yaml makes each sweep's folder its own: the sweep's process id,
    cached in the config so that jobs composed in other processes see the same value."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("harness_uid"):
        OmegaConf.register_new_resolver("harness_uid", lambda: str(os.getpid()), use_cache=True)


_register_resolvers()
