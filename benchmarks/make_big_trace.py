"""One large Kineto trace built from a real trace, for ingest speed and memory.

``make_big_trace(out, json_mb, shape)`` writes ``out`` (gzipped) whose
``traceEvents`` are the events of a real trace repeated until the JSON reaches
``json_mb`` MB, each copy shifted in time past the previous one (so the
timeline stays ordered) with its correlation, External and Python ids offset
(so launches still pair with their kernels). Everything else
(``distributedInfo``, ``deviceProperties``, ``baseTimeNanoseconds``) is the
source's. The shapes:

- ``gpu``: ``tests/data/reference_runs/h200_ddp4_straggler`` rank 0 (an H200 DDP
  step: kernels, runtime calls, operators with shapes, flow events);
- ``cpu``: ``sample_traces/ddp3_dataloader_straggler`` rank 0 (a gloo CPU job:
  almost only ``cpu_op`` ranges);
- ``python``: ``cpu`` as if traced ``with_stack=True``: each operator inside a
  stack of ``python_function`` ranges (``PYTHON_DEPTH`` frames, named like
  torch.profiler's: ``file.py(line): function`` and ``<built-in method ...>``).

``--pretty`` lays the JSON out as Kineto writes it (one key per line), compact
otherwise. Write it to a temporary folder; it is never committed.

    python benchmarks/make_big_trace.py /tmp/big/rank0.pt.trace.json.gz --mb 1000 --shape cpu
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path
from typing import Any

import msgspec

REPO = Path(__file__).resolve().parents[1]
SOURCES = {
    "gpu": (REPO / "tests/data/reference_runs/h200_ddp4_straggler", "*rank0*.json.gz"),
    "cpu": (REPO / "sample_traces/ddp3_dataloader_straggler", "rank0*.json.gz"),
}
SHAPES = ("gpu", "cpu", "python")
PYTHON_DEPTH = 4
_ID_KEYS = ("correlation", "External id", "Python id", "Python parent id")
# Frames as torch.profiler names them with with_stack=True.
_FRAMES = [
    "train.py(88): <module>",
    "train.py(61): train_step",
    "torch/nn/modules/module.py(1747): _call_impl",
    "torch/nn/modules/module.py(1736): _wrapped_call_impl",
    "torch/nn/parallel/distributed.py(1643): forward",
    "torch/nn/modules/linear.py(125): forward",
    "torch/nn/modules/activation.py(133): forward",
    "torch/optim/optimizer.py(485): wrapper",
    "torch/optim/adam.py(226): step",
    "torch/autograd/__init__.py(347): backward",
    "torch/_tensor.py(626): backward",
    "torch/utils/data/dataloader.py(708): __next__",
    "<built-in method linear of PyCapsule object at 0x7f3a2c1b5e40>",
    "<built-in method run_backward of torch._C._EngineBase object at 0x7f3a9d0c2f60>",
    "<built-in method _foreach_add_ of type object at 0x7f3ab1e4c8a0>",
    "<built-in function relu>",
]


def _source_trace(shape: str) -> Path:
    folder, pattern = SOURCES["gpu" if shape == "gpu" else "cpu"]
    return sorted(folder.glob(pattern))[0]


def _shifted(event: dict[str, Any], dt_us: float, id_offset: int) -> dict[str, Any]:
    e = dict(event)
    if isinstance(e.get("ts"), int | float):
        e["ts"] = round(e["ts"] + dt_us, 3)
    args = e.get("args")
    if isinstance(args, dict):
        args = dict(args)
        for key in _ID_KEYS:
            if isinstance(args.get(key), int) and args[key] > 0:
                args[key] += id_offset
        e["args"] = args
    return e


def with_stacks(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``events`` with each ``cpu_op`` inside ``PYTHON_DEPTH`` python_function ranges."""
    out: list[dict[str, Any]] = []
    python_id = 1
    for i, e in enumerate(events):
        if e.get("ph") == "X" and e.get("cat") == "cpu_op" and isinstance(e.get("ts"), float):
            parent = 0
            for depth in range(PYTHON_DEPTH):
                pad = (PYTHON_DEPTH - depth) * 0.05
                out.append(
                    {
                        "ph": "X",
                        "cat": "python_function",
                        "name": _FRAMES[(i * 7 + depth * 3) % len(_FRAMES)],
                        "pid": e.get("pid"),
                        "tid": e.get("tid"),
                        "ts": round(e["ts"] - pad, 3),
                        "dur": round((e.get("dur") or 0) + 2 * pad, 3),
                        "args": {
                            "Python parent id": parent,
                            "Python id": python_id,
                            "Python thread": 0,
                        },
                    }
                )
                parent = python_id
                python_id += 1
        out.append(e)
    return out


def make_big_trace(
    out: Path, json_mb: float, shape: str = "gpu", pretty: bool = False, level: int = 1
) -> int:
    """Write the trace; returns its JSON size in bytes."""
    doc = msgspec.json.decode(gzip.decompress(_source_trace(shape).read_bytes()))
    events = doc.pop("traceEvents")
    if shape == "python":
        events = with_stacks(events)
    timed = [e for e in events if isinstance(e.get("ts"), int | float)]
    t0 = min(e["ts"] for e in timed)
    span = max(e["ts"] + (e.get("dur") or 0) for e in timed) - t0 + 1000.0
    max_id = max(
        (
            v
            for e in events
            for k, v in (e.get("args") or {}).items()
            if k in _ID_KEYS and isinstance(v, int)
        ),
        default=0,
    )

    def encode(e: dict[str, Any]) -> bytes:
        raw = msgspec.json.encode(e)
        return msgspec.json.format(raw, indent=4) if pretty else raw

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
            lines = [encode(_shifted(e, copy * span, copy * (max_id + 1))) for e in events]
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
    p.add_argument("--shape", choices=SHAPES, default="gpu", help="what the trace holds")
    p.add_argument("--pretty", action="store_true", help="Kineto's own layout (indented)")
    args = p.parse_args()
    size = make_big_trace(args.out, args.mb, args.shape, args.pretty)
    print(f"{args.out}: {size / 1e6:.0f} MB of JSON ({args.shape})")


if __name__ == "__main__":
    main()
