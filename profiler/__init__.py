"""rankscope's collector (``rankscope.profiler``): runs inside every rank of a training job.

``from rankscope import Collector`` is the in-code entry point. Importing this
package is cheap: torch, pynvml and everything heavy load only when a
Collector starts (the training environment brings its own torch build). It
never imports the review side (``rankscope.dashboard``).
"""

from __future__ import annotations

from rankscope import __version__

__all__ = ["__version__"]
