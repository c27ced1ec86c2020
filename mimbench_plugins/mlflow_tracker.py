"""The ``mlflow`` tracker: one MLflow run per mimbench run, in an experiment named after the suite.

Each MLflow run is named by the run's label, tagged ``mimbench.run_id`` (and ``mimbench.suite``,
``mimbench.run_dir``, ``mimbench.status``), and holds the run's params (``encoder``,
``encoder.dim``, ``train.lr``...), ``train/loss`` and ``train/lr`` every ``train.log_every``
steps (step = the global optimizer step; sent with the epoch's metrics, one request per epoch),
the per-epoch metrics ``epoch/loss``, ``epoch/lr`` and ``epoch/images_per_second`` (step =
epoch), every number of its summary row as a final metric
(``linear_acc``, ``recon_psnr``...; ``@`` in a name becomes ``_``), and ``config.json`` and
``reconstructions.png`` as artifacts. A run executed again (retried, or ``--fresh`` on an outside
server) replaces its MLflow run: the old one is deleted, so there is one MLflow run per mimbench run.

The tracking URI is the ``tracking_uri`` param, else ``$MLFLOW_TRACKING_URI`` (as the worker sees
it), else a SQLite database in the suite folder, ``OUT/<suite>/mlflow.db``
(``mlflow ui --backend-store-uri sqlite:///OUT/<suite>/mlflow.db``). A new experiment keeps its
artifacts in ``OUT/<suite>/mlflow-artifacts/``, unless the URI is a tracking server's (http,
https, databricks), which decides. SQLite suits one machine; on a cluster, point ``tracking_uri``
at an MLflow server.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Iterator

from mimbench.plugin import ConfigError, RunFolder, final_metrics, missing_extra, run_params

RUN_ID_TAG = "mimbench.run_id"
#: Tracking URIs of an MLflow server, which decides where a new experiment's artifacts go.
SERVER_SCHEMES = ("http", "https", "databricks")
#: MLflow's limits per log_batch request, and on a param's value.
MAX_PARAMS, MAX_METRICS, MAX_PARAM_LENGTH = 100, 1000, 6000


@functools.lru_cache(maxsize=4)
def _client(tracking_uri: str) -> Any:
    """One MlflowClient per tracking URI and process (connecting to a store takes a while)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """MLflow and alembic log at INFO while they create a database; keep the console to mimbench's lines."""
    loggers = [logging.getLogger(name) for name in ("mlflow", "alembic")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def metric_key(name: str) -> str:
    """A summary column as an MLflow metric name (letters, digits, ``_ - . / :`` and spaces)."""
    return re.sub(r"[^\w\-./: ]", "_", name)


class MLflowTracker:
    """One MLflow run per mimbench run: params, loss every log_every steps, per-epoch metrics, final metrics, config.json and reconstructions.png."""

    def __init__(self, suite_dir: str, tracking_uri: str | None = None, experiment: str | None = None):
        if importlib.util.find_spec("mlflow") is None:
            raise ConfigError(missing_extra("tracker 'mlflow'", "MLflow", "mlflow"))
        if experiment is not None and not experiment.strip():
            raise ValueError("experiment must not be empty (leave it out for the suite's name)")
        suite = Path(suite_dir)
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
        self.tracking_uri = uri or f"sqlite:///{(suite / 'mlflow.db').absolute()}"
        # a tracking server keeps the artifacts where it is configured to; with a database or a
        # local store, MLflow's default would be ./mlruns in the worker's working directory
        served = uri is not None and uri.split(":", 1)[0] in SERVER_SCHEMES
        self.artifact_location = None if served else (suite / "mlflow-artifacts").absolute().as_uri()
        self.experiment = experiment or suite.name
        self.suite = suite.name
        self._run_id: str | None = None
        self._pending: list[Any] = []  # the step metrics not sent yet (they go with the epoch's)

    def prepare(self) -> None:
        """Create the store and the experiment once, in the driver, before workers share them."""
        self._experiment_id()

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        with _quiet():
            client = _client(self.tracking_uri)
            found = client.get_experiment_by_name(self.experiment)
            if found is not None:
                return found.experiment_id
            try:
                return client.create_experiment(self.experiment, artifact_location=self.artifact_location)
            except MlflowException:  # another worker created it meanwhile
                found = client.get_experiment_by_name(self.experiment)
                if found is None:
                    raise
                return found.experiment_id

    def _runs_of(self, experiment_id: str, run_id: str) -> list[Any]:
        """The active MLflow runs of mimbench run ``run_id``, newest first."""
        return _client(self.tracking_uri).search_runs(
            [experiment_id], filter_string=f"tags.`{RUN_ID_TAG}` = '{run_id}'", order_by=["attributes.start_time DESC"])

    def _new_run(self, experiment_id: str, run_dir: Path, config: dict[str, Any]) -> str:
        from mlflow.entities import Param

        client = _client(self.tracking_uri)
        tags = {RUN_ID_TAG: run_dir.name, "mimbench.suite": self.suite, "mimbench.run_dir": str(run_dir)}
        run = client.create_run(experiment_id, run_name=config.get("label") or run_dir.name, tags=tags)
        params = [Param(key, str(value)[:MAX_PARAM_LENGTH]) for key, value in run_params(config).items()]
        for start in range(0, len(params), MAX_PARAMS):
            client.log_batch(run.info.run_id, params=params[start:start + MAX_PARAMS])
        if RunFolder(run_dir).has_config():
            client.log_artifact(run.info.run_id, str(RunFolder(run_dir).config_path))
        return run.info.run_id

    def run_started(self, run_dir: Path, config: dict[str, Any]) -> None:
        experiment_id = self._experiment_id()
        client = _client(self.tracking_uri)
        for old in self._runs_of(experiment_id, run_dir.name):  # the run executes again: it replaces them
            client.delete_run(old.info.run_id)
        self._run_id = self._new_run(experiment_id, Path(run_dir), config)

    def step_logged(self, run_dir: Path, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        if self._run_id is None:
            return
        now = int(time.time() * 1000)
        self._pending += [Metric(f"train/{key}", float(values[key]), now, int(step))
                          for key in ("loss", "lr") if key in values]

    def epoch_finished(self, run_dir: Path, row: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        if self._run_id is None:
            return
        now, step = int(time.time() * 1000), int(row["epoch"])
        self._pending += [Metric(f"epoch/{key}", float(row[key]), now, step)
                          for key in ("loss", "lr", "images_per_second") if key in row]
        self._send_pending()

    def _send_pending(self) -> None:
        metrics, self._pending = self._pending, []
        for start in range(0, len(metrics), MAX_METRICS):
            _client(self.tracking_uri).log_batch(self._run_id, metrics=metrics[start:start + MAX_METRICS])

    def run_finished(self, run_dir: Path, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        run_dir = Path(run_dir)
        client = _client(self.tracking_uri)
        started_here = self._run_id is not None
        if not started_here:  # probes added to a run finished earlier: its MLflow run, or a new one
            experiment_id = self._experiment_id()
            earlier = self._runs_of(experiment_id, run_dir.name)
            self._run_id = earlier[0].info.run_id if earlier else self._new_run(
                experiment_id, run_dir, _read_config(run_dir))
        self._send_pending()  # a run that failed inside an epoch: its last loss points
        now = int(time.time() * 1000)
        metrics = [Metric(metric_key(key), value, now, 0) for key, value in final_metrics(record).items()]
        for start in range(0, len(metrics), MAX_METRICS):
            client.log_batch(self._run_id, metrics=metrics[start:start + MAX_METRICS])
        status = str(record.get("status"))
        client.set_tag(self._run_id, "mimbench.status", status)
        picture = RunFolder(run_dir).reconstructions
        if started_here and picture.exists():
            client.log_artifact(self._run_id, str(picture))
        client.set_terminated(self._run_id, "FAILED" if status == "failed" else "FINISHED")
        self._run_id = None


def _read_config(run_dir: Path) -> dict[str, Any]:
    try:
        return RunFolder(run_dir).read_config()
    except (OSError, ValueError):
        return {}
