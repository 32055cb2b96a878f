"""``RankscopeCallback`` for code that imports ``pytorch_lightning`` (Lightning's older name).

The same callback as ``rankscope.integrations.lightning.RankscopeCallback``, on
``pytorch_lightning.Callback``: a ``pytorch_lightning.Trainer`` takes only callbacks
of its own package's class. See docs/integrations.md.
"""

from __future__ import annotations

from pytorch_lightning import Callback

from rankscope.integrations._lightning import LightningHooks

__all__ = ["RankscopeCallback"]


class RankscopeCallback(LightningHooks, Callback):
    """Record every rank's steps (and profiler windows) of a ``pytorch_lightning.Trainer``."""

    FRAMEWORK = "pytorch_lightning"
