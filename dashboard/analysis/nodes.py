"""The job's nodes: which rank ran where, and a slow node named as a node.

Input: each rank's manifest (``rank{R}.meta.json``: ``host``, ``node_rank``,
``local_rank``; ``rankscope.profiler.placement``) and the stragglers a verdict
named. ``job_nodes`` groups the ranks into ``Node``s: by ``node_rank`` where the
launcher said it (torchrun's GROUP_RANK, Slurm's SLURM_NODEID), else by host;
ranks whose manifest names neither are left out. ``slow_nodes`` names a node as
slow when the job spans two nodes or more and at least half of a node's ranks
(two at least) are among the stragglers: many ranks of one machine late
together is the machine (a throttled GPU, a noisy neighbour, a bad link), not
the code. ``nodes_result`` gathers both into the ``NodesResult`` the report
carries (``Report.nodes``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from rankscope.dashboard.analysis.results import Straggler

# Which verdict named the stragglers: the trace window's or the light layer's whole run.
NodeScope = Literal["window", "whole_run"]


@dataclass(frozen=True)
class Node:
    """One machine of the job: its index, its host name and the ranks it ran."""

    node: int
    host: str
    ranks: list[int]


@dataclass(frozen=True)
class SlowNode:
    """A node whose ranks are the stragglers of one verdict."""

    node: int
    host: str
    ranks: list[int]  # every rank of the node
    slow_ranks: list[int]  # those the verdict named
    scope: NodeScope
    cause: str  # the most common cause among its stragglers
    excess_ms_per_step: float  # the median excess of its stragglers


@dataclass(frozen=True)
class NodesResult:
    """The job's nodes (``nodes``) and the slow ones, worst first."""

    nodes: list[Node]
    slow: list[SlowNode] = field(default_factory=list)


def job_nodes(manifests: Mapping[int, Mapping[str, Any]]) -> list[Node]:
    """The ranks grouped by node (module docstring), in node order."""
    groups: dict[tuple[int, str], list[int]] = {}
    hosts: dict[tuple[int, str], str] = {}
    for rank, meta in sorted(manifests.items()):
        host = meta.get("host")
        node = meta.get("node_rank")
        if isinstance(node, int) and not isinstance(node, bool) and node >= 0:
            key = (node, "")
        elif isinstance(host, str) and host:
            key = (-1, host)
        else:
            continue
        groups.setdefault(key, []).append(rank)
        hosts.setdefault(key, host if isinstance(host, str) and host else "?")
    used = {k[0] for k in groups if k[0] >= 0}
    spare = (i for i in range(len(groups) + len(used) + 1) if i not in used)
    out = []
    for key, members in sorted(groups.items(), key=lambda kv: kv[1][0]):
        out.append(Node(key[0] if key[0] >= 0 else next(spare), hosts[key], members))
    return sorted(out, key=lambda n: n.node)


def slow_nodes(
    nodes: Sequence[Node], stragglers: Sequence[Straggler], scope: NodeScope
) -> list[SlowNode]:
    """The nodes at least half of whose ranks (two at least) are ``stragglers``, worst first."""
    if len(nodes) < 2:
        return []
    by_rank = {s.rank: s for s in stragglers}
    out = []
    for n in nodes:
        late = [by_rank[r] for r in n.ranks if r in by_rank]
        if len(late) < 2 or 2 * len(late) < len(n.ranks):
            continue
        excess = sorted(s.excess_ms_per_step for s in late)
        cause = Counter(s.cause for s in late).most_common(1)[0][0]
        out.append(
            SlowNode(
                node=n.node,
                host=n.host,
                ranks=list(n.ranks),
                slow_ranks=[s.rank for s in late],
                scope=scope,
                cause=cause,
                excess_ms_per_step=round(excess[len(excess) // 2], 3),
            )
        )
    return sorted(out, key=lambda s: -s.excess_ms_per_step * len(s.slow_ranks))


def nodes_result(
    manifests: Mapping[int, Mapping[str, Any]],
    window: Sequence[Straggler],
    whole_run: Sequence[Straggler],
) -> NodesResult | None:
    """The job's nodes and the slow ones of each verdict; None when no rank said its host."""
    nodes = job_nodes(manifests)
    if not nodes:
        return None
    slow = slow_nodes(nodes, window, "window")
    named = {s.node for s in slow}
    slow += [s for s in slow_nodes(nodes, whole_run, "whole_run") if s.node not in named]
    return NodesResult(nodes=nodes, slow=slow)
