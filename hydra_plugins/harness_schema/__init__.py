"""The harness's config schema (harness.config.schema), registered when Hydra scans the hydra_plugins package."""

from harness.config.schema import register

register()
