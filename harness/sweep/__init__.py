"""Sweeps: one MLflow parent run per ``--multirun``, a journal of its jobs, a summary, resume.

- ``plan``: what a sweep will run, and the checks before it writes anything;
- ``journal``: the sweep's folder, its jobs' lines, progress and the summary table;
- ``callback``: ``SweepCallback``, the Hydra callback that owns the parent run, its start, end and stop;
- ``cleanup``: what a stopped or dead sweep leaves behind (worker processes, SLURM jobs, open runs).
"""

from harness.sweep.callback import SweepCallback

__all__ = ["SweepCallback"]  # conf/config.yaml names it as harness.sweep.SweepCallback
