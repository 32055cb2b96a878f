"""rankscope's collector: runs inside every rank of a training job.

``from profiler import Collector`` is the in-code entry point. Importing this
package is cheap: torch, pynvml and everything heavy load only when a
Collector starts (the training environment brings its own torch build).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from profiler.collector import Collector

__all__ = ["Collector", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Collector":
        from profiler.collector import Collector

        return Collector
    raise AttributeError(f"module 'profiler' has no attribute {name!r}")
