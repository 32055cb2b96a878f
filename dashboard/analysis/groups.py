"""Process groups from the flight recorder's log: who each group waits for.

Input: each rank's collective log (``RankData.light_comms``: ``pg``, ``pg_desc``,
``seq``, ``enqueue_ns``) and its manifest's ``clock_offset_ns``. A group's
members are the ranks that logged it; its instances are the sequence numbers
every member logged (the latest ``MAX_CELLS // members`` of them). Per
instance, a member's arrival lag is its issue time minus the first member's, on
rank 0's clock. ``group_summaries`` returns one
``GroupSummary`` per group with at least two members: how often each member
arrived last, its mean lag, and ``held_back_by``, the member with the largest
mean lag, last (or within ``TIE_MS`` of the last) at ``HELD_BACK_SHARE`` of the
instances or more (at least ``MIN_INSTANCES``), with a mean lag of ``MIN_LAG_MS``
or more and ``LAG_RATIO`` times any other member's (noise makes every member last
now and then); else None. A straggler is named with the
groups it holds back (``held_back``), so a slow tensor-parallel pair reads as
the data-parallel groups it delays.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from rankscope.dashboard.ingest.run import RankData
from rankscope.dashboard.ingest.table import distinct, isin

NS_PER_MS = 1e6
HELD_BACK_SHARE = 0.5
MIN_INSTANCES = 5
MIN_LAG_MS = 1.0
TIE_MS = 0.5  # arrivals this close count as together (``_summary``)
LAG_RATIO = 2.0
# At most this many (member, instance) arrival times per group: a group's latest
# instances only (32 MB), however many ranks and steps.
MAX_CELLS = 1 << 22


@dataclass(frozen=True)
class GroupSummary:
    """One process group: its members and who it waited for."""

    pg: str
    desc: str  # the flight recorder's pg_desc ("default_pg", "tp", ... or "")
    ranks: list[int]
    instances: int  # instances every member logged
    last_arrivals: dict[int, int]  # member -> instances at which it arrived last
    mean_lag_ms: dict[int, float]  # member -> mean arrival lag behind the first member
    held_back_by: int | None  # the member it waits for (module docstring), else None
    # instances at which ``held_back_by`` arrived last or within TIE_MS of the last
    held_last_or_tied: int | None = None


def _offset(rd: RankData) -> int:
    offset = (rd.meta.get("manifest") or {}).get("clock_offset_ns")
    return offset if isinstance(offset, int) and not isinstance(offset, bool) else 0


def group_summaries(
    ranks: Mapping[int, RankData], unaligned: Collection[str] = ()
) -> list[GroupSummary]:
    """One summary per process group two ranks or more logged, in group order.

    The groups in ``unaligned`` (``wholerun.seq_shifts``: members whose sequence
    numbers do not line up) are left out: pairing by seq would pair different
    collectives.
    """
    logs: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
    descs: dict[str, str] = {}
    for r, rd in sorted(ranks.items()):
        comms = rd.light_collectives
        if not len(comms):
            continue
        pgs = comms.vocab.get("pg", [])
        desc_vocab = comms.vocab.get("pg_desc", [])
        pg_codes = comms["pg"]
        arrival = comms["enqueue_ns"] - _offset(rd)
        for code, pg in enumerate(pgs):
            mine = pg_codes == code
            logs.setdefault(pg, {})[r] = (comms["seq"][mine], arrival[mine])
            if desc_vocab and "pg_desc" in comms and pg not in descs:
                descs[pg] = desc_vocab[int(comms["pg_desc"][np.flatnonzero(mine)[0]])]
    out = []
    for pg in sorted(logs, key=lambda p: (len(p), p)):
        members = sorted(logs[pg])
        if len(members) < 2 or pg in unaligned:
            continue
        common = None
        for r in members:
            seqs = distinct(logs[pg][r][0])
            # distinct/isin, not np.intersect1d/np.isin: those import numpy.ma (~25 ms)
            common = seqs if common is None else common[isin(common, seqs)]
        assert common is not None
        common = common[-max(1, MAX_CELLS // len(members)) :]  # the latest instances
        arr = np.zeros((len(members), len(common)), dtype=np.int64)
        for k, r in enumerate(members):
            seq, at = logs[pg][r]
            keep = isin(seq, common)
            arr[k, np.searchsorted(common, seq[keep])] = at[keep]
        out.append(_summary(pg, descs.get(pg, ""), members, arr))
    return out


def _summary(pg: str, desc: str, members: list[int], arr: np.ndarray) -> GroupSummary:
    n = arr.shape[1]
    if n == 0:
        return GroupSummary(pg, desc, members, 0, {}, {}, None)
    lag = (arr - arr.min(axis=0)) / NS_PER_MS
    last = np.bincount(arr.argmax(axis=0), minlength=len(members))
    mean = lag.mean(axis=1)
    # The candidate is the member latest on average. It counts as last wherever it is
    # within TIE_MS of the last: a second collective issued as soon as the first
    # released everyone finds the members together, and which one is a few us later
    # there is noise (a slow rank of a pair, 30 ms late at one of two collectives a
    # step, was "last" at 30 of 60 and its partner at the other 30).
    k = int(mean.argmax())
    last_or_tied = int((lag[k] >= lag.max(axis=0) - TIE_MS).sum())
    others = np.delete(mean, k)
    held = (
        members[k]
        if n >= MIN_INSTANCES
        and last_or_tied >= HELD_BACK_SHARE * n
        and mean[k] >= max(MIN_LAG_MS, LAG_RATIO * float(others.max(initial=0.0)))
        else None
    )
    return GroupSummary(
        pg=pg,
        desc=desc,
        ranks=members,
        instances=n,
        last_arrivals={r: int(c) for r, c in zip(members, last, strict=True)},
        mean_lag_ms={r: round(float(v), 3) for r, v in zip(members, mean, strict=True)},
        held_back_by=held,
        held_last_or_tied=last_or_tied if held is not None else None,
    )


def held_back(groups: Sequence[GroupSummary], rank: int) -> list[GroupSummary]:
    """The groups ``rank`` holds back."""
    return [g for g in groups if g.held_back_by == rank]
