"""hydra/launcher=stacked: the harness's launcher, which trains compatible jobs of a sweep as one stacked model."""
