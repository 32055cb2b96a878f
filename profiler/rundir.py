"""The run directory: the one place that knows its layout, for both sides.

A run directory holds what the collector wrote for every rank of one job::

    RUN/
      run.json                          run manifest (written by rank 0; RUN_SCHEMA)
      rank{R}.meta.json                 per-rank manifest (host, pid, devices, versions,
                                        clock offset, capture windows; RANK_SCHEMA)
      rank{R}.steps.jsonl               one line per training step {step, start_ns, end_ns, data_ns}
      rank{R}.collectives.jsonl         one line per collective, from PyTorch's flight recorder
      rank{R}.telemetry.jsonl           NVML/GPM (or host) samples, one JSON object a line
      rank{R}.step{A}-{B}.pt.trace.json.gz
                                        a torch.profiler window of steps A..B (Kineto JSON)
      rank{R}.log                       what went wrong inside the collector, if anything
      control/                          the attach channel (below)
        attach.request.json             the current capture request (``rankscope attach``)
        rank{R}.ack.json                rank R's answer to the latest request it saw
        rank{R}.heartbeat.json          rank R's liveness and step, rewritten about every second

Every per-rank file is written by that rank only, so ranks never race on a file;
``run.json`` is written by rank 0 alone. JSON files are replaced atomically
(write to a temporary name, then ``os.replace``), JSONL files are appended and
flushed. All timestamps are int64 nanoseconds of CLOCK_REALTIME.

What the collector (``rankscope.profiler.collector``) puts in these files:

- ``rank{R}.steps.jsonl`` and ``rank{R}.telemetry.jsonl`` start with one header line
  ``{"schema": STEPS_SCHEMA|TELEMETRY_SCHEMA, "rank": R[, "source", "period_ms", "run_id"]}``;
  ``read_steps``/``read_telemetry`` skip it (it has no step / ts_ns). Telemetry rows
  carry ``source`` ("nvml" | "host") and the fields in ``rankscope.profiler.telemetry``.
  A step row has ``data_ns`` (int): the time the training thread spent in the
  DataLoader iterator's ``__next__`` during that step (absent where that timer is off),
  ``cpu_ns`` (int): the training thread's CPU time in the step, and ``runq_ns`` (int): the
  time it was runnable but waiting for a CPU (``/proc/thread-self/schedstat``); each
  absent where unreadable and in files written before they existed.
- ``run_id`` (in ``run.json``, each ``rank{R}.meta.json`` and each JSONL header,
  where the launcher gave one: ``layout.RUN_ID_VARIABLES``): the job the file
  belongs to; readers leave out, and name, a file whose id is not run.json's,
  and a JSONL file or rank manifest whose ``rank`` is not the one its name gives.
- ``rank{R}.collectives.jsonl`` (a header line ``{"schema": COLLECTIVES_SCHEMA,
  "rank": R, "run_id": ...}`` since the run id; none before): one JSON object per collective
  this rank issued, as PyTorch's flight recorder saw it, appended every few
  seconds (``rankscope.profiler.collectives``)::

      {"seq": 12, "pg": "0", "pg_desc": "default_pg", "name": "all_reduce", "p2p": false,
       "bytes": 4000, "enqueue_ns": 1735732800000000000, "start_ns": null, "end_ns": null,
       "duration_ms": null, "state": "scheduled"}

  ``(pg, seq)`` identifies one instance across ranks (``seq`` counts collectives
  of the group, or point-to-point ops when ``p2p``). ``name`` is canonical
  (``all_reduce``, ``broadcast``, ``all_gather``, ``reduce_scatter``,
  ``all_to_all``, ``barrier``, ``send``, ``recv``, ... : the backend prefix such as
  ``gloo:`` is removed). ``bytes`` is input elements x dtype size (-1 unknown).
  ``enqueue_ns`` is when the rank issued it (CLOCK_REALTIME); ``start_ns`` /
  ``end_ns`` when the backend *noticed* it start / complete (NCCL's watchdog polls
  every ~100 ms: upper bounds, not GPU times; null with gloo), ``duration_ms`` the
  GPU time from its start to its end CUDA event (NCCL with
  ``TORCH_NCCL_ENABLE_TIMING=1``; else null); ``state`` is the recorder's
  ("scheduled", "started", "completed").
  gloo's sends and receives, which its flight recorder does not log, are timed
  by the collector itself (``rankscope.profiler.p2p``) and written with
  ``"p2p": true, "source": "collector"``, ``peer`` (the other rank) and
  ``wait_start_ns`` (when the training thread began to wait for it; ``end_ns``:
  when the wait returned); ``seq`` counts this rank's own sends and receives in
  the group. The meta record's ``p2p`` says how many were logged and dropped.
  Lines are in issue order per process group; ``read_collectives`` reads them.
  The collector writes each flight-recorder entry once (by its record id), so a
  line equal to an earlier one is a copy (a file appended to itself): readers
  keep the first and name the repeats.
- ``rank{R}.meta.json``: schema, rank, local_rank, world_size, host, node_rank
  (the node's index: torchrun's GROUP_RANK, Slurm's SLURM_NODEID; null when no
  launcher said it), placement_source ("torchrun" | "slurm" | "hostname"), pid,
  device_name ("cpu" without a GPU), torch/cuda/nccl/python versions, start_ns,
  end_ns, steps_recorded, steps_source ("manual" | "optimizer"), profile (the
  plan), telemetry_source, clock_offset_ns and clock_offset_method, windows,
  collectives (the flight-recorder log: ``sources``, the rings that gave entries,
  "nccl" and/or "fr"; ``readers``, per ring its dump function, entries in its
  last dump, rows written, rows with a GPU time, and ``error``; buffer_size,
  polls, written and dropped counts; ``absent``, why nothing was written: no
  buffer, no dump function, no process group, source failed: reason; only
  ``absent`` when the log is off).
  ``clock_offset_ns`` is this rank's clock minus rank 0's at the same instant:
  ``t_on_rank0_clock = t - clock_offset_ns``. Each window is
  ``{first_step, last_step, file, profiler_steps}``: the trace's ``ProfilerStep#N``
  ranges are collector step N. A window taken on request also has ``request`` (its
  id) and, when auto-capture asked for it, ``trigger`` (the request's, below).
- ``attempt`` (in ``run.json`` and each ``rank{R}.meta.json``): torchrun's restart
  count (``TORCHELASTIC_RESTART_COUNT``, 0 for the first attempt). When torchrun
  restarts the job, each rank of the new attempt first moves the files the attempt
  before left for it into ``attempt{K}/`` (K: the attempt they name), rank 0 also
  those of ranks past the new world size and a copy of ``run.json`` with
  ``"ended": "restarted"`` (``set_aside_attempt``): the run directory holds the
  latest attempt, and each ``attempt{K}/`` is a run directory of its own.
- ``run.json``: schema, world_size, start_ns, command, config; under
  ``rankscope run`` also ``exit_code``, ``end_ns`` and ``nodes`` (one
  ``{node, host, ranks}`` per node, from the rank manifests), added by the
  launcher after every rank has exited.

The control channel (``control/``) lets ``rankscope attach`` ask a running job
for a torch.profiler window. It needs no network, only the run directory, so it
works across hosts on a shared filesystem; every file in it is JSON replaced
atomically, and ranks never read a path out of a request (traces always go to
``trace_path``):

- ``attach.request.json`` (written by the attach command only; REQUEST_SCHEMA)::

      {"schema": "rankscope.attach-request/1", "id": "20250101T120000-1a2b3c",
       "command": "capture", "first_step": 120, "steps": 3,
       "created_ns": 1735732800000000000, "requested_by": "user@host pid 4242"}

  Every rank captures steps first_step..first_step+steps-1 (a warm-up step
  before them). ``id`` matches ``REQUEST_ID``; ``steps`` is 1..MAX_ATTACH_STEPS;
  ``requested_by`` is optional and informational; ``trigger`` is optional (what
  auto-capture writes, at most 1 KiB)::

      "trigger": {"kind": "slow_steps", "step": 340, "median_ms": 10.2,
                  "threshold_ms": 15.3, "recent_ms": [41.0, 40.8, 41.3]}

  (the slow steps ended at ``step``; ``recent_ms`` are their times, ``median_ms``
  the median of the steps before). Any other field makes the request invalid.
  A rank ignores (and logs to ``rank{R}.log``) a request that is malformed, a
  symlink, larger than MAX_REQUEST_BYTES, older than its collector, or whose
  first step it has already begun; one request at a time runs per rank, and a
  new one while a window is pending or running is refused.
- ``rank{R}.ack.json`` (written by rank R; ACK_SCHEMA)::

      {"schema": "rankscope.attach-ack/1", "rank": 0, "id": "...", "state": "done",
       "first_step": 120, "last_step": 122, "ts_ns": ...,
       "file": "rank0.step120-122.pt.trace.json.gz", "history": [...]}

  ``state`` is one of ACK_STATES: "accepted" (queued for first_step), "started"
  (the profiler is on), "done" (``file`` written, relative to the run
  directory; last_step may be earlier if the job stopped inside the window),
  "refused" or "failed" (``reason`` says why). ``history`` keeps the last
  finished answers (oldest first), so several attaches in a row stay visible.
- ``rank{R}.heartbeat.json`` (written by rank R's recorder thread about every
  second; HEARTBEAT_SCHEMA): rank, world_size, host, pid, start_ns, ts_ns,
  step (the step now running), steps_per_s (recent rate, null until known),
  state ("running" | "capturing" | "stopped"). A heartbeat older than a few
  seconds, or a "stopped" one, means the rank no longer runs.

Finding runs (``find_runs``, ``find_run``), so the report and the dashboard accept
the same paths: a run directory, a trace folder, a trace file, or a folder holding runs.

This module is the layout's documentation and its public names; the code lives
in one module per job, all re-exported here: ``layout`` (file names, format
versions, bounds, paths, atomic writes), ``records`` (one msgspec Struct per
record: the format, used by writers and readers), ``readers`` (decode =
validate) and ``discovery`` (``find_runs``).

Bounds on numbers read from these files (a number read from disk never sizes an
allocation unchecked): a rank is 0..MAX_WORLD_SIZE-1 and a world size
1..MAX_WORLD_SIZE (2^20); a step is 0..MAX_STEP (2^53); a ``*_ns`` timestamp is a
non-negative int64. These bounds are the ``records`` Structs' constraints:
readers skip a record (or drop an optional field) that fails them, and say so
(``read_run_manifest`` under ``problems``, the JSONL readers in ``bad``). Every
reader opens files through ``rankscope.profiler.safeio``: regular files only,
never blocking, bounded reads. Every file is strict JSON (NaN is written as null).

These modules import only the standard library and msgspec: they run inside training jobs.
"""

from __future__ import annotations

from rankscope.profiler.discovery import (
    RUN_SEARCH_DEPTH,
    RUN_SEARCH_MAX_DIRS,
    FoundRun,
    find_run,
    find_runs,
)
from rankscope.profiler.layout import (
    ACK_SCHEMA,
    ACK_STATES,
    ATTEMPT_DIR_RE,
    CAPTURE_PHASES,
    COLLECTIVES_SCHEMA,
    CONTROL_DIR,
    HEARTBEAT_SCHEMA,
    INT64_MAX,
    MAX_ATTACH_LEAD_STEPS,
    MAX_ATTACH_STEPS,
    MAX_REQUEST_BYTES,
    MAX_STEP,
    MAX_WORLD_SIZE,
    RANK_SCHEMA,
    REQUEST_FILE,
    REQUEST_ID,
    REQUEST_SCHEMA,
    RUN_ID_VARIABLES,
    RUN_MANIFEST,
    RUN_SCHEMA,
    STEPS_SCHEMA,
    TELEMETRY_SCHEMA,
    TRACE_SUFFIXES,
    ack_path,
    attempt_dir,
    attempt_dirs,
    collectives_path,
    control_dir,
    control_dir_problem,
    encode_json,
    heartbeat_path,
    is_run_dir,
    is_run_input_name,
    is_trace_file,
    log_path,
    rank_from_filename,
    rank_meta_path,
    request_path,
    restart_count,
    run_id_from_env,
    set_aside_attempt,
    steps_path,
    telemetry_path,
    trace_path,
    write_json_atomic,
)
from rankscope.profiler.readers import (
    CaptureWindow,
    capture_windows,
    clean_sample,
    header_problem,
    heartbeat_problem,
    iter_jsonl,
    iter_records,
    other_rank,
    other_run,
    ranks_with_files,
    read_acks,
    read_collectives,
    read_heartbeats,
    read_json,
    read_request,
    read_run_manifest,
    read_samples,
    read_step_records,
    read_steps,
    read_telemetry,
    valid_ns,
    valid_rank,
    valid_world_size,
)

__all__ = [
    "ACK_SCHEMA",
    "ACK_STATES",
    "ATTEMPT_DIR_RE",
    "CAPTURE_PHASES",
    "COLLECTIVES_SCHEMA",
    "CONTROL_DIR",
    "HEARTBEAT_SCHEMA",
    "INT64_MAX",
    "MAX_ATTACH_LEAD_STEPS",
    "MAX_ATTACH_STEPS",
    "MAX_REQUEST_BYTES",
    "MAX_STEP",
    "MAX_WORLD_SIZE",
    "RANK_SCHEMA",
    "REQUEST_FILE",
    "REQUEST_ID",
    "REQUEST_SCHEMA",
    "RUN_ID_VARIABLES",
    "RUN_MANIFEST",
    "RUN_SCHEMA",
    "RUN_SEARCH_DEPTH",
    "RUN_SEARCH_MAX_DIRS",
    "STEPS_SCHEMA",
    "TELEMETRY_SCHEMA",
    "TRACE_SUFFIXES",
    "CaptureWindow",
    "FoundRun",
    "ack_path",
    "attempt_dir",
    "attempt_dirs",
    "capture_windows",
    "clean_sample",
    "collectives_path",
    "control_dir",
    "control_dir_problem",
    "encode_json",
    "find_run",
    "find_runs",
    "header_problem",
    "heartbeat_path",
    "heartbeat_problem",
    "is_run_dir",
    "is_run_input_name",
    "is_trace_file",
    "iter_jsonl",
    "iter_records",
    "log_path",
    "other_rank",
    "other_run",
    "rank_from_filename",
    "rank_meta_path",
    "ranks_with_files",
    "read_acks",
    "read_collectives",
    "read_heartbeats",
    "read_json",
    "read_request",
    "read_run_manifest",
    "read_samples",
    "read_step_records",
    "read_steps",
    "read_telemetry",
    "request_path",
    "restart_count",
    "run_id_from_env",
    "set_aside_attempt",
    "steps_path",
    "telemetry_path",
    "trace_path",
    "valid_ns",
    "valid_rank",
    "valid_world_size",
    "write_json_atomic",
]
