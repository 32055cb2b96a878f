"""Where a rank runs: its host, its node index and its rank on that node.

``placement(env, hostname)`` reads what the launcher set, first that of torchrun
(``LOCAL_RANK``, ``GROUP_RANK``: the node's index among the job's nodes), then
Slurm's (``SLURM_LOCALID``, ``SLURM_NODEID``; ``srun`` sets them in every task),
and returns a ``Placement``: ``host`` (the machine's name), ``node`` (the node
index; None when no launcher said it: the review side then groups ranks by
host), ``local_rank`` (None when unknown) and ``source`` ("torchrun", "slurm"
or "hostname"). Values that are not non-negative integers are ignored. Each
rank writes it into its manifest (``rank{R}.meta.json``: ``host``,
``node_rank``, ``local_rank``, ``placement_source``); ``rankscope run`` gathers
the ranks' into ``run.json``'s ``nodes`` (``nodes_of``). ``rank_and_world(env)``
is a rank's number and the job's size by the same launchers' variables (torchrun's
``RANK``/``WORLD_SIZE``, Slurm's ``SLURM_PROCID``/``SLURM_STEP_NUM_TASKS``), for a
collector that starts before torch.distributed is initialised.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Launcher variables, most specific first: (local rank, node index, source).
_LAUNCHERS = (
    ("LOCAL_RANK", "GROUP_RANK", "torchrun"),
    ("SLURM_LOCALID", "SLURM_NODEID", "slurm"),
)


@dataclass(frozen=True)
class Placement:
    host: str
    node: int | None
    local_rank: int | None
    source: str


def _int(env: Mapping[str, str], name: str) -> int | None:
    text = env.get(name, "").strip()
    return int(text) if text.isdigit() and len(text) < 10 else None


def placement(env: Mapping[str, str], hostname: str | None = None) -> Placement:
    """This process's place in the job, from the launcher's variables (module docstring)."""
    host = (hostname if hostname is not None else socket.gethostname())[:256]
    local: int | None = None
    for local_name, node_name, source in _LAUNCHERS:
        local = _int(env, local_name) if local is None else local
        node = _int(env, node_name)
        if node is not None:
            return Placement(host, node, local, source)
    return Placement(host, None, local, "hostname")


def rank_and_world(env: Mapping[str, str]) -> tuple[int, int]:
    """(rank, world size) from the launcher, for a process without a process group yet.

    torchrun's ``RANK``/``WORLD_SIZE`` first, then Slurm's: ``SLURM_PROCID`` and the
    step's task count (``SLURM_STEP_NUM_TASKS``, which ``srun`` sets in every task;
    else the job's ``SLURM_NTASKS``), else 0/1. One launcher's pair is used whole,
    never a rank from one and a world size from the other; a Slurm rank outside its
    task count is ignored.
    """
    rank, world = _int(env, "RANK"), _int(env, "WORLD_SIZE")
    if rank is not None or world is not None:
        return rank or 0, world or 1
    rank = _int(env, "SLURM_PROCID")
    world = _int(env, "SLURM_STEP_NUM_TASKS") or _int(env, "SLURM_NTASKS")
    if rank is not None and world is not None and rank < world:
        return rank, world
    return 0, 1


def nodes_of(ranks: Mapping[int, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``run.json``'s ``nodes``: one ``{node, host, ranks}`` per node, from the rank manifests.

    A node is its index where the ranks recorded one (``node_rank``), else its host;
    nodes are numbered in order of their first rank when no index was recorded.
    Ranks without a host are left out.
    """
    groups: dict[tuple[int, str], list[int]] = {}
    hosts: dict[tuple[int, str], str] = {}
    for rank, meta in sorted(ranks.items()):
        host = meta.get("host")
        if not isinstance(host, str):
            continue
        node = meta.get("node_rank")
        key = (node, "") if isinstance(node, int) and node >= 0 else (-1, host)
        groups.setdefault(key, []).append(rank)
        hosts.setdefault(key, host)
    out = []
    used = {k[0] for k in groups if k[0] >= 0}
    spare = (i for i in range(len(groups) + len(used)) if i not in used)
    for key, members in sorted(groups.items(), key=lambda kv: kv[1][0]):
        node = key[0] if key[0] >= 0 else next(spare)
        out.append({"node": node, "host": hosts[key], "ranks": members})
    return sorted(out, key=_node_key)


def _node_key(entry: Mapping[str, Any]) -> int:
    return int(entry["node"])
