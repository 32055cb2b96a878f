"""Kineto (torch.profiler) JSON to columnar tables, one ``RankTrace`` per file.

``parse_trace(path)`` reads a ``.json`` or ``.json.gz`` trace with msgspec (typed,
skipping ``args`` keys it does not use) and returns five Tables plus metadata.
Every timestamp is int64 nanoseconds on the trace's own clock (Kineto
microseconds + ``baseTimeNanoseconds`` when the trace has it, which makes them
CLOCK_REALTIME), every duration int64 ns.

``gpu``      (each a ``Table``) one row per GPU activity: ts, dur, name, kind (kernel | memcpy |
             memset | sync), stream, device, correlation, external_id, bytes,
             blocks_per_sm, occupancy_pct (Kineto's "est. achieved occupancy %",
             NaN when absent), is_comm (an NCCL/RCCL kernel).
``cpu``      one row per host range: ts, dur, name, cat (cpu_op,
             user_annotation, cuda_runtime, cuda_driver, python_function, ...),
             tid, correlation, external_id.
``gpu_ann``  gpu_user_annotation ranges: ts, dur, name, stream.
``comms``    one row per collective on this rank: ts, launch_ts (when the host
             issued it: the kernel launch for NCCL), dur, name (canonical,
             e.g. all_reduce), raw_name, pg, seq (-1 when unknown), bytes
             (-1 when unknown), source (gpu: an NCCL kernel; cpu: a gloo:* /
             nccl:* host range).
``memory``   one row per ``[memory]`` instant (traces recorded with
             ``profile_memory=True``; empty otherwise), in time order: ts,
             device_type (0 CPU, 1 CUDA), device_id (-1 on the CPU), allocated
             and reserved (the allocator's totals in bytes after the event;
             reserved is 0 on the CPU, -1 when absent), bytes (the event's
             own change: negative for a free).
``meta``     rank, world_size, backend, device_name, base_time_ns, trace_name,
             has_gpu, pg_ranks (process group name -> global ranks),
             device_memory (GPU id as a string -> its memory in bytes, from
             ``deviceProperties``' ``totalGlobalMem``).

The raw event dicts are dropped as soon as their columns are built. The work is
split by job: ``stream`` (the traceEvents array in byte batches), ``events``
(JSON -> typed events), ``columns`` (events -> numpy columns), ``collectives``
(the comms table), ``times`` (µs -> int64 ns), ``trace`` (one file end to end).
"""

from rankscope.dashboard.ingest.kineto.collectives import NCCL_KERNEL_RE, canonical_collective
from rankscope.dashboard.ingest.kineto.columns import GPU_KINDS
from rankscope.dashboard.ingest.kineto.events import load_trace_doc
from rankscope.dashboard.ingest.kineto.trace import (
    RankTrace,
    empty_trace,
    parse_trace,
    tables_from_doc,
)

__all__ = [
    "GPU_KINDS",
    "NCCL_KERNEL_RE",
    "RankTrace",
    "canonical_collective",
    "empty_trace",
    "load_trace_doc",
    "parse_trace",
    "tables_from_doc",
]
