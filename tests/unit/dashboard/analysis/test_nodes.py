"""The job's nodes: ranks grouped by node, a slow node named, many ranks said in few words."""

from __future__ import annotations

from rankscope.dashboard.analysis import wording
from rankscope.dashboard.analysis.nodes import job_nodes, nodes_result, slow_nodes
from rankscope.dashboard.analysis.results import Straggler
from rankscope.profiler.placement import nodes_of, placement


def straggler(rank: int, excess: float = 50.0, cause: str = "data_loading") -> Straggler:
    return Straggler(
        rank=rank,
        cause=cause,  # type: ignore[arg-type]
        severity="high",
        excess_ms_per_step=excess,
        caused_wait_ms_per_step=excess,
        cause_excess_ms_per_step=excess,
        last_arrivals=0,
        evidence="",
    )


def manifests(world: int, per_node: int) -> dict[int, dict[str, object]]:
    return {
        r: {
            "host": f"gpu-{r // per_node:03d}",
            "node_rank": r // per_node,
            "local_rank": r % per_node,
        }
        for r in range(world)
    }


def test_placement_reads_torchrun_then_slurm_then_the_hostname() -> None:
    torchrun = placement({"LOCAL_RANK": "3", "GROUP_RANK": "2", "SLURM_NODEID": "9"}, "h1")
    assert (torchrun.host, torchrun.node, torchrun.local_rank, torchrun.source) == (
        "h1",
        2,
        3,
        "torchrun",
    )
    slurm = placement({"SLURM_LOCALID": "1", "SLURM_NODEID": "5", "SLURM_PROCID": "41"}, "h2")
    assert (slurm.node, slurm.local_rank, slurm.source) == (5, 1, "slurm")
    bare = placement({"GROUP_RANK": "x"}, "h3")
    assert (bare.host, bare.node, bare.local_rank, bare.source) == ("h3", None, None, "hostname")


def test_run_json_nodes_group_ranks_by_node_index_else_by_host() -> None:
    assert nodes_of(manifests(4, 2)) == [
        {"node": 0, "host": "gpu-000", "ranks": [0, 1]},
        {"node": 1, "host": "gpu-001", "ranks": [2, 3]},
    ]
    by_host = nodes_of({0: {"host": "a"}, 1: {"host": "b"}, 2: {"host": "a"}})
    assert by_host == [
        {"node": 0, "host": "a", "ranks": [0, 2]},
        {"node": 1, "host": "b", "ranks": [1]},
    ]


def test_a_slow_node_is_named_with_its_host_and_ranks() -> None:
    result = nodes_result(manifests(32, 8), [], [straggler(r, 60.0) for r in range(24, 32)])
    assert result is not None and len(result.nodes) == 4
    (slow,) = result.slow
    assert (slow.node, slow.host, slow.slow_ranks, slow.scope) == (
        3,
        "gpu-003",
        list(range(24, 32)),
        "whole_run",
    )
    line = wording.slow_node_sentence(
        slow.node,
        slow.host,
        slow.ranks,
        slow.slow_ranks,
        slow.cause,
        slow.excess_ms_per_step,
        "over the whole run",
    )
    assert line.startswith("Node 3 (host gpu-003, ranks 24-31) is slow over the whole run: all 8")


def test_stragglers_spread_over_nodes_name_no_node() -> None:
    nodes = job_nodes(manifests(32, 8))
    spread = [straggler(r) for r in (3, 11, 19, 27)]  # one rank per node
    assert slow_nodes(nodes, spread, "window") == []
    one_host = job_nodes({r: {"host": "a"} for r in range(8)})
    assert slow_nodes(one_host, [straggler(r) for r in range(8)], "window") == []  # one node


def test_many_ranks_read_as_a_group() -> None:
    assert wording.rank_group([5]) == "rank 5"
    assert wording.rank_group([24, 25, 26, 27, 28, 29, 30, 31]) == "ranks 24-31"
    assert wording.rank_group([2, 3]) == "ranks 2, 3"
    assert wording.rank_group(list(range(3, 128, 4))) == "ranks 3, 7, 11, ... (32 ranks, every 4th)"
    assert wording.rank_group([0, 1, 2, 3, 8, 9, 10, 11, 40]) == "ranks 0-3, 8-11 and 40"
    many = [r for r in range(0, 1024, 8)] + [1]
    assert wording.rank_group(many).endswith("(129 ranks)")


def test_a_slow_node_among_1024_ranks() -> None:
    """128 nodes of 8 ranks; node 77's ranks are the stragglers, with two stray ranks elsewhere."""
    late = [straggler(r, 40.0) for r in range(616, 624)] + [straggler(5, 9.0), straggler(900, 8.0)]
    result = nodes_result(manifests(1024, 8), late, [])
    assert result is not None and len(result.nodes) == 128
    assert [(n.node, n.slow_ranks, n.scope) for n in result.slow] == [
        (77, list(range(616, 624)), "window")
    ]


def test_many_stragglers_alike_read_as_one_line() -> None:
    from rankscope.dashboard.render import straggler_lines

    lines = straggler_lines(
        [straggler(r, 30.0) for r in range(3, 128, 4)] + [straggler(0, 90.0, "host")]
    )
    assert lines[0] == (
        "Ranks 3, 7, 11, ... (32 ranks, every 4th) are late alike (data loading, persistent,"
        " ~30.0 ms/step more than the others)."
    )
    assert lines[1].startswith("Rank 0 is the straggler") and len(lines) == 2
