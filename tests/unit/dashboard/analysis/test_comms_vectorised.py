"""The vectorised cross-rank code gives what the per-instance, per-rank loops gave.

``reference_match`` and ``reference_caused`` are the loops ``comms.match_collectives``
and ``imbalance.caused_wait_ms`` replaced (kept here as the specification). They
are compared on random runs built to hit the corner cases: ties in start time and
duration, a rank that repeats an instance, instances seen on one rank, ranks
visited out of numeric order, and runs with and without sequence numbers.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from rankscope.dashboard.analysis import comms, imbalance
from rankscope.dashboard.analysis import intervals as iv
from rankscope.dashboard.ingest.table import Table

MS = 1_000_000
Windows = dict[int, dict[int, tuple[int, int]]]


def reference_match(
    comms_by_rank: dict[int, Table],
    windows: dict[int, dict[int, tuple[int, int]]],
    steps: list[int],
) -> list[tuple[object, ...]]:
    per_rank = {}
    for rank, t in comms_by_rank.items():
        step = comms._step_of(t["launch_ts"], windows.get(rank, {}), steps)
        keep = step != np.iinfo(np.int64).min
        if not keep.any():
            continue
        per_rank[rank] = {
            "ts": t["ts"][keep],
            "dur": t["dur"][keep],
            "step": step[keep],
            "seq": t["seq"][keep],
            "bytes": t["bytes"][keep],
            "name": t.strings("name")[keep],
            "pg": t.strings("pg")[keep],
        }
    use_seq = bool(per_rank) and all((r["seq"] >= 0).all() for r in per_rank.values())
    instances: dict[tuple[object, ...], dict[int, int]] = defaultdict(dict)
    for rank, r in per_rank.items():
        counters: dict[tuple[object, ...], int] = defaultdict(int)
        for i in np.argsort(r["ts"], kind="stable"):
            if use_seq:
                key: tuple[object, ...] = (r["pg"][i], int(r["seq"][i]))
            else:
                base = (r["pg"][i], r["name"][i], int(r["step"][i]))
                key = (*base, counters[base])
                counters[base] += 1
            instances[key].setdefault(rank, int(i))

    def first_ts(item: tuple[tuple[object, ...], dict[int, int]]) -> int:
        return min(int(per_rank[rk]["ts"][i]) for rk, i in item[1].items())

    rows = []
    for inst_id, (_key, ranks) in enumerate(sorted(instances.items(), key=first_ts)):
        durs = {rk: int(per_rank[rk]["dur"][i]) for rk, i in ranks.items()}
        transfer = min(durs.values())
        last = min(durs, key=lambda rk: (durs[rk], rk)) if len(durs) > 1 else -1
        for rk, i in ranks.items():
            r = per_rank[rk]
            wait = (durs[rk] - transfer) / comms.NS_PER_MS if last >= 0 else 0.0
            rows.append(
                (
                    inst_id,
                    rk,
                    int(r["step"][i]),
                    str(r["name"][i]),
                    str(r["pg"][i]),
                    int(r["bytes"][i]),
                    int(r["ts"][i]),
                    durs[rk] / comms.NS_PER_MS,
                    transfer / comms.NS_PER_MS,
                    wait,
                    last,
                )
            )
    return rows


def reference_caused(matched: Table, ranks: list[int], n_steps: int) -> dict[int, float]:
    out = {}
    for r in ranks:
        m = (matched["wait_ms"] > 0) & (matched["last_rank"] == r)
        start = matched["start_ns"]
        end = start + np.rint(matched["wait_ms"] * comms.NS_PER_MS).astype(np.int64)
        others = [o for o in ranks if o != r]
        if not others:
            out[r] = 0.0
            continue
        total = sum(
            iv.length(iv.union(start[m & (matched["rank"] == o)], end[m & (matched["rank"] == o)]))
            for o in others
        )
        out[r] = total / comms.NS_PER_MS / len(others) / max(n_steps, 1)
    return out


def rows_of(t: Table) -> list[tuple[object, ...]]:
    names, pgs = t.strings("name"), t.strings("pg")
    return [
        (
            int(t["instance"][i]),
            int(t["rank"][i]),
            int(t["step"][i]),
            str(names[i]),
            str(pgs[i]),
            int(t["bytes"][i]),
            int(t["start_ns"][i]),
            float(t["dur_ms"][i]),
            float(t["transfer_ms"][i]),
            float(t["wait_ms"][i]),
            int(t["last_rank"][i]),
        )
        for i in range(len(t))
    ]


def random_run(
    rng: np.random.Generator, n_ranks: int, with_seq: bool
) -> tuple[dict[int, Table], Windows]:
    names = ["all_reduce", "broadcast", "all_gather"]
    out = {}
    windows = {}
    for rank in rng.permutation(n_ranks).tolist():  # visited out of numeric order
        n = int(rng.integers(0, 12))
        ts = rng.integers(0, 20, n) * MS  # coarse: many ties
        out[rank] = Table.build(
            {
                "ts": ts,
                "launch_ts": ts,
                "dur": rng.integers(1, 4, n) * MS,
                "seq": rng.integers(0, 6, n) if with_seq else np.full(n, -1),
                "bytes": rng.integers(-1, 3, n) * 1000,
                "name": [names[i] for i in rng.integers(0, 3, n)],
                "pg": [str(i) for i in rng.integers(0, 2, n)],
            },
            strings=("name", "pg"),
        )
        windows[rank] = {0: (0, 10 * MS), 1: (10 * MS, 18 * MS)}  # 18-20 ms: outside
    return out, windows


@pytest.mark.parametrize("with_seq", [True, False])
@pytest.mark.parametrize("seed", range(40))
def test_match_collectives_and_caused_wait_match_the_loops(seed: int, with_seq: bool) -> None:
    rng = np.random.default_rng(seed)
    n_ranks = int(rng.integers(1, 7))
    by_rank, windows = random_run(rng, n_ranks, with_seq)
    got = comms.match_collectives(by_rank, windows, [0, 1])
    assert rows_of(got) == reference_match(by_rank, windows, [0, 1])
    ranks = sorted(by_rank)
    assert imbalance.caused_wait_ms(got, ranks, 2) == reference_caused(got, ranks, 2)
    # Per-rank waits summed over collectives equal the per-collective merged waits.
    if len(got):
        summary = comms.collective_summary(got, 2, n_ranks)
        for s in summary:
            m = (got.strings("name") == s.name) & (got.strings("pg") == s.pg)
            waits = comms.wait_intervals(got, rows=m)
            expected = sum(iv.length(w) for w in waits.values())
            assert s.wait_ms == round(expected / comms.NS_PER_MS / 2 / n_ranks, 3)


def test_union_lengths_per_group_equal_union_per_group() -> None:
    rng = np.random.default_rng(7)
    groups = rng.integers(0, 5, 200)
    starts = rng.integers(-1000, 1000, 200) * 10**9  # far-apart clocks
    ends = starts + rng.integers(0, 50, 200)
    keys, lengths = comms.union_lengths(groups, starts, ends)
    for g, length in zip(keys.tolist(), lengths.tolist(), strict=True):
        m = groups == g
        assert length == iv.length(iv.union(starts[m], ends[m]))
