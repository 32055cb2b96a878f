"""One large Kineto trace built from a real H200 trace, for ingest speed and memory.

``make_big_trace(out, json_mb)`` writes ``out`` (gzipped) whose ``traceEvents``
are the events of ``tests/data/reference_runs/h200_ddp4_straggler`` rank 0
repeated until the JSON reaches ``json_mb`` MB, each copy shifted in time past
the previous one (so the timeline stays ordered) with its correlation and
External ids offset (so launches still pair with their kernels). Everything
else (``distributedInfo``, ``deviceProperties``, ``baseTimeNanoseconds``) is
the source's. Write it to a temporary folder; it is never committed.

    python benchmarks/make_big_trace.py /tmp/big/rank0.pt.trace.json.gz --mb 1000
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path
from typing import Any

import msgspec

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "tests/data/reference_runs/h200_ddp4_straggler"


def _source_trace() -> Path:
    return sorted(SOURCE.glob("*rank0*.json.gz"))[0]


def _shifted(event: dict[str, Any], dt_us: float, id_offset: int) -> dict[str, Any]:
    e = dict(event)
    if isinstance(e.get("ts"), int | float):
        e["ts"] = round(e["ts"] + dt_us, 3)
    args = e.get("args")
    if isinstance(args, dict):
        args = dict(args)
        for key in ("correlation", "External id"):
            if isinstance(args.get(key), int) and args[key] > 0:
                args[key] += id_offset
        e["args"] = args
    return e


def make_big_trace(out: Path, json_mb: float, level: int = 1) -> int:
    """Write the trace; returns its JSON size in bytes."""
    doc = msgspec.json.decode(gzip.decompress(_source_trace().read_bytes()))
    events = doc.pop("traceEvents")
    timed = [e for e in events if isinstance(e.get("ts"), int | float)]
    t0 = min(e["ts"] for e in timed)
    span = max(e["ts"] + (e.get("dur") or 0) for e in timed) - t0 + 1000.0
    max_id = max(
        (
            v
            for e in events
            for k, v in (e.get("args") or {}).items()
            if k in ("correlation", "External id") and isinstance(v, int)
        ),
        default=0,
    )
    head = msgspec.json.encode(doc)[:-1] + b', "traceEvents": [\n'
    target = int(json_mb * 1e6)
    written = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(out, "wb", compresslevel=level) as f:
        f.write(head)
        written += len(head)
        copy = 0
        first = True
        while written < target:
            lines = [
                msgspec.json.encode(_shifted(e, copy * span, copy * (max_id + 1))) for e in events
            ]
            body = (b"" if first else b",\n") + b",\n".join(lines)
            first = False
            f.write(body)
            written += len(body)
            copy += 1
        f.write(b"\n]}\n")
        written += 4
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="output .json.gz path (use a temporary folder)")
    p.add_argument("--mb", type=float, default=1000.0, help="JSON size in MB (default 1000)")
    args = p.parse_args()
    size = make_big_trace(args.out, args.mb)
    print(f"{args.out}: {size / 1e6:.0f} MB of JSON")


if __name__ == "__main__":
    main()
