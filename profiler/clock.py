"""One-time clock offset of this rank against rank 0, through the job's c10d store.

``measure_clock_offset(dist, token, timeout_s)`` returns ``(offset_ns, method)``:
``offset_ns`` = this rank's CLOCK_REALTIME minus rank 0's at the same instant
(so ``t_rank0 = t_this - offset_ns``), ``None`` when it could not be measured.

Why the store and not an all_gather: a collective needs a device for NCCL (before
the job calls ``set_device`` that would create a communicator on the wrong GPU)
and a collective cannot time out. The store is the rendezvous every rank already
shares. Protocol: every rank counts in; the last to arrive sets "go"; all ranks
wake on "go" and read their clock at once (they wake within a network round
trip of each other, far below NTP skew); rank 0 publishes its reading, the
others subtract it; the median of ``rounds`` such rounds is kept. Each wait
has a timeout, so a rank without a collector costs the others ``timeout_s``
once (the first round gives up), never a hang.
"""

from __future__ import annotations

import datetime
import statistics
import time
from typing import Any


def measure_clock_offset(
    dist: Any, token: str, timeout_s: float = 15.0, rounds: int = 5
) -> tuple[int | None, str]:
    if not (dist.is_available() and dist.is_initialized()):
        return 0, "single-process"
    world = int(dist.get_world_size())
    rank = int(dist.get_rank())
    if world == 1:
        return 0, "single-process"
    from torch.distributed import distributed_c10d

    store = distributed_c10d._get_default_store()
    timeout = datetime.timedelta(seconds=timeout_s)
    offsets = []
    for round_ in range(rounds):
        prefix = f"rankscope/clock/{token}/{round_}/"
        arrived = int(store.add(prefix + "arrived", 1))
        if arrived == world:
            store.set(prefix + "go", "1")
        store.wait([prefix + "go"], timeout)
        now = time.time_ns()
        if rank == 0:
            store.set(prefix + "t0", str(now))
            continue
        store.wait([prefix + "t0"], timeout)
        offsets.append(now - int(store.get(prefix + "t0")))
    # A rank that wakes late (a busy CPU) skews one round, not the median.
    return (int(statistics.median(offsets)) if offsets else 0), "c10d-store"
