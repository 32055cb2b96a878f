"""``RankscopeCallback``: rankscope's collector in a Hugging Face ``transformers.Trainer``.

Usage::

    from rankscope.integrations.transformers import RankscopeCallback

    trainer = Trainer(model, args, train_dataset=ds,
                      callbacks=[RankscopeCallback("runs/exp1", profile_steps="5-7")])
    trainer.train()                      # then: rankscope report runs/exp1

Every rank records into ``run_dir`` as with ``rankscope.Collector``: the collector
starts at ``on_train_begin``, step 0 begins at the first ``on_step_begin``, each
``on_step_end`` (one optimizer step, after gradient accumulation) ends a step, and
the collector stops at ``on_train_end``. ``profile_steps`` and every other keyword
are ``Collector``'s (``rankscope attach`` works as under ``rankscope run``);
``export_to=("mlflow",)`` has rank 0 log the report to MLflow and/or W&B after
every rank stopped (``rankscope export RUN --to TRACKER``: ``MLFLOW_TRACKING_URI``,
``WANDB_DIR`` and ``WANDB_MODE`` apply; ``export_project`` names the experiment).
See docs/integrations.md.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from transformers import TrainerCallback

from rankscope.integrations._core import CallbackCollector
from rankscope.profiler import settings

__all__ = ["RankscopeCallback"]


class RankscopeCallback(TrainerCallback):
    """Record every rank's steps (and profiler windows) of a ``Trainer`` into ``run_dir``."""

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        profile_steps: Any = settings.DEFAULTS["profile_steps"],
        *,
        export_to: str | Sequence[str] = (),
        export_project: str | None = None,
        **collector_kwargs: Any,
    ) -> None:
        self.rankscope = CallbackCollector(
            "transformers", run_dir, profile_steps, export_to, export_project, collector_kwargs
        )

    @property
    def collector(self) -> Any:
        """The ``rankscope.Collector`` this callback drives."""
        return self.rankscope.collector

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.rankscope.train_begin()

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.rankscope.step_begin()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.rankscope.step_end()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.rankscope.train_end()
