"""The Lightning hooks both Lightning callbacks share (``lightning`` and ``pytorch_lightning``).

Steps follow the optimizer: ``on_train_batch_start`` of the first batch begins step 0,
and ``on_train_batch_end`` ends a step when ``trainer.global_step`` moved (one
optimizer step; with ``accumulate_grad_batches=N``, every Nth batch). The collector
starts at ``on_train_start`` and stops at ``on_train_end`` or ``on_exception``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from rankscope.integrations._core import CallbackCollector
from rankscope.profiler import settings


class LightningHooks:
    """Mixed in before the framework's ``Callback`` class (which supplies the other hooks)."""

    FRAMEWORK = "lightning"

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        profile_steps: Any = settings.DEFAULTS["profile_steps"],
        *,
        export_to: str | Sequence[str] = (),
        export_project: str | None = None,
        **collector_kwargs: Any,
    ) -> None:
        super().__init__()
        self.rankscope = CallbackCollector(
            self.FRAMEWORK, run_dir, profile_steps, export_to, export_project, collector_kwargs
        )
        self._global_step: int | None = None

    @property
    def collector(self) -> Any:
        """The ``rankscope.Collector`` this callback drives."""
        return self.rankscope.collector

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.rankscope.train_begin()

    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._global_step is None:
            self._global_step = int(trainer.global_step)
            self.rankscope.step_begin()

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = int(trainer.global_step)
        if self._global_step is not None and step != self._global_step:
            self._global_step = step
            self.rankscope.step_end()

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self.rankscope.train_end()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self.rankscope.train_end()
