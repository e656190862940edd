"""MLflow runs: start, params, buffered metrics, outcome, artifacts.

All writes go through ``MlflowClient`` (no global "active run" state) and metrics are buffered and
written with ``log_batch``: one call per epoch or per ``flush_seconds``, never one per step (a
per-step ``log_metric`` cost 11 s per 1000 steps on sqlite here, one ``log_batch`` 0.14 s).
"""
from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Any

from harness import HarnessError

PARAM_VALUE_LIMIT = 6000   # MLflow's cap on a param value
PARAMS_PER_BATCH = 100     # MLflow's cap on params per log_batch
METRICS_PER_BATCH = 1000   # MLflow's cap on metrics per log_batch


def flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    """{'a': {'b': 1}, 'c': [1, 2]} -> {'a.b': '1', 'c': '[1, 2]'} (lists stay whole, as one value)."""
    if isinstance(tree, dict):
        out: dict[str, str] = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    value = "null" if tree is None else str(tree)
    if len(value) > PARAM_VALUE_LIMIT:
        value = value[: PARAM_VALUE_LIMIT - 20] + "...(see config.yaml)"
    return {prefix[:-1]: value}


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast with one line when an MLflow server URI does not answer (MLflow itself retries for minutes)."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).read()
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise HarnessError(f"the MLflow tracking server {uri} is not reachable ({reason}); start it "
                           f"(mlflow server --host 127.0.0.1 --port PORT) or point at another tracking URI") from None


class NullTracker:
    """Tracking off (tracking.enabled=false): the same interface, nothing written."""
    run_id = None

    def start(self, run_name: str, tags: dict[str, str], params: dict[str, str], config_yaml: str) -> None:
        pass

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def end(self, status: str, tags: dict[str, str]) -> None:
        pass


class MlflowTracker:
    def __init__(self, uri: str, experiment: str, flush_seconds: float = 5.0):
        import logging

        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        for name in ("mlflow", "alembic"):  # not "Creating initial MLflow database tables..." (set after import: it resets them)
            logging.getLogger(name).setLevel(logging.WARNING)

        self.client = MlflowClient(tracking_uri=uri)
        self.uri, self.flush_seconds = uri, flush_seconds
        self.buffer: list = []
        self.last_flush = time.monotonic()
        self.run_id: str | None = None
        try:
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                try:
                    self.experiment_id = self.client.create_experiment(experiment)
                except MlflowException:  # created meanwhile by a parallel job
                    self.experiment_id = self.client.get_experiment_by_name(experiment).experiment_id
            elif found.lifecycle_stage == "deleted":
                raise HarnessError(f"the MLflow experiment {experiment!r} is deleted; restore it or choose another tracking.experiment")
            else:
                self.experiment_id = found.experiment_id
        except MlflowException as e:
            raise HarnessError(f"cannot open the MLflow store {uri}: {str(e).splitlines()[0]}") from None

    def start(self, run_name: str, tags: dict[str, str], params: dict[str, str], config_yaml: str) -> None:
        from mlflow.entities import Param

        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[i:i + PARAMS_PER_BATCH])
        self.client.log_text(self.run_id, config_yaml, "config.yaml")

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.buffer += [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if time.monotonic() - self.last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        for i in range(0, len(self.buffer), METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=self.buffer[i:i + METRICS_PER_BATCH])
        self.buffer, self.last_flush = [], time.monotonic()

    def end(self, status: str, tags: dict[str, str]) -> None:
        """Write what is buffered, set the outcome tags and close the run (FINISHED, FAILED or KILLED)."""
        if self.run_id is None:
            return
        try:
            self.flush()
        finally:
            from mlflow.entities import RunTag

            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
            self.client.set_terminated(self.run_id, status=status)

