"""Where replicas added to a service of a cluster run go (``scaled_plan`` on a plan with nodes): pure."""

from __future__ import annotations

from pathlib import Path

import pytest

import supervisor as sv
from supervisor._errors import ConfigError
from supervisor._plan.gpu_assign import GpuNode
from supervisor._plan.plan import Plan, make_plan
from supervisor._plan.ports import PortAllocator
from supervisor._plan.replan import scaled_plan
from supervisor._spec.model import Cluster, GpuRequest, Placement
from supervisor._spec.model import SlurmCluster as SlurmSpec
from supervisor._spec.placement import ClusterNode

NODES = tuple(ClusterNode(f"n{i}", f"10.0.0.{i}") for i in range(1, 5))  #: other machines: ports from PortBook


def service(name: str, replicas: int = 1, **kwargs: object) -> sv.Service:
    return sv.Service(  # type: ignore[arg-type]
        name=name,
        command=["serve", "--host", "{host}", "--port", "{port}", "--rank", "{node_rank}/{nnodes}@{leader_host}"],
        ports=["port"],
        replicas=replicas,
        **kwargs,
    )


def planned(tmp_path: Path, *services: sv.Service) -> Plan:
    topology = sv.Topology(name="t", services=list(services), cluster=Cluster(slurm=SlurmSpec(nodes=4)))
    return make_plan(topology, runs_dir=tmp_path, nodes=NODES, check_executables=False)


def scale(plan: Plan, name: str, replicas: int, up: tuple[ClusterNode, ...] | None = None) -> Plan:
    ports = PortAllocator("127.0.0.1")
    return scaled_plan(plan, name, replicas, ports=ports, read_node=_no_gpu_node, up=up)


def _no_gpu_node() -> GpuNode:
    raise AssertionError("Slurm gives the GPUs of placed replicas: no local GPU node is read")


def where(plan: Plan, name: str) -> list[list[str]]:
    return [[n.name for n in r.placement.nodes] if r.placement else [] for r in plan.service(name).replicas]


def test_new_replicas_go_to_the_least_loaded_nodes_with_their_own_templates(tmp_path: Path) -> None:
    """etcd on n1, web on n2 (round-robin): web 1 -> 3 lands on the idle n3, n4; each new
    replica's command names its own node, the old one is untouched."""
    plan = planned(tmp_path, service("etcd"), service("web"))
    assert where(plan, "web") == [["n2"]]
    grown = scale(plan, "web", 3)
    assert where(grown, "web") == [["n2"], ["n3"], ["n4"]]
    replicas = grown.service("web").replicas
    assert replicas[0] == plan.service("web").replicas[0]
    for replica, address in zip(replicas[1:], ("10.0.0.3", "10.0.0.4"), strict=True):
        assert replica.host == address
        assert replica.argv[:3] == ("serve", "--host", address)
        assert replica.argv[-1] == f"0/1@{address}"
        assert replica.placement is not None and replica.placement.argvs == (replica.argv,)
    assert [r.name for r in replicas] == ["web", "web.1", "web.2"]


def test_nodes_that_are_down_are_never_chosen_and_ties_go_to_the_allocation_order(tmp_path: Path) -> None:
    """n3 is down: of n1 (etcd), n2 (web), n4 (idle), the first new replica takes n4, the next n1."""
    plan = planned(tmp_path, service("etcd"), service("web"))
    grown = scale(plan, "web", 3, up=(NODES[0], NODES[1], NODES[3]))
    assert where(grown, "web") == [["n2"], ["n4"], ["n1"]]


def test_ports_are_unique_per_node_address(tmp_path: Path) -> None:
    """Scaled far enough to come back to each node, every replica on a node has its own port there."""
    plan = planned(tmp_path, service("web"))
    grown = scale(plan, "web", 12)
    by_address: dict[str, list[int]] = {}
    for replica in grown.service("web").replicas:
        by_address.setdefault(replica.host, []).append(replica.port or 0)
    assert sorted(len(p) for p in by_address.values()) == [3, 3, 3, 3]
    assert all(len(set(ports)) == len(ports) for ports in by_address.values())


def test_a_multi_node_replica_takes_the_least_loaded_run_of_nodes(tmp_path: Path) -> None:
    """nodes: 2, one replica on n1, n2: the new one gets n3, n4, ranks and leader its own, GPUs per node."""
    engine = service("engine", placement=Placement(nodes=2), gpus=GpuRequest(count=2))
    plan = planned(tmp_path, engine)
    grown = scale(plan, "engine", 2)
    assert where(grown, "engine") == [["n1", "n2"], ["n3", "n4"]]
    new = grown.service("engine").replicas[1]
    assert new.placement is not None and new.placement.gpus_per_node == 2
    assert [argv[-1] for argv in new.placement.argvs] == ["0/2@10.0.0.3", "1/2@10.0.0.3"]
    assert new.placement.argvs[1][2] == "10.0.0.4"


def test_too_few_nodes_up_for_a_multi_node_replica_is_refused(tmp_path: Path) -> None:
    plan = planned(tmp_path, service("engine", placement=Placement(nodes=2)))
    with pytest.raises(ConfigError, match=r"engine.*needs 2 up nodes, 1 are up \(n4\)"):
        scale(plan, "engine", 2, up=(NODES[3],))


def test_a_pinned_service_stays_on_its_node_and_is_refused_when_that_node_is_down(tmp_path: Path) -> None:
    plan = planned(tmp_path, service("web", placement=Placement(node=2)))
    assert where(scale(plan, "web", 2), "web") == [["n3"], ["n3"]]
    with pytest.raises(ConfigError, match=r"web.*pinned node n3 is down"):
        scale(plan, "web", 2, up=(NODES[0], NODES[1], NODES[3]))


def test_a_local_service_of_a_cluster_run_scales_here(tmp_path: Path) -> None:
    plan = planned(tmp_path, service("proxy", placement=Placement(local=True)), service("web"))
    grown = scale(plan, "proxy", 2)
    assert where(grown, "proxy") == [[], []]
    assert grown.service("proxy").replicas[1].host == "127.0.0.1"
