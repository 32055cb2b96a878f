"""One check, on a machine with an NVIDIA GPU, of the collective log with NCCL (issue 26).

Run from the repository root (about 1-2 minutes; every part is in its own
try/except, so one failing part is printed and the others still run)::

    OUT=/tmp/gpu_check python3 benchmarks/gpu_check.py

``--cpu`` is a dry run of the same script on a machine without a GPU (gloo
instead of NCCL; the GPU test then skips and is reported as not passed).

Wheels (msgspec, platformdirs) found in ``.whl/`` (or ``$RANKSCOPE_WHEELS``) are
unpacked to a temporary folder put on ``PYTHONPATH``; ``src/`` is put there too.

1. ``probe``: a child process with ``TORCH_FR_BUFFER_SIZE=2000`` and
   ``TORCH_NCCL_ENABLE_TIMING=1`` makes a 1-rank NCCL process group and a gloo
   group, issues collectives on both, then calls each dump function of
   ``torch._C._distributed_c10d`` (``_dump_nccl_trace``, ``_json``, ``_dump_fr_trace``,
   ``_json``) three ways (keywords from its signature, positional, no arguments):
   its signature, entry count or the exception; the raw dumps go to
   ``$OUT/raw_dumps.tar.gz``. Then rankscope's own reader (``find_dumps`` +
   ``FlightRecorderLog``) reads the live rings: rows, names, GPU times, ``describe()``.
2. ``job``: a 1-rank NCCL DDP job under ``rankscope run --nccl-timing --profile off``:
   ``rank0.collectives.jsonl`` (count, names, start/end and GPU time present) and
   ``rank0.meta.json``'s ``collectives``; the run directory goes to ``$OUT/run.tar.gz``.
3. ``report``: ``rankscope report RUN --format json`` (``$OUT/report.json``): is
   ``whole_run`` there? (Not for one rank: the whole-run verdict compares ranks.)
4. ``gpu_test``: ``pytest -m gpu`` on the project's GPU test of the light layer.

``$OUT/summary.json`` holds every part's result; a compact summary is printed last.
The exit status is 0 when every check passed.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = Path(os.environ.get("OUT") or tempfile.mkdtemp(prefix="gpu_check_"))
WORK = Path(tempfile.mkdtemp(prefix="gpu_check_work_"))

PROBE = r"""
import collections, inspect, io, json, os, pickle, sys, tarfile, tempfile, time
import torch
import torch.distributed as dist

out, cpu = sys.argv[1], sys.argv[2] == "cpu"  # cpu: a dry run of this script with gloo
res = {"torch": torch.__version__, "cuda": torch.version.cuda, "functions": {}}
try:
    res["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
    res["device"] = torch.cuda.get_device_name(0)
except Exception as e:
    res["nccl"] = repr(e)
dev = torch.device("cpu") if cpu else torch.device("cuda", 0)
if not cpu:
    torch.cuda.set_device(dev)
tmp = tempfile.mkdtemp()
dist.init_process_group("gloo" if cpu else "nccl", store=dist.FileStore(os.path.join(tmp, "s"), 1),
                        rank=0, world_size=1, device_id=None if cpu else dev)
try:
    gloo = dist.new_group(backend="gloo")
except Exception as e:
    gloo, res["gloo_group"] = None, repr(e)
x = torch.ones(1 << 20, device=dev)
for _ in range(10):
    dist.all_reduce(x)
dist.broadcast(x, 0)
dist.all_gather_into_tensor(torch.empty(1 << 20, device=dev), x)
dist.barrier()
if gloo is not None:
    for _ in range(3):
        dist.all_reduce(torch.ones(16), group=gloo)
if not cpu:
    torch.cuda.synchronize()
time.sleep(0.5)  # NCCL's watchdog (100 ms) retires the entries: their GPU times are set

from rankscope.profiler.collectives import FlightRecorderLog, find_dumps, parameter_names
from rankscope.profiler.faults import Faults

c10d = torch._C._distributed_c10d
WANT = {"includeCollectives": True, "includeStackTraces": False, "onlyActive": False}
raw_files = {}
for name in ("_dump_nccl_trace", "_dump_nccl_trace_json", "_dump_fr_trace", "_dump_fr_trace_json"):
    fn = getattr(c10d, name, None)
    info = {"exists": fn is not None}
    res["functions"][name] = info
    if fn is None:
        continue
    doc = (getattr(fn, "__doc__", "") or "").strip().splitlines()
    info["signature"] = doc[0] if doc else None
    names = parameter_names(fn)
    info["parameter_names"] = names
    is_json = name.endswith("_json")
    positional = (True, False) if is_json else (True, False, False)
    calls = {
        "keywords": lambda: fn(**{k: v for k, v in WANT.items() if names and k in names}),
        "positional": lambda: fn(*positional),
        "no_args": lambda: fn(),
    }
    for style, call in calls.items():
        try:
            raw = call()
            data = json.loads(raw) if is_json else pickle.loads(raw)
            entries = data.get("entries") or []
            info[style] = {
                "entries": len(entries),
                "keys": sorted(data),
                "names": dict(collections.Counter(e.get("profiling_name") for e in entries)),
                "timed": sum(1 for e in entries if e.get("duration_ms") is not None),
                "retired": sum(1 for e in entries if e.get("retired")),
            }
            if entries and "first_entry" not in info:
                info["first_entry"] = {k: v for k, v in entries[0].items() if k != "frames"}
            raw_files.setdefault(name + (".json" if is_json else ".pkl"),
                                 raw.encode() if isinstance(raw, str) else bytes(raw))
        except Exception as e:
            info[style] = {"error": f"{type(e).__name__}: {e}"[:400]}
with tarfile.open(os.path.join(out, "raw_dumps.tar.gz"), "w:gz") as tar:
    for fname, data in raw_files.items():
        ti = tarfile.TarInfo(fname)
        ti.size = len(data)
        tar.addfile(ti, io.BytesIO(data))

faults = Faults("probe")
log = FlightRecorderLog(find_dumps(c10d), faults, has_process_group=dist.is_initialized)
rows = log.poll(0.0) + log.poll(100.0) + log.poll(200.0, final=True)
res["rankscope_reader"] = {
    "rows": len(rows),
    "names": dict(collections.Counter(r["name"] for r in rows)),
    "with_gpu_time": sum(1 for r in rows if r["duration_ms"] is not None),
    "with_start_end": sum(1 for r in rows if r["start_ns"] and r["end_ns"]),
    "describe": log.describe(),
    "log_lines": list(faults.pending),
    "first_rows": rows[:2],
}
dist.destroy_process_group()
with open(os.path.join(out, "probe.json"), "w") as f:
    json.dump(res, f, indent=1, default=repr)
print("probe done")
"""

DDP_JOB = r"""
import os, tempfile, time
import torch
import torch.distributed as dist
from torch import nn

import sys
cpu = sys.argv[1] == "cpu"  # a dry run of this script with gloo
dev = torch.device("cpu") if cpu else torch.device("cuda", 0)
if not cpu:
    torch.cuda.set_device(dev)
tmp = tempfile.mkdtemp()
dist.init_process_group("gloo" if cpu else "nccl", store=dist.FileStore(os.path.join(tmp, "s"), 1),
                        rank=0, world_size=1, device_id=None if cpu else dev)
model = nn.Sequential(nn.Linear(2048, 2048), nn.GELU(), nn.Linear(2048, 2048)).to(dev)
ddp = nn.parallel.DistributedDataParallel(model, device_ids=None if cpu else [0], bucket_cap_mb=4)
opt = torch.optim.SGD(ddp.parameters(), lr=1e-3)
for _ in range(30):
    loss = ddp(torch.randn(64 if cpu else 512, 2048, device=dev)).square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
if not cpu:
    torch.cuda.synchronize()
time.sleep(0.5)  # let NCCL's watchdog retire the last collectives (their GPU times)
dist.destroy_process_group()
"""


def unpack_wheels() -> str | None:
    """Unpack the wheels in .whl/ (or $RANKSCOPE_WHEELS) to a folder for PYTHONPATH."""
    folder = Path(os.environ.get("RANKSCOPE_WHEELS") or REPO / ".whl")
    wheels = sorted(folder.glob("*.whl")) if folder.is_dir() else []
    if not wheels:
        return None
    dest = WORK / "wheels"
    for w in wheels:
        with zipfile.ZipFile(w) as z:
            z.extractall(dest)
    return str(dest)


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    parts = [str(REPO / "src")]
    if WHEELS:
        parts.append(WHEELS)
    parts += [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run(cmd: list[str], timeout: float, **env: str) -> subprocess.CompletedProcess[str]:
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(
        cmd, env=child_env(**env), capture_output=True, text=True, timeout=timeout, cwd=REPO
    )
    if proc.returncode != 0:
        print(f"  exit {proc.returncode}; stderr tail:\n{proc.stderr[-2500:]}", flush=True)
    return proc


def probe() -> dict[str, Any]:
    script = WORK / "probe.py"
    script.write_text(PROBE)
    proc = run(
        [sys.executable, str(script), str(OUT), "cpu" if CPU else "gpu"],
        120,
        TORCH_FR_BUFFER_SIZE="2000",
        TORCH_NCCL_ENABLE_TIMING="1",
    )
    res: dict[str, Any] = {"exit": proc.returncode, "stderr_tail": proc.stderr[-1500:]}
    if (OUT / "probe.json").is_file():
        res.update(json.loads((OUT / "probe.json").read_text()))
    reader = res.get("rankscope_reader", {})
    res["ok"] = bool(proc.returncode == 0 and reader.get("rows", 0) > 0)
    return res


def job() -> dict[str, Any]:
    script = WORK / "ddp_job.py"
    script.write_text(DDP_JOB)
    run_dir = WORK / "run"
    cli = [sys.executable, "-m", "rankscope.dashboard.cli"]
    proc = run(
        [*cli, "run", "--out", str(run_dir), "--nccl-timing", "--profile", "off", "--",
         sys.executable, str(script), "cpu" if CPU else "gpu"],
        150,
    )  # fmt: skip
    res: dict[str, Any] = {"exit": proc.returncode, "run_dir": str(run_dir)}
    res["files"] = sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []
    with tarfile.open(OUT / "run.tar.gz", "w:gz") as tar:
        if run_dir.is_dir():
            tar.add(run_dir, arcname="run")
    coll = run_dir / "rank0.collectives.jsonl"
    lines = coll.read_text().splitlines() if coll.is_file() else []
    # the header line ({"schema": ..., "run_id": ...}) is not a collective
    rows = [r for r in map(json.loads, lines) if "schema" not in r]
    res["rows"] = len(rows)
    res["names"] = dict(Counter(r.get("name") for r in rows))
    res["states"] = dict(Counter(r.get("state") for r in rows))
    res["with_start_end"] = sum(1 for r in rows if r.get("start_ns") and r.get("end_ns"))
    res["with_gpu_time"] = sum(1 for r in rows if r.get("duration_ms") is not None)
    res["first_rows"] = rows[:2]
    meta_path = run_dir / "rank0.meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    res["meta_collectives"] = meta.get("collectives")
    log = run_dir / "rank0.log"
    res["rank_log"] = log.read_text()[-1500:] if log.is_file() else None
    res["ok"] = bool(
        proc.returncode == 0
        and res["names"].get("all_reduce", 0) >= 30
        and (CPU or res["with_start_end"] == len(rows))
        and (res["meta_collectives"] or {}).get("sources", [None])[0] == ("fr" if CPU else "nccl")
    )
    return res


def report(run_dir: str) -> dict[str, Any]:
    cli = [sys.executable, "-m", "rankscope.dashboard.cli"]
    proc = run([*cli, "report", run_dir, "--format", "json"], 120)
    res: dict[str, Any] = {"exit": proc.returncode}
    try:
        rep = json.loads(proc.stdout)
    except ValueError as e:
        res["error"] = f"not JSON: {e}; stdout head: {proc.stdout[:500]}"
        res["ok"] = False
        return res
    (OUT / "report.json").write_text(json.dumps(rep, indent=1))
    res["keys"] = sorted(rep)
    res["whole_run_present"] = rep.get("whole_run") is not None
    res["whole_run"] = rep.get("whole_run")
    res["warnings"] = (rep.get("run") or {}).get("warnings")
    res["world_size"] = (rep.get("run") or {}).get("world_size")
    res["ok"] = proc.returncode == 0
    return res


def gpu_test() -> dict[str, Any]:
    test = (
        "tests/integration/profiler/test_light_layer.py::test_nccl_collectives_carry_their_gpu_time"
    )
    pytest = [sys.executable, "-m", "pytest", "-q", "-rs", "-m", "gpu", "-p", "no:cacheprovider"]
    proc = run([*pytest, test], 240)
    tail = (proc.stdout + proc.stderr)[-2500:]
    # A skip (no GPU seen) is not a pass.
    return {"exit": proc.returncode, "tail": tail, "ok": "1 passed" in tail and not proc.returncode}


def part(name: str, fn: Any, *args: Any) -> dict[str, Any]:
    t0 = time.monotonic()
    try:
        res = fn(*args)
    except Exception as e:
        res = {
            "ok": False,
            "error": f"{type(e).__name__}: {e}",
            "traceback": traceback.format_exc(),
        }
        print(f"[{name}] FAILED: {res['error']}\n{res['traceback']}", flush=True)
    res["seconds"] = round(time.monotonic() - t0, 1)
    print(f"[{name}] ok={res.get('ok')} in {res['seconds']} s", flush=True)
    return res


def compact(summary: dict[str, Any]) -> str:
    out = io.StringIO()
    p = summary.get("probe", {})
    print(
        f"torch {p.get('torch')} cuda {p.get('cuda')} nccl {p.get('nccl')} {p.get('device')}",
        file=out,
    )
    for name, info in (p.get("functions") or {}).items():
        if not info.get("exists"):
            print(f"  {name}: absent", file=out)
            continue
        styles = {
            s: (f"{info[s]['entries']} entries, {info[s]['timed']} timed" if "entries" in info[s]
                else info[s]["error"][:120])
            for s in ("keywords", "positional", "no_args") if s in info
        }  # fmt: skip
        print(f"  {name}{tuple(info.get('parameter_names') or ())}: {styles}", file=out)
    r = p.get("rankscope_reader") or {}
    d = r.get("describe") or {}
    print(f"  reader: {r.get('rows')} rows {r.get('names')} gpu-timed {r.get('with_gpu_time')}"
          f" sources {d.get('sources')} absent {d.get('absent')}", file=out)  # fmt: skip
    for k, v in (d.get("readers") or {}).items():
        print(f"    {k}: {v}", file=out)
    j = summary.get("job", {})
    print(f"job: exit {j.get('exit')} rows {j.get('rows')} {j.get('names')}", file=out)
    print(f"  states {j.get('states')} start/end {j.get('with_start_end')}"
          f" gpu-timed {j.get('with_gpu_time')}", file=out)  # fmt: skip
    print(f"  meta collectives: {json.dumps(j.get('meta_collectives'))}", file=out)
    rp = summary.get("report", {})
    print(f"report: exit {rp.get('exit')} whole_run present: {rp.get('whole_run_present')}"
          f" (world size {rp.get('world_size')}: it needs 2+ ranks) warnings: {rp.get('warnings')}",
          file=out)  # fmt: skip
    g = summary.get("gpu_test", {})
    print(f"gpu test: exit {g.get('exit')}: {(g.get('tail') or '').strip()[-300:]}", file=out)
    verdict = {k: v.get("ok") for k, v in summary.items() if isinstance(v, dict)}
    print(f"VERDICT {verdict}", file=out)
    return out.getvalue()


WHEELS: str | None = None
CPU = "--cpu" in sys.argv  # a dry run on a machine without a GPU (gloo; the GPU test skips)


def main() -> int:
    global WHEELS
    OUT.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {}
    try:
        WHEELS = unpack_wheels()
        summary["wheels"] = {"ok": True, "path": WHEELS}
    except Exception as e:
        summary["wheels"] = {"ok": False, "error": repr(e)}
    summary["probe"] = part("probe", probe)
    summary["job"] = part("job", job)
    run_dir = summary["job"].get("run_dir")
    if run_dir:
        summary["report"] = part("report", report, run_dir)
    summary["gpu_test"] = part("gpu_test", gpu_test)
    (OUT / "summary.json").write_text(json.dumps(summary, indent=1, default=repr))
    text = compact(summary)
    (OUT / "summary.txt").write_text(text)
    print("\n===== summary =====\n" + text, flush=True)
    return 0 if all(v.get("ok") for v in summary.values() if isinstance(v, dict)) else 1


if __name__ == "__main__":
    sys.exit(main())
