"""TRACK=mlflow: the local MLflow store under ``<models>`` (``mlflow.db``, SQLite, and
``mlruns/`` for artifacts), one experiment per competition, and ``make mlflow``. Only the driver
writes to it (``train/run_summary.py``, ``ensemble/ensemble_summary.py``); a failing write warns once and
never stops a stage. MLflow is an optional extra (``pip install -e '.[track]'``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from .board import serve

MLFLOW_DB = "mlflow.db"  # models/mlflow.db and models/mlruns/: TRACK=mlflow's local store
MLFLOW_ARTIFACTS = "mlruns"
_warned = False  # a failing MLflow write warns once per process


def mlflow_uri(models: Path) -> str:
    return f"sqlite:///{(Path(models) / MLFLOW_DB).resolve()}"


def require_mlflow() -> None:
    """One line, before any work, when TRACK=mlflow but mlflow is not installed."""
    from ..errors import PipelineError

    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise PipelineError(
            "TRACK=mlflow needs the mlflow package: .venv/bin/pip install -e '.[track]' "
            "(or TRACK=tensorboard)"
        ) from None


def mlflow_client(models: Path):
    """An ``MlflowClient`` on the local store under ``models``; one line when mlflow is not
    installed."""
    require_mlflow()
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=mlflow_uri(models))


def guarded_mlflow(fn, *args) -> None:
    """``fn(*args)``, an MLflow logging step: a failure (a locked store, a full disk) warns once
    and never stops the stage."""
    global _warned
    try:
        fn(*args)
    except Exception as e:
        if not _warned:
            _warned = True
            print(
                f"warning: MLflow logging stopped ({type(e).__name__}: {e}); the stage goes on",
                file=sys.stderr,
            )


def mlflow_experiment(client, models: Path, name: str) -> str:
    """The id of the MLflow experiment ``name`` (one per competition), made once with its
    artifacts under ``models/mlruns``."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    where = (Path(models) / MLFLOW_ARTIFACTS).resolve()
    return client.create_experiment(name, artifact_location=where.as_uri())


def serve_mlflow(models: Path, port: int) -> None:
    """``mlflow ui`` on the store under ``models`` at 127.0.0.1:``port``."""
    from ..errors import PipelineError

    require_mlflow()
    if not (Path(models) / MLFLOW_DB).is_file():
        raise PipelineError(
            f"no MLflow store at {Path(models) / MLFLOW_DB}: make train TRACK=mlflow writes it"
        )
    args = ["ui", "--backend-store-uri", mlflow_uri(models)]
    serve("MLflow", "mlflow", args, port, f"store {mlflow_uri(models)}")
