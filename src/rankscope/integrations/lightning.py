"""``RankscopeCallback``: rankscope's collector in a Lightning ``Trainer`` (``lightning.pytorch``).

Usage::

    import lightning.pytorch as pl
    from rankscope.integrations.lightning import RankscopeCallback

    trainer = pl.Trainer(strategy="ddp", devices=8,
                         callbacks=[RankscopeCallback("runs/exp1", profile_steps="5-7")])
    trainer.fit(model, loader)           # then: rankscope report runs/exp1

For code that imports ``pytorch_lightning`` (the older package name), use
``rankscope.integrations.pytorch_lightning.RankscopeCallback``: Lightning accepts
only callbacks of its own package's ``Callback`` class. The collector starts at
``on_train_start``, step 0 begins at the first training batch, each optimizer step
(``trainer.global_step`` moving) ends a step, and the collector stops at
``on_train_end`` (or ``on_exception``). Arguments as in
``rankscope.integrations.transformers.RankscopeCallback``; see docs/integrations.md.
"""

from __future__ import annotations

from lightning.pytorch import Callback

from rankscope.integrations._lightning import LightningHooks

__all__ = ["RankscopeCallback"]


class RankscopeCallback(LightningHooks, Callback):
    """Record every rank's steps (and profiler windows) of a Lightning ``Trainer``."""

    FRAMEWORK = "lightning"
