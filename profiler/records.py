"""Every record the collector writes into a run directory: one msgspec Struct each.

Writers build these Structs and encode them (``encode_line`` for JSONL rows,
``layout.write_json_atomic`` for JSON files); readers decode with ``decode``, so
the bounds (``layout.MAX_WORLD_SIZE``, ``MAX_STEP``, int64 nanoseconds) are
checked in the decode, never by hand. ``decode`` raises ``BadRecord`` naming the
first bad field (``"ts_ns is not an int64 of nanoseconds"``), never another
exception. The format version of each file is the ``layout.*_SCHEMA`` string in
its header line or ``schema`` field.

Compatibility: field names never change, fields are only added (with a default,
so old files still decode). Adding a field is one line in its Struct. Unknown
fields are ignored when decoding, so files of newer collectors stay readable.
Files written before this module used ``json.dumps`` and may hold ``NaN``
(telemetry): ``decode`` falls back to the standard parser for those lines and
treats a non-finite number like any other bad value.
"""

from __future__ import annotations

import json
import math
import re
import typing
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta, Struct

from rankscope.profiler.layout import (
    ACK_SCHEMA,
    HEARTBEAT_SCHEMA,
    INT64_MAX,
    MAX_STEP,
    MAX_WORLD_SIZE,
    RANK_SCHEMA,
    RUN_SCHEMA,
)

# --- bounded types: the description is what a warning says a bad value is not ---

Rank = Annotated[
    int, Meta(ge=0, lt=MAX_WORLD_SIZE, description=f"an integer in 0..{MAX_WORLD_SIZE - 1}")
]
WorldSize = Annotated[
    int, Meta(ge=1, le=MAX_WORLD_SIZE, description=f"an integer in 1..{MAX_WORLD_SIZE}")
]
Step = Annotated[int, Meta(ge=0, le=MAX_STEP, description=f"an integer in 0..{MAX_STEP}")]
Ns = Annotated[int, Meta(ge=0, le=INT64_MAX, description="an int64 of nanoseconds")]
# What a profiler window did during a step, in the order a window goes through them
# (``layout.CAPTURE_PHASES``).
CapturePhase = Literal["start", "window", "stop", "export"]
Int64 = Annotated[int, Meta(ge=-INT64_MAX, le=INT64_MAX, description="an int64")]
Finite = Annotated[
    float, Meta(ge=-1.7976931348623157e308, le=1.7976931348623157e308, description="finite")
]
Number = Int64 | Finite
Rate = Annotated[float, Meta(ge=0, le=1e18, description="a finite number")]
Pid = Annotated[int, Meta(description="an integer")]
ShortStr = Annotated[str, Meta(max_length=256, description="a short string")]
Bytes = Annotated[int, Meta(ge=-1, le=INT64_MAX, description="an int64 (-1 unknown)")]
AckState = Literal["accepted", "started", "done", "refused", "failed", "cancelled"]


class BadRecord(ValueError):
    """A record that failed its Struct; ``field`` names the bad field ("" for the record)."""

    def __init__(self, reason: str, field: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


# --- JSONL rows -----------------------------------------------------------------


class Header(Struct, omit_defaults=True):
    """First line of ``rank{R}.steps.jsonl`` / ``rank{R}.telemetry.jsonl``."""

    schema: str
    rank: Rank
    source: str | None = None
    period_ms: int | None = None
    # The run that wrote the file (``layout.run_id_from_env``): a reader names a file
    # whose id differs from run.json's, and leaves it out of the analysis.
    run_id: str | None = None


class StepRecord(Struct, omit_defaults=True):
    """One finished training step of one rank (``rank{R}.steps.jsonl``)."""

    step: Step
    start_ns: Ns
    end_ns: Ns
    # Time in the DataLoader iterator's __next__ during the step (absent: timer off).
    data_ns: Ns | None = None
    # The training thread's CPU time in the step and its wait on a run queue
    # (/proc/thread-self/schedstat; absent where unreadable: ``cputime``).
    cpu_ns: Ns | None = None
    runq_ns: Ns | None = None
    # Which phase of rankscope's own profiler window touched the step (absent: none;
    # ``layout.CAPTURE_PHASES``): the whole-run verdict leaves start/stop/export out.
    capture: CapturePhase | None = None

    def __post_init__(self) -> None:
        if self.end_ns < self.start_ns:
            raise ValueError("end_ns is before start_ns")


class CollectiveRecord(Struct, omit_defaults=True):
    """One collective as PyTorch's flight recorder saw it (``rank{R}.collectives.jsonl``)."""

    seq: Step
    pg: str
    pg_desc: str
    name: str
    p2p: bool
    bytes: Bytes
    enqueue_ns: Ns
    start_ns: Ns | None
    end_ns: Ns | None
    duration_ms: Finite | None
    state: str
    # Rows the collector timed itself (``rankscope.profiler.p2p``: gloo's sends and
    # receives, which its flight recorder does not log): ``source`` is "collector",
    # ``peer`` the other rank, ``wait_start_ns`` when the training thread began to wait
    # for it (until ``end_ns``). Absent in flight-recorder rows.
    source: str | None = None
    peer: Rank | None = None
    wait_start_ns: Ns | None = None


class TelemetrySample(Struct, omit_defaults=True):
    """The known fields of one telemetry row (``rank{R}.telemetry.jsonl``).

    Telemetry is open: a row holds the metrics its sampler could read
    (``rankscope.profiler.telemetry``); any other finite number or string is kept as is.
    """

    ts_ns: Ns
    source: str | None = None
    gpu_util_pct: Number | None = None
    mem_util_pct: Number | None = None
    mem_used_b: Number | None = None
    mem_total_b: Number | None = None
    power_mw: Number | None = None
    sm_clock_mhz: Number | None = None
    mem_clock_mhz: Number | None = None
    temp_c: Number | None = None
    pcie_tx_kbs: Number | None = None
    pcie_rx_kbs: Number | None = None
    throttle_reasons: Number | None = None
    nvlink_tx_kbs: Number | None = None
    nvlink_rx_kbs: Number | None = None
    gpm_sm_activity_pct: Number | None = None
    gpm_sm_occupancy_pct: Number | None = None
    gpm_tensor_activity_pct: Number | None = None
    gpm_dram_bw_pct: Number | None = None
    host_cpu_pct: Number | None = None
    rss_b: Number | None = None
    proc_sm_util_pct: Number | None = None
    proc_mem_util_pct: Number | None = None
    proc_mem_used_b: Number | None = None
    cuda_alloc_b: Number | None = None
    cuda_alloc_peak_b: Number | None = None
    cuda_reserved_b: Number | None = None
    cuda_reserved_peak_b: Number | None = None


# --- JSON files -----------------------------------------------------------------


class CaptureWindowRecord(Struct, omit_defaults=True):
    """One profiler window in ``rank{R}.meta.json``'s ``windows``."""

    first_step: Step
    last_step: Step
    file: str
    profiler_steps: Any = None
    request: str | None = None
    trigger: dict[str, Any] | None = None


class RankMeta(Struct, omit_defaults=True):
    """The checked part of ``rank{R}.meta.json`` (the rest is informational, kept as written)."""

    rank: Rank
    schema: str = RANK_SCHEMA
    run_id: ShortStr | None = None
    world_size: WorldSize | None = None
    local_rank: Rank | None = None
    start_ns: Ns | None = None
    end_ns: Ns | None = None
    # Where the rank ran (``rankscope.profiler.placement``): the machine's name and
    # the node's index among the job's nodes (torchrun's GROUP_RANK, Slurm's SLURM_NODEID).
    host: ShortStr | None = None
    node_rank: Rank | None = None


class NodeRecord(Struct):
    """One node in ``run.json``'s ``nodes``: its index, its host and the ranks it ran."""

    node: Rank
    host: ShortStr
    ranks: list[Rank]


class RunManifest(Struct, omit_defaults=True):
    """The checked part of ``run.json`` (the rest is informational, kept as written)."""

    schema: str = RUN_SCHEMA
    world_size: WorldSize | None = None
    start_ns: Ns | None = None
    end_ns: Ns | None = None
    exit_code: int | None = None
    run_id: ShortStr | None = None
    # Added by ``rankscope run`` after the job: every rank's node (``placement.nodes_of``).
    nodes: list[NodeRecord] | None = None


class Heartbeat(Struct):
    """``control/rank{R}.heartbeat.json``: a rank's liveness and step, about every second."""

    rank: Rank
    ts_ns: Ns
    schema: str = HEARTBEAT_SCHEMA
    world_size: WorldSize | None = None
    host: ShortStr | None = None
    pid: Pid | None = None
    start_ns: Ns | None = None
    step: Step = 0
    steps_per_s: Rate | None = None
    state: ShortStr | None = None


class Answer(Struct):
    """One state of one attach request, as a rank answered it."""

    id: str
    state: AckState
    first_step: Step | None = None
    last_step: Step | None = None
    ts_ns: Ns | None = None
    file: str | None = None
    reason: str | None = None


class Ack(Answer, kw_only=True):
    """``control/rank{R}.ack.json``: the latest answer and the last finished ones."""

    rank: Rank
    schema: str = ACK_SCHEMA
    history: list[Any] = []


# --- encode and decode ------------------------------------------------------------

T = TypeVar("T", bound=Struct)

_encoder = msgspec.json.Encoder(enc_hook=str)
_AT_FIELD = re.compile(r" - at `\$\.([A-Za-z0-9_]+)")
_MISSING = re.compile(r"^Object missing required field `([A-Za-z0-9_]+)`")
_descriptions: dict[type, dict[str, str]] = {}


def encode_line(record: Any) -> bytes:
    """One JSONL row (a Struct or plain JSON values): strict JSON, NaN/inf as null."""
    return _encoder.encode(record) + b"\n"


def _description(cls: type, field: str) -> str:
    if cls not in _descriptions:
        found: dict[str, str] = {}
        for name, hint in typing.get_type_hints(cls, include_extras=True).items():
            for part in (hint, *typing.get_args(hint)):
                meta = [m for m in getattr(part, "__metadata__", ()) if isinstance(m, Meta)]
                if meta and meta[0].description:
                    found[name] = meta[0].description
                    break
        _descriptions[cls] = found
    return _descriptions[cls].get(field, "valid")


def _bad(cls: type, error: msgspec.ValidationError) -> BadRecord:
    message = str(error)
    m = _MISSING.search(message)
    if m is not None:
        return BadRecord(f"{m.group(1)} is missing", m.group(1))
    m = _AT_FIELD.search(message)
    if m is None:
        return BadRecord(message.split(" - at ")[0][:200])
    field = m.group(1)
    return BadRecord(f"{field} is not {_description(cls, field)}", field)


def _finite_only(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_only(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_only(v) for v in value]
    return value


def parse(raw: bytes | str) -> Any:
    """JSON values of one line or file; ``BadRecord`` if it is not JSON.

    Strict JSON first (what every writer now produces); the standard parser for
    older lines holding NaN or infinities, which become None.
    """
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        pass
    except RecursionError:
        raise BadRecord("not valid JSON (nested too deeply)") from None
    try:
        return _finite_only(json.loads(raw))
    except (ValueError, RecursionError, TypeError):
        raise BadRecord("not valid JSON") from None


def convert(
    obj: Any,
    cls: type[T],
    *,
    optional: tuple[str, ...] = (),
    dropped: list[BadRecord] | None = None,
) -> T:
    """``obj`` (decoded JSON values) as a ``cls``; ``BadRecord`` naming the bad field.

    A bad value in one of the ``optional`` fields is dropped instead (the record
    stays), as the readers have always done for ``data_ns`` and telemetry metrics;
    the reason for each is added to ``dropped``.
    """
    if not isinstance(obj, dict):
        raise BadRecord(f"not a JSON object but {type(obj).__name__}")
    for _ in range(len(optional) + 1):
        try:
            return msgspec.convert(obj, cls)
        except msgspec.ValidationError as e:
            bad = _bad(cls, e)
            if bad.field not in optional or bad.field not in obj:
                raise bad from None
            if dropped is not None:
                dropped.append(bad)
            obj = {k: v for k, v in obj.items() if k != bad.field}
    raise BadRecord("too many bad fields")  # pragma: no cover - each pass drops one


def decode(raw: bytes | str, cls: type[T], *, optional: tuple[str, ...] = ()) -> T:
    """One JSON line or file as a ``cls`` (see ``convert``)."""
    return convert(parse(raw), cls, optional=optional)


def as_dict(record: Struct) -> dict[str, Any]:
    """A record as the plain dict the readers return (defaults left out)."""
    out: dict[str, Any] = msgspec.to_builtins(record)
    return out


TELEMETRY_METRICS = tuple(f for f in TelemetrySample.__struct_fields__ if f != "ts_ns")
