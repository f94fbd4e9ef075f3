"""``hil runs export --to mlflow`` into a temporary local SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.cli import main
from hil.trainer.runs import RunDir
from hil.trainer.session import TrainRequest, train

mlflow = pytest.importorskip(
    "mlflow", reason="needs the 'mlflow' extra: pip install 'pcm-hil[mlflow]'"
)
# MLflow's SQLite store uses a SQLAlchemy loader strategy that SQLAlchemy 2.1 deprecates
pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SADeprecationWarning")


@pytest.mark.slow
def test_export_logs_params_metrics_and_artifacts_once(
    tmp_path: Path, small_overrides: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    train(
        TrainRequest(
            device="sim://?preset=ideal&seed=0",
            run_dir=run,
            epochs=2,
            overrides=small_overrides,
            progress=False,
        )
    )
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    args = ["--log-level", "warning", "runs", "export", str(run), "--to", "mlflow"]
    args += ["--tracking-uri", uri, "--experiment", "lab"]
    assert main(args) == 0
    assert "exported as MLflow run" in capsys.readouterr().out

    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("lab")
    (found,) = client.search_runs([exp.experiment_id])
    assert found.info.status == "FINISHED" and found.info.run_name == "run"
    assert found.data.tags["pcm_hil.status"] == "finished"
    assert found.data.params["config.optim.lr"] == "0.01"
    assert found.data.params["config.device.url"] == "sim://?preset=ideal&seed=0"
    assert found.data.params["device.preset"] == "ideal"
    records = RunDir(run).metrics()
    history = client.get_metric_history(found.info.run_id, "valid_nll")
    assert [(m.step, m.value) for m in history] == [(r["epoch"], r["valid_nll"]) for r in records]
    assert [m.value for m in client.get_metric_history(found.info.run_id, "pulses")] == [
        r["pulses"] for r in records
    ]
    summary = RunDir(run).summary()
    assert found.data.metrics["summary.test_nll"] == summary["test_nll"]  # type: ignore[index]
    names = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"config.json", "metrics.jsonl", "events.jsonl", "summary.json", "report.html"} <= names
    assert (tmp_path / "store" / "mlartifacts").is_dir()  # offline, beside the database

    assert main(args) == 0  # a second export is skipped, not duplicated
    assert "already exported" in capsys.readouterr().out
    assert len(client.search_runs([exp.experiment_id])) == 1
    assert main([*args, "--replace"]) == 0
    (again,) = client.search_runs([exp.experiment_id])
    assert again.info.run_id != found.info.run_id


def test_export_refuses_a_directory_that_is_not_a_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["runs", "export", str(tmp_path), "--to", "mlflow", "--tracking-uri", uri]) != 0
    assert "not a run directory" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()
