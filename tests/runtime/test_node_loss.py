"""Where a replica goes when a node of its placement is lost: pure, no cluster needed."""

from __future__ import annotations

import pytest

from supervisor import ServiceFailed
from supervisor._runtime.node_loss import moved_placement
from supervisor._spec.placement import ClusterNode, ReplicaPlacement

NODES = tuple(ClusterNode(f"n{i}", f"10.0.0.{i}") for i in range(1, 5))


def placement(*indices: int) -> ReplicaPlacement:
    nodes = tuple(NODES[i] for i in indices)
    return ReplicaPlacement(nodes, tuple(("serve", "--rank", str(r)) for r in range(len(nodes))), gpus_per_node=2)


def test_nothing_lost_nothing_moved() -> None:
    assert moved_placement("web", "7", placement(0, 1), NODES, {}) is None


def test_a_lost_node_is_replaced_in_its_rank_by_the_least_loaded_node_that_is_up() -> None:
    """n2 (rank 1) lost; n3 runs two of our replicas, n4 none: n4 takes rank 1; rank 0 stays; the
    commands are left to be planned again (templates such as {host} change)."""
    live = (NODES[0], NODES[2], NODES[3])
    moved = moved_placement("engine", "7", placement(0, 1), live, {"n3": 2, "n1": 1})
    assert moved is not None
    assert [n.name for n in moved.nodes] == ["n1", "n4"]
    assert moved.gpus_per_node == 2 and moved.argvs == ()


def test_ties_go_to_the_allocation_order() -> None:
    moved = moved_placement("web", "7", placement(1), (NODES[0], NODES[2], NODES[3]), {"n1": 1})
    assert moved is not None and [n.name for n in moved.nodes] == ["n3"]


def test_no_node_left_to_take_its_place_names_the_lost_node() -> None:
    with pytest.raises(ServiceFailed, match=r"engine: node n2 went down \(it left Slurm job 7\).*1 left: n1"):
        moved_placement("engine", "7", placement(0, 1), (NODES[0],), {})
