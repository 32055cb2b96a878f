"""One clock for every rank: the per-rank shift an export applies to its timestamps.

``clock_alignment(windows, steps, manifest_offsets, method)`` -> ``Alignment``:
``offsets_ns[rank]`` is subtracted from every timestamp of that rank
(``t_aligned = t - offsets_ns[rank]``), so all ranks read on the reference rank's
clock. Methods:

- ``step_start`` (default): the Timeline view's rule (``analysis.timeline``
  draws each rank from its own start of the step): in synchronous training every
  rank starts a step when the previous step's collectives released it, so step
  starts coincide whatever the clocks say. One constant per rank, the median over
  the analysed steps of (its step start - the reference rank's), so durations and
  the order of events on a rank are untouched and one odd step does not move it.
- ``clock_offset``: the offset the collector measured at start (``run.json``'s
  per-rank ``clock_offset_ns``, this rank's clock minus rank 0's).
- ``none``: timestamps as recorded.

``step_start`` falls back to ``clock_offset`` for a rank that shares no step with
the reference rank (then to 0), and says so in ``notes``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Method = Literal["step_start", "clock_offset", "none"]
METHODS: tuple[Method, ...] = ("step_start", "clock_offset", "none")

DESCRIPTIONS: dict[Method, str] = {
    "step_start": (
        "each rank shifted by the median, over the analysed steps, of its step start minus"
        " the reference rank's (the Timeline view's alignment at step start)"
    ),
    "clock_offset": "each rank shifted by the clock offset the collector measured at start",
    "none": "timestamps as recorded on each rank's own clock",
}


@dataclass(frozen=True)
class Alignment:
    method: Method
    reference_rank: int | None
    offsets_ns: dict[int, int]
    notes: list[str] = field(default_factory=list)

    @property
    def description(self) -> str:
        return DESCRIPTIONS[self.method]

    def shift(self, rank: int) -> int:
        return self.offsets_ns.get(rank, 0)


def clock_alignment(
    windows: Mapping[int, Mapping[int, tuple[int, int]]],
    steps: list[int],
    manifest_offsets: Mapping[int, int | None],
    method: Method = "step_start",
) -> Alignment:
    """Each rank's shift by ``method`` (see the module docstring)."""
    ranks = sorted(set(windows) | set(manifest_offsets))
    measured = {r: int(v) for r, v in manifest_offsets.items() if v is not None}
    if method == "none" or not ranks:
        return Alignment("none", None, {r: 0 for r in ranks})
    if method == "clock_offset":
        unmeasured = [f"rank {r}: no measured clock offset" for r in ranks if r not in measured]
        return Alignment("clock_offset", 0, {r: measured.get(r, 0) for r in ranks}, unmeasured)
    real = [s for s in steps if s >= 0]
    with_steps = [r for r in ranks if any(s in windows.get(r, {}) for s in real)]
    if not with_steps:
        fallback = clock_alignment(windows, steps, manifest_offsets, "clock_offset")
        return Alignment(
            fallback.method,
            fallback.reference_rank,
            fallback.offsets_ns,
            ["no step boundaries in the traces: the measured clock offsets are used instead"],
        )
    ref = with_steps[0]
    offsets: dict[int, int] = {}
    notes: list[str] = []
    for r in ranks:
        mine, theirs = windows.get(r, {}), windows[ref]
        diffs = [mine[s][0] - theirs[s][0] for s in real if s in mine and s in theirs]
        if diffs:
            offsets[r] = int(np.median(np.asarray(diffs, dtype=np.float64)))
        else:
            offsets[r] = measured.get(r, 0) - measured.get(ref, 0)
            notes.append(
                f"rank {r} shares no step with rank {ref}: "
                + ("its measured clock offset is used" if r in measured else "not shifted")
            )
    return Alignment("step_start", ref, offsets, notes)
