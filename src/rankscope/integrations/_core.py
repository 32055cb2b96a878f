"""What both framework callbacks do, whatever the framework: ``CallbackCollector``.

One ``Collector`` per callback, in the framework's hands:

- ``train_begin()``: the collector starts (files, telemetry, the attach channel,
  profiler windows as configured). No step begins yet: setup is not a step.
- ``step_begin()``: the first one begins step 0; later ones do nothing.
- ``step_end()``: the current step ends and the next begins, so the time between a
  step's end and the next one's begin (fetching the batch, logging, evaluation) is
  the next step's, as under ``rankscope run``.
- ``train_end()``: the collector stops (the window in progress is exported and
  every file flushed); with ``export_to``, rank 0 then waits for every rank to
  have stopped and runs ``rankscope export RUN --to TRACKER`` in a process of its
  own, so the review side is never imported into the training process.

Under ``rankscope run`` the callback's collector defers to the one ``rankscope run``
started (its run directory and settings win) and its step calls mark the steps.
Nothing here raises into training: a failure is one line on stderr (the
collector reports its own faults in ``rank{R}.log``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from rankscope.profiler import rundir, settings
from rankscope.profiler.collector import Collector
from rankscope.profiler.errors import RankscopeError

TRACKERS = ("mlflow", "wandb")
EXPORT_WAIT_S = 120.0  # how long rank 0 waits for the other ranks to stop before exporting
EXPORT_TIMEOUT_S = 600.0
# How far another node's clock may be behind this one's when telling this run's
# end from an earlier run's in the same directory.
CLOCK_SLACK_NS = 10_000_000_000


def _say(text: str) -> None:
    print(f"rankscope: {text}", file=sys.stderr, flush=True)


class CallbackCollector:
    """A ``Collector`` whose steps come from a training framework's step events."""

    def __init__(
        self,
        framework: str,
        run_dir: str | os.PathLike[str],
        profile_steps: Any,
        export_to: str | Sequence[str],
        export_project: str | None,
        collector_kwargs: dict[str, Any],
    ) -> None:
        self.framework = framework
        self.export_to = (export_to,) if isinstance(export_to, str) else tuple(export_to)
        for tracker in self.export_to:
            if tracker not in TRACKERS:
                raise RankscopeError(
                    f"export_to: {tracker!r} is not a tracker (choose from {', '.join(TRACKERS)})"
                )
        self.export_project = export_project
        self._settings = (run_dir, profile_steps, dict(collector_kwargs))
        # Built here, so that a bad setting is an error where the callback is made.
        self.collector = self._make_collector()
        self._begun = False
        self._done = False
        self._again = False

    def _make_collector(self) -> Collector:
        run_dir, profile_steps, kwargs = self._settings
        # steps_from_optimizer: no step begins when the collector starts (step_begin
        # begins step 0), and none is marked by the optimizer: the callback feeds it.
        collector = Collector(
            run_dir,
            profile_steps,
            steps_from_optimizer=True,
            # run.json's steps_source as the ranks' manifests say it: the calls mark steps
            run_config={"launcher": f"{self.framework} callback", "steps_source": "manual"},
            **kwargs,
        )
        collector._register_optimizer_hook = False
        return collector

    def __getstate__(self) -> dict[str, Any]:
        # Lightning's ddp_spawn (and a deepcopy) pickles callbacks before training:
        # a collector not started yet travels as its settings and is made anew.
        if self.collector._started:
            raise TypeError("a callback whose collector has started cannot be copied")
        state = dict(self.__dict__)
        del state["collector"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.collector = self._make_collector()

    @property
    def owner(self) -> Collector:
        """The collector that writes this rank's files: ours, or ``rankscope run``'s."""
        return self.collector._delegate or self.collector

    def train_begin(self) -> None:
        if self.collector._started:
            # A Collector starts once: a second train() would overwrite the first's files.
            if not self._again:
                self._again = True
                _say(
                    f"{self.framework}: training began again: not collected (one run per callback)"
                )
            self._done = True
            return
        try:
            self.collector.start()
        except Exception as e:  # start() reports its own faults; this is a last guard
            _say(f"{self.framework}: collector not started: {type(e).__name__}: {e}")

    def step_begin(self) -> None:
        if not self._begun and not self._done:
            self._begun = True
            self.collector.step()  # begins step 0

    def step_end(self) -> None:
        if self._begun and not self._done:
            self.collector.step()

    def train_end(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            self.collector.stop()
            if self.export_to:
                self._export()
        except Exception as e:
            _say(f"{self.framework}: at the end of training: {type(e).__name__}: {e}")

    # ------------------------------------------------------------------ tracker export

    def _export(self) -> None:
        owner = self.owner
        if owner.rank != 0 or not owner._started:
            return
        run_dir = owner.run_dir
        if owner is not self.collector:
            _say(
                f"{self.framework}: not exported to {', '.join(self.export_to)}: rankscope run "
                f"collects until the job ends; afterwards: rankscope export {run_dir} --to TRACKER"
            )
            return
        missing = self._wait_for_ranks(owner.world_size, EXPORT_WAIT_S)
        if missing:
            _say(
                f"{self.framework}: rank(s) {', '.join(map(str, missing))} had not stopped after"
                f" {EXPORT_WAIT_S:.0f} s; exporting what is there"
            )
        for tracker in self.export_to:
            self._export_one(run_dir, tracker)

    def _wait_for_ranks(self, world_size: int, timeout_s: float) -> list[int]:
        """Wait until every rank's manifest says it stopped; the ranks that did not.

        A manifest that ended before this rank started (an earlier run in the same
        directory) is not this run's: rank 0 waits for it to be rewritten.
        """
        run_dir = self.collector.run_dir
        started = int(self.collector._meta.get("start_ns") or 0) - CLOCK_SLACK_NS
        deadline = time.monotonic() + timeout_s
        while True:
            missing = []
            for rank in range(world_size):
                try:
                    meta = rundir.read_json(rundir.rank_meta_path(run_dir, rank))
                except (OSError, ValueError):
                    meta = None
                end = meta.get("end_ns") if isinstance(meta, dict) else None
                if not isinstance(end, int) or end < started:
                    missing.append(rank)
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(0.2)

    def _export_one(self, run_dir: Any, tracker: str) -> None:
        cmd = [sys.executable, "-m", "rankscope", "export", str(run_dir), "--to", tracker]
        if self.export_project:
            cmd += ["--project", self.export_project]
        # The same rankscope as this process's, without rankscope run's bootstrap.
        env = {k: v for k, v in os.environ.items() if k not in settings.ENV_ALL}
        bootstrap = os.environ.get(settings.ENV_BOOTSTRAP)
        parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != bootstrap]
        env["PYTHONPATH"] = os.pathsep.join([settings.package_path(), *parts])
        try:
            out = subprocess.run(
                cmd,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=EXPORT_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            _say(
                f"{self.framework}: export to {tracker} took over {EXPORT_TIMEOUT_S:.0f} s: stopped"
            )
            return
        for line in (out.stdout + out.stderr).strip().splitlines()[-5:]:
            _say(f"{self.framework}: {line}")
