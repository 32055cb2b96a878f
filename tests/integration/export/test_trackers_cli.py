"""``rankscope export RUN --to mlflow|wandb`` via the console script, read back with each client.

The run is the sample (3 ranks, rank 1 late on its DataLoader, a whole-run light
layer). MLflow logs to a file store in tmp_path, read back with ``MlflowClient``;
W&B runs offline into tmp_path and its ``run-*.wandb`` file is read back record by
record (W&B's own reader left its Python package, so ``wandb_records`` below reads
its LevelDB-style log). Every number is checked against ``rankscope report
--format json`` of the same run. Nothing reaches the network: W&B is offline and
its cache, config and data folders are under tmp_path.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jobs.collector_jobs import job_env, rankscope, report_of

pytest.importorskip("mlflow")
pytest.importorskip("wandb")

REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "sample_traces" / "ddp3_dataloader_straggler"


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(report_of(SAMPLE, "json"))
    return doc


def _steps(report: dict[str, Any]) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = report["whole_run"]["steps"]
    return steps


def wandb_env(tmp_path: Path) -> dict[str, str]:
    return job_env(
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        WANDB_DIR=str(tmp_path / "wandb-dir"),
        WANDB_CACHE_DIR=str(tmp_path / "wandb-cache"),
        WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"),
        WANDB_DATA_DIR=str(tmp_path / "wandb-data"),
        WANDB_API_KEY="",
    )


def test_mlflow_file_store(
    report: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    store = (tmp_path / "mlruns").as_uri()
    proc = rankscope(
        "export",
        str(SAMPLE),
        "--to",
        "mlflow",
        "--tracking-uri",
        store,
        "--experiment",
        "scaling",
        "--run-name",
        "ddp3",
        env=job_env(MLFLOW_TRACKING_URI=""),
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout.startswith("logged MLflow run ")
    assert f"to {store}, experiment scaling" in proc.stdout

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("scaling")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "ddp3"
    assert run.info.status == "FINISHED"
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics

    verdict = report["verdict"]
    assert verdict["headline"] in tags["rankscope.verdict"]
    assert tags["rankscope.verdict.rank"] == str(verdict["rank"]) == "1"
    assert tags["rankscope.verdict.cause"] == "data_loading"
    assert tags["rankscope.stragglers"] == "1"
    assert params["rankscope.world_size"] == "3"
    assert params["rankscope.whole_run_steps"] == "0-28"
    (straggler,) = report["stragglers"]
    assert metrics["straggler.rank1.excess_ms_per_step"] == straggler["excess_ms_per_step"]
    assert metrics["step_ms_mean"] == report["run"]["step_ms"]

    def history(name: str) -> list[tuple[int, float]]:
        points = client.get_metric_history(run.info.run_id, name)
        return sorted((m.step, m.value) for m in points)

    steps = _steps(report)
    judged = [s for s in steps if s["late_rank"] >= 0]
    assert history("step_ms") == [(s["step"], s["step_ms"]) for s in steps]
    assert history("max_lateness_ms") == [(s["step"], s["excess_ms"]) for s in judged]
    assert history("data_wait_ms") == [(s["step"], s["data_ms"]) for s in judged]
    assert {v for _, v in history("late_rank")} == {1.0}

    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert names == {"rankscope-report.html", "rankscope-report.json"}
    folder = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "got")))
    page = (folder / "rankscope-report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "Rank 1 is the straggler" in page
    logged = json.loads((folder / "rankscope-report.json").read_text(encoding="utf-8"))
    assert logged["verdict"] == verdict


def test_mlflow_default_store_is_mlruns_here(tmp_path: Path) -> None:
    proc = rankscope(
        "export", str(SAMPLE), "--to", "mlflow", cwd=tmp_path, env=job_env(MLFLOW_TRACKING_URI="")
    )
    assert proc.returncode == 0, proc.stderr
    assert f"to {(tmp_path / 'mlruns').as_uri()}, experiment rankscope" in proc.stdout
    assert (tmp_path / "mlruns").is_dir()


def test_mlflow_client_error_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = rankscope(
        "export",
        str(SAMPLE),
        "--to",
        "mlflow",
        "--tracking-uri",
        (blocker / "mlruns").as_uri(),
        env=job_env(MLFLOW_TRACKING_URI=""),
    )
    assert proc.returncode == 3
    assert proc.stdout == ""
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"rankscope export: MLflow at {(blocker / 'mlruns').as_uri()}: ")
    assert "Traceback" not in proc.stderr


def wandb_records(path: Path) -> Iterator[Any]:
    """The protobuf records of a ``.wandb`` file: a 7-byte header, then 32 KiB blocks of
    records (crc32, length, type: 1 full, 2 first, 3 middle, 4 last), as LevelDB's log."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, parts = 32768, 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        parts += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(parts)
            parts = b""
            yield record


def _key(item: Any) -> str:
    """An item's name: W&B writes it as ``key`` or as the parts of ``nested_key``."""
    return str(item.key or ".".join(item.nested_key))


def test_wandb_offline(report: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "runs"
    proc = rankscope(
        "export",
        str(SAMPLE),
        "--to",
        "wandb",
        "--dir",
        str(out),
        "--project",
        "scaling",
        env=wandb_env(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    assert f"offline in {run_dir}, project scaling" in proc.stdout
    assert f"upload it with: wandb sync {run_dir}" in proc.stdout

    (log,) = run_dir.glob("run-*.wandb")
    history: dict[str, list[tuple[int, float]]] = {}
    summary: dict[str, Any] = {}
    config: dict[str, Any] = {}
    artifacts = []
    for record in wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            assert run.project == "scaling"
            assert run.display_name == SAMPLE.name
            assert report["verdict"]["headline"] in run.notes
            assert list(run.tags) == ["rankscope", "straggler:rank1", "cause:data_loading"]
            config |= {_key(i): json.loads(i.value_json) for i in run.config.update}
        elif kind == "history":
            step = record.history.step.num
            for item in record.history.item:
                if not _key(item).startswith("_"):
                    value = json.loads(item.value_json)
                    history.setdefault(_key(item), []).append((step, value))
        elif kind == "summary":
            summary |= {_key(i): json.loads(i.value_json) for i in record.summary.update}
        elif kind == "artifact":
            artifacts.append(record.artifact)

    assert config["rankscope.world_size"] == "3"
    assert summary["rankscope.verdict.rank"] == "1"
    assert report["verdict"]["headline"] in summary["rankscope.verdict"]
    (straggler,) = report["stragglers"]
    assert summary["straggler.rank1.excess_ms_per_step"] == straggler["excess_ms_per_step"]
    steps = _steps(report)
    judged = [s for s in steps if s["late_rank"] >= 0]
    assert history["step_ms"] == [(s["step"], s["step_ms"]) for s in steps]
    assert history["max_lateness_ms"] == [(s["step"], s["excess_ms"]) for s in judged]
    assert history["data_wait_ms"] == [(s["step"], s["data_ms"]) for s in judged]

    (artifact,) = artifacts
    assert (artifact.name, artifact.type) == ("rankscope-report", "rankscope-report")
    files = {entry.path: Path(entry.local_path) for entry in artifact.manifest.contents}
    assert set(files) == {"rankscope-report.html", "rankscope-report.json"}
    # staged for `wandb sync` under WANDB_DATA_DIR, where the test put it
    assert files["rankscope-report.html"].is_relative_to(tmp_path)
    assert "Rank 1 is the straggler" in files["rankscope-report.html"].read_text("utf-8")


def test_without_plotly_the_json_report_is_logged_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow.tracking import MlflowClient

    from rankscope.dashboard.cli import main
    from rankscope.dashboard.commands import report as report_command

    monkeypatch.setattr(report_command, "html_deps_missing", lambda: "plotly")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    store = (tmp_path / "mlruns").as_uri()
    assert main(["export", str(SAMPLE), "--to", "mlflow", "--tracking-uri", store]) == 0
    _, errors = capsys.readouterr()
    assert "warning: no HTML report logged: it needs plotly" in errors
    # the file store was allowed for the export only, not left set in the caller's process
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("rankscope")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["rankscope-report.json"]


def test_a_hung_run_is_logged_as_hung_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    from rankscope.dashboard.cli import main

    run_dir = REPO / "tests" / "data" / "hang_runs" / "stop"
    hang = json.loads(report_of(run_dir, "json"))["hang"]
    store = (tmp_path / "mlruns").as_uri()
    assert main(["export", str(run_dir), "--to", "mlflow", "--tracking-uri", store]) == 0
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("rankscope")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    tags = run.data.tags
    # as the text report's first line: "HUNG: Rank 2 never issued all_reduce ..."
    assert tags["rankscope.verdict"].startswith(f"HUNG: {hang['headline']} ")
    assert tags["rankscope.hang"] == hang["kind"] == "missing_rank"
    assert tags["rankscope.hang.rank"] == str(hang["rank"]) == "2"


def test_wandb_client_error_is_one_line(tmp_path: Path) -> None:
    # online without an API key: W&B refuses before any request (and its server is a
    # closed local port, so nothing could leave the machine anyway)
    home = tmp_path / "home"
    home.mkdir()
    env = wandb_env(tmp_path) | {
        "WANDB_MODE": "online",
        "WANDB_BASE_URL": "http://127.0.0.1:9",
        "HOME": str(home),
        "NETRC": str(home / ".netrc"),
    }
    proc = rankscope("export", str(SAMPLE), "--to", "wandb", "--dir", str(tmp_path), env=env)
    assert proc.returncode == 3
    assert proc.stdout == ""
    assert proc.stderr.endswith("\n") and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("rankscope export: W&B: No API key configured")


def test_wandb_dir_that_cannot_be_made_is_bad_input(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = rankscope(
        "export",
        str(SAMPLE),
        "--to",
        "wandb",
        "--dir",
        str(blocker / "runs"),
        env=wandb_env(tmp_path),
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"rankscope export: --dir {blocker / 'runs'}: cannot create it: Not a directory"
    )
