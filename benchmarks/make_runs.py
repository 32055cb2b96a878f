"""N-rank runs built from the real 4-rank H200 traces, with a planted straggler.

``make_run(out_dir, n_ranks, straggler)`` writes ``rank{R}.pt.trace.json.gz``
(and ``rank{R}.nvml.jsonl``) for R in 0..N-1 from
``tests/data/reference_runs/h200_ddp4_straggler``:

- rank ``straggler`` is a copy of source rank 1 (40 ms of data loading a step);
- every other rank is a copy of a balanced source rank (0 or 2, alternately);
- each copy's ``distributedInfo`` says its own rank and the world size N, and its
  default process group holds every rank. Collectives keep their sequence
  order, so every instance matches across all N ranks, and the planted rank is
  the one the others wait for at any N.

Only ``distributedInfo`` differs between copies of one source, so each file is
two gzip members (``{"distributedInfo": ...,`` then the rest of the trace, the
same bytes for every copy, compressed once): writing 1,024 ranks takes seconds.
Readers of gzip (``gzip``, ``zcat``, rankscope) read concatenated members.

    python benchmarks/make_runs.py OUT_DIR --ranks 128 [--straggler 65]
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "tests" / "data" / "reference_runs" / "h200_ddp4_straggler"
STRAGGLER_SOURCE = 1  # sleeps 40 ms in data loading every step
BALANCED_SOURCES = (0, 2)  # batch 16, no stall (source rank 3 has twice the batch)


def default_straggler(n_ranks: int) -> int:
    """Mid-run rather than rank 1, so an off-by-one in rank handling shows."""
    return n_ranks // 2 + 1 if n_ranks > 2 else n_ranks - 1


def _body(source_rank: int) -> bytes:
    """The source trace without its distributedInfo, compressed: ``"k": v, ... }``."""
    with gzip.open(SOURCE / f"rank{source_rank}.pt.trace.json.gz", "rb") as f:
        trace = json.loads(f.read())
    trace.pop("distributedInfo", None)
    text = json.dumps(trace, separators=(",", ":"))
    assert text.startswith("{")
    return gzip.compress(text[1:].encode(), compresslevel=6, mtime=0)


def _head(rank: int, n_ranks: int) -> bytes:
    """``{"distributedInfo": {...},`` for one rank of an N-rank default process group."""
    dist = {
        "backend": "gloo",
        "rank": rank,
        "world_size": n_ranks,
        "pg_count": 1,
        "pg_config": [
            {
                "pg_name": "0",
                "pg_desc": "default_pg",
                "backend_config": "cpu:gloo,cuda:gloo",
                "pg_size": n_ranks,
                "ranks": list(range(n_ranks)),
            }
        ],
    }
    # json.dumps' default ": " separator: HTA finds a trace's rank with r'"rank":\s+(\d+)'.
    text = '{"distributedInfo": ' + json.dumps(dist) + ", "
    return gzip.compress(text.encode(), compresslevel=6, mtime=0)


def source_of(rank: int, straggler: int) -> int:
    if rank == straggler:
        return STRAGGLER_SOURCE
    return BALANCED_SOURCES[rank % len(BALANCED_SOURCES)]


def make_run(out_dir: Path, n_ranks: int, straggler: int | None = None) -> int:
    """Write an N-rank run into ``out_dir`` (created); returns the planted straggler's rank."""
    if n_ranks < 2:
        raise ValueError("a run needs at least 2 ranks")
    straggler = default_straggler(n_ranks) if straggler is None else straggler
    if not 0 <= straggler < n_ranks:
        raise ValueError(f"straggler {straggler} is not a rank of a {n_ranks}-rank run")
    out_dir.mkdir(parents=True, exist_ok=True)
    bodies = {s: _body(s) for s in {STRAGGLER_SOURCE, *BALANCED_SOURCES}}
    for rank in range(n_ranks):
        src = source_of(rank, straggler)
        with open(out_dir / f"rank{rank}.pt.trace.json.gz", "wb") as f:
            f.write(_head(rank, n_ranks))
            f.write(bodies[src])
        shutil.copyfile(SOURCE / f"rank{src}.nvml.jsonl", out_dir / f"rank{rank}.nvml.jsonl")
    manifest = {
        "scenario": f"synthetic_{n_ranks}_ranks",
        "made_by": "benchmarks/make_runs.py",
        "source": str(SOURCE.relative_to(REPO)),
        "world_size": n_ranks,
        "planted_straggler": straggler,
        "straggler_source_rank": STRAGGLER_SOURCE,
        "balanced_source_ranks": list(BALANCED_SOURCES),
    }
    (out_dir / "planted.txt").write_text(json.dumps(manifest, indent=1) + "\n")
    return straggler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--ranks", type=int, required=True, help="world size N")
    ap.add_argument("--straggler", type=int, default=None, help="planted rank (default N/2+1)")
    args = ap.parse_args()
    planted = make_run(args.out_dir, args.ranks, args.straggler)
    print(f"{args.out_dir}: {args.ranks} ranks, planted straggler rank {planted}")


if __name__ == "__main__":
    main()
