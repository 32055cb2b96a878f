"""An analysed run logged to an experiment tracker: MLflow or Weights & Biases.

``tracker_record(report, verdict, artifacts)`` gathers what is logged from the
typed report (``analysis.report.Report``, the one ``rankscope report`` prints)
into a ``TrackerRecord`` and imports no tracker: params (the run's shape), tags
(the verdict and the stragglers), summary metrics (the stragglers' numbers) and
per-step series from the whole run's light layer (``WholeRunReport.steps``):

- ``step_ms``: the step's duration (every step of the whole run);
- ``max_lateness_ms``: how much more own work the latest rank did than the
  others' median (``StepSummary.excess_ms``);
- ``late_rank``: that rank;
- ``data_wait_ms``: that rank's DataLoader wait in the step.

The last three are left out at a step where no verdict is drawn (the collector's
own capture at a window's edge: ``late_rank`` -1) and ``data_wait_ms`` where it
was not recorded (NaN). ``to_mlflow`` and ``to_wandb`` hand a record to each
library's own client (imported here, lazily, by ``require``) and return an
``ExportedRun``. Any failure is a ``RankscopeError``: a missing library or a
client error exits 3 (``EXIT_ENVIRONMENT``) with one line.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rankscope.profiler import __version__
from rankscope.profiler.errors import EXIT_ENVIRONMENT, RankscopeError

if TYPE_CHECKING:
    from rankscope.dashboard.analysis.report import Report
    from rankscope.dashboard.analysis.results import Straggler

Tracker = Literal["mlflow", "wandb"]
TRACKERS: tuple[Tracker, ...] = ("mlflow", "wandb")
# what each tracker's client is imported as, and the extra that installs it
_MODULES = {"mlflow": "mlflow", "wandb": "wandb"}
DEFAULT_PROJECT = "rankscope"
# MLflow refuses longer params (6,000 characters) and tags (8,000); W&B tags past 64
_MAX_VALUE = 5000
_MAX_WANDB_TAG = 64
# MLflow's log_batch takes at most 1,000 metrics, 100 params and 100 tags a call
_MLFLOW_METRICS_PER_CALL = 1000
_MLFLOW_TAGS_PER_CALL = 100
SERIES = ("step_ms", "max_lateness_ms", "late_rank", "data_wait_ms")


@dataclass
class TrackerRecord:
    """What one export logs, whatever the tracker."""

    name: str  # the default run name: the run folder's name
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]  # summary numbers, one value each
    series: dict[str, list[tuple[int, float]]]  # name -> (step, value), steps ascending
    artifacts: dict[str, str] = field(default_factory=dict)  # file name -> text
    labels: list[str] = field(default_factory=list)  # short tags for W&B's tag list

    @property
    def points(self) -> int:
        return sum(len(v) for v in self.series.values())


@dataclass(frozen=True)
class ExportedRun:
    """Where a record went: the tracker's run, and how much was logged."""

    tracker: Tracker
    run_id: str
    location: str  # the MLflow tracking URI, or the W&B run's folder (offline) or URL
    experiment: str
    points: int  # series points logged
    artifacts: list[str]
    offline: bool = False


def _fmt_steps(steps: Sequence[int]) -> str:
    if not steps:
        return ""
    return f"{steps[0]}-{steps[-1]}" if len(steps) > 1 else str(steps[0])


def _clip(text: str, limit: int = _MAX_VALUE) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _straggler_metrics(prefix: str, stragglers: Sequence[Straggler]) -> dict[str, float]:
    out: dict[str, float] = {}
    for s in stragglers:
        values = {
            "excess_ms_per_step": s.excess_ms_per_step,
            "caused_wait_ms_per_step": s.caused_wait_ms_per_step,
            "est_saving_ms_per_step": s.est_saving_ms_per_step,
        }
        for name, value in values.items():
            _put(out, f"{prefix}rank{s.rank}.{name}", value)
    return out


def _put(metrics: dict[str, float], name: str, value: float | None) -> None:
    """``metrics[name] = value`` when the value is a number (no tracker takes NaN or None)."""
    if value is not None and math.isfinite(value):
        metrics[name] = float(value)


def tracker_record(
    report: Report, verdict: str, artifacts: dict[str, str] | None = None
) -> TrackerRecord:
    """The params, tags, metrics and series to log for ``report``.

    ``verdict`` is the sentence to show first: the report's verdict, after its hang
    line when the run hung (``commands.export`` words it with ``render``).
    """
    run = report.run
    whole = report.whole_run
    params = {
        "rankscope.version": __version__,
        "rankscope.run_path": _clip(run.path),
        "rankscope.world_size": str(run.world_size),
        "rankscope.ranks_analysed": str(len(run.ranks)),
        "rankscope.steps_analysed": _fmt_steps(run.steps),
        "rankscope.step_source": run.step_source,
    }
    tags = {"rankscope.verdict": _clip(verdict)}
    labels = ["rankscope"]
    one = report.verdict
    if one is not None:
        tags["rankscope.verdict.headline"] = _clip(one.headline)
        tags["rankscope.verdict.pattern"] = one.pattern
        tags["rankscope.verdict.source"] = one.source
        if one.rank is not None:
            tags["rankscope.verdict.rank"] = str(one.rank)
            labels.append(f"straggler:rank{one.rank}")
        if one.cause is not None:
            tags["rankscope.verdict.cause"] = one.cause
            labels.append(f"cause:{one.cause}")
    tags["rankscope.stragglers"] = ",".join(str(s.rank) for s in report.stragglers)
    if report.hang is not None:
        tags["rankscope.hang"] = report.hang.kind
        tags["rankscope.hang.headline"] = _clip(report.hang.headline)
        if report.hang.rank is not None:
            tags["rankscope.hang.rank"] = str(report.hang.rank)
        labels.append(f"hang:{report.hang.kind}")
    metrics = _straggler_metrics("straggler.", report.stragglers)
    metrics["stragglers"] = float(len(report.stragglers))
    _put(metrics, "step_ms_mean", run.step_ms)
    _put(metrics, "est_saving_ms_per_step", report.imbalance.joint_saving_ms_per_step)
    series: dict[str, list[tuple[int, float]]] = {name: [] for name in SERIES}
    if whole is not None:
        params["rankscope.whole_run_steps"] = _fmt_steps([whole.first_step, whole.last_step])
        tags["rankscope.whole_run.stragglers"] = ",".join(str(s.rank) for s in whole.stragglers)
        metrics |= _straggler_metrics("whole_run.straggler.", whole.stragglers)
        metrics["whole_run.stragglers"] = float(len(whole.stragglers))
        _put(metrics, "whole_run.est_saving_ms_per_step", whole.joint_saving_ms_per_step)
        for st in sorted(whole.steps, key=lambda s: s.step):
            if _finite(st.step_ms):
                series["step_ms"].append((st.step, float(st.step_ms)))
            if st.late_rank < 0:
                continue  # the collector's own capture: no verdict at this step
            series["late_rank"].append((st.step, float(st.late_rank)))
            if _finite(st.excess_ms):
                series["max_lateness_ms"].append((st.step, float(st.excess_ms)))
            if _finite(st.data_ms):
                series["data_wait_ms"].append((st.step, float(st.data_ms)))
    return TrackerRecord(
        name=Path(run.path).name or "rankscope",
        params=params,
        tags=tags,
        metrics=metrics,
        series={k: v for k, v in series.items() if v},
        artifacts=dict(artifacts or {}),
        labels=[label[:_MAX_WANDB_TAG] for label in labels],
    )


def require(tracker: Tracker) -> Any:
    """The tracker's client module; a missing one is a one-line error with the install command."""
    module = _MODULES[tracker]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise RankscopeError(
            f'--to {tracker} needs {module}: pip install "rankscope[{tracker}]"',
            exit_code=EXIT_ENVIRONMENT,
        ) from None
    except Exception as e:  # a broken install (a protobuf it cannot load, ...)
        raise RankscopeError(
            f"--to {tracker}: cannot import {module}: {_one_line(e)}", exit_code=EXIT_ENVIRONMENT
        ) from None


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return _clip(text, 300)


def _write_artifacts(record: TrackerRecord, folder: Path) -> list[Path]:
    paths = []
    for name, text in record.artifacts.items():
        path = folder / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else a file store ``mlruns`` in the current folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or Path("mlruns").resolve().as_uri()


def _is_file_store(uri: str) -> bool:
    from urllib.parse import urlparse

    return urlparse(uri).scheme in ("", "file")


def to_mlflow(
    record: TrackerRecord,
    tracking_uri: str | None = None,
    experiment: str = DEFAULT_PROJECT,
    run_name: str | None = None,
) -> ExportedRun:
    """Log ``record`` as one MLflow run (a new run in ``experiment``, created if absent).

    A local file store is what ``--tracking-uri file:DIR`` asks for, so it is
    allowed (``MLFLOW_ALLOW_FILE_STORE``, which MLflow 3 otherwise wants set)
    unless the environment says otherwise.
    """
    require("mlflow")
    uri = tracking_uri or default_tracking_uri()
    allow = {"MLFLOW_ALLOW_FILE_STORE": "true"} if _is_file_store(uri) else {}
    with _env_defaults(allow):
        return _log_mlflow(record, uri, experiment, run_name)


@contextlib.contextmanager
def _env_defaults(values: dict[str, str]) -> Iterator[None]:
    """Set each variable the environment does not set, for the block only."""
    added = [name for name in values if name not in os.environ]
    for name in added:
        os.environ[name] = values[name]
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _log_mlflow(
    record: TrackerRecord, uri: str, experiment: str, run_name: str | None
) -> ExportedRun:
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    run_id = ""
    try:
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        run = client.create_run(experiment_id, run_name=run_name or record.name)
        run_id = run.info.run_id
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in record.metrics.items()]
        metrics += [
            Metric(name, value, now, step)
            for name, points in record.series.items()
            for step, value in points
        ]
        params = [Param(k, v) for k, v in record.params.items()]
        tags = [RunTag(k, v) for k, v in record.tags.items()]
        for chunk in _chunks(params, _MLFLOW_TAGS_PER_CALL):
            client.log_batch(run_id, params=chunk)
        for chunk in _chunks(tags, _MLFLOW_TAGS_PER_CALL):
            client.log_batch(run_id, tags=chunk)
        for chunk in _chunks(metrics, _MLFLOW_METRICS_PER_CALL):
            client.log_batch(run_id, metrics=chunk)
        with tempfile.TemporaryDirectory(prefix="rankscope-mlflow-") as tmp:
            for path in _write_artifacts(record, Path(tmp)):
                client.log_artifact(run_id, str(path))
        client.set_terminated(run_id)
    except RankscopeError:
        raise
    except Exception as e:
        if run_id:
            _fail_quietly(lambda: client.set_terminated(run_id, "FAILED"))
        raise RankscopeError(
            f"MLflow at {uri}: {_one_line(e)}", exit_code=EXIT_ENVIRONMENT
        ) from None
    return ExportedRun(
        tracker="mlflow",
        run_id=run_id,
        location=uri,
        experiment=experiment,
        points=record.points,
        artifacts=list(record.artifacts),
    )


def _fail_quietly(action: Callable[[], object]) -> None:
    with contextlib.suppress(Exception):  # the first error is the one to show
        action()


def to_wandb(
    record: TrackerRecord,
    project: str = DEFAULT_PROJECT,
    run_name: str | None = None,
    directory: str | None = None,
) -> ExportedRun:
    """Log ``record`` as one W&B run: offline (files to upload with ``wandb sync``)
    unless ``WANDB_MODE`` says otherwise.

    The params are the run's config, the tags and summary metrics its summary, the
    verdict its notes, the series its history (W&B's step = the training step) and
    the artifacts one artifact ``rankscope-report`` of type ``rankscope-report``.
    """
    wandb = require("wandb")
    mode = os.environ.get("WANDB_MODE") or "offline"
    if directory:
        try:
            Path(directory).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RankscopeError(
                f"--dir {directory}: cannot create it: {e.strerror or e}"
            ) from None
    run = None
    try:
        settings = wandb.Settings(console="off", silent=True, save_code=False, disable_git=True)
        run = wandb.init(
            project=project,
            name=run_name or record.name,
            dir=directory,
            mode=mode,
            config=dict(record.params),
            tags=record.labels,
            notes=record.tags.get("rankscope.verdict"),
            job_type="rankscope-export",
            settings=settings,
        )
        by_step: dict[int, dict[str, float]] = {}
        for name, points in record.series.items():
            for step, value in points:
                by_step.setdefault(step, {})[name] = value
        for step in sorted(by_step):
            run.log(by_step[step], step=step)
        run.summary.update({**record.tags, **record.metrics})
        names: list[str] = []
        if record.artifacts:
            with tempfile.TemporaryDirectory(prefix="rankscope-wandb-") as tmp:
                artifact = wandb.Artifact("rankscope-report", type="rankscope-report")
                for path in _write_artifacts(record, Path(tmp)):
                    artifact.add_file(str(path))  # copied to W&B's staging area here
                    names.append(path.name)
                run.log_artifact(artifact)
        run_id = str(run.id)
        offline = mode in ("offline", "dryrun")
        location = str(Path(run.dir).parent) if offline else str(run.url or "")
        run.finish()
    except RankscopeError:
        raise
    except Exception as e:
        if run is not None:
            _fail_quietly(lambda: run.finish(exit_code=1))
        raise RankscopeError(f"W&B: {_one_line(e)}", exit_code=EXIT_ENVIRONMENT) from None
    return ExportedRun(
        tracker="wandb",
        run_id=run_id,
        location=location,
        experiment=project,
        points=record.points,
        artifacts=names,
        offline=offline,
    )
