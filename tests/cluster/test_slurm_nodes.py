"""A node that goes down on the real test cluster: its replicas restart on a node that is up, or the run
fails with a message naming the node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import supervisor as sv
from supervisor._events import EndpointsChanged, Ready
from supervisor._host.slurm_alloc import SlurmAllocation, job_nodelist
from supervisor._runtime.runner import launch_prepared
from supervisor._spec.model import Placement

from ..helpers import wait_for, wait_until
from ..host.test_slurm_launcher import planned, records, task_service
from ..slurm import SlurmCluster, held_allocation

pytestmark = [pytest.mark.anyio, pytest.mark.slurm]

RESTART = sv.RestartPolicy(policy="on-failure", backoff=sv.Backoff(0.05))


@pytest.fixture
def four_nodes(slurm: SlurmCluster) -> Iterator[SlurmAllocation]:
    with held_allocation(4, "node-loss-test") as job:
        yield job


@pytest.fixture
def two_nodes(slurm: SlurmCluster) -> Iterator[SlurmAllocation]:
    with held_allocation(2, "node-loss-test") as job:
        yield job


def node_down(slurm: SlurmCluster, node: str) -> None:
    slurm.command("scontrol", "update", f"NodeName={node}", "State=DOWN", "Reason=node-loss-test")


def ready_count(name: str) -> object:
    return lambda events: sum(isinstance(e, Ready) and e.replica == name for e in events)


async def test_a_replica_on_a_node_that_went_down_restarts_on_a_node_that_is_up(
    runs_dir: Path, tmp_path: Path, four_nodes: SlurmAllocation, slurm: SlurmCluster
) -> None:
    """web.0 on n1, web.1 on n2; n2 goes down: Slurm kills web.1's step and drops n2 from the job (which
    goes on: --no-kill); web.1 restarts on n3, the least loaded node that is up, and is ready there."""
    service = task_service("web", tmp_path, replicas=2, restart=RESTART)
    plan = planned(sv.Topology(name="nodeloss", services=[service]), runs_dir, four_nodes)
    async with launch_prepared(plan, allocation=four_nodes) as group:
        moving = group["web.1"]
        assert isinstance(moving, sv.Replica) and moving.plan.placement is not None
        lost = moving.plan.placement.nodes[0].name
        node_down(slurm, lost)
        await wait_for(group, lambda events: ready_count("web.1")(events) == 2, timeout=30)
        first, second, third, _ = slurm.nodes
        assert moving.plan.placement.nodes[0].name == third
        assert group.plan.service("web").replicas[1].placement == moving.plan.placement
        assert lost not in job_nodelist(four_nodes.job_id)
        assert f"moved from {second} to {third}" in moving.log_path.read_text()
    assert lost == second
    started = records(tmp_path)
    assert sorted(started) == [f"web.0.{first}", f"web.1.{second}", f"web.1.{third}"]
    assert {info["job"] for info in started.values()} == {four_nodes.job_id}


async def test_the_services_that_follow_a_moved_replica_do_what_their_on_change_says(
    runs_dir: Path, tmp_path: Path, four_nodes: SlurmAllocation, slurm: SlurmCluster
) -> None:
    """As after a scale: web.1 moves off a lost node, so front (which depends on web) is told, and with
    ``on_change: restart`` restarts with its templates filled again (``{web.urls}`` names the new host on a
    real cluster; the test cluster's nodes share one address)."""
    web = task_service("web", tmp_path, replicas=2, restart=RESTART)
    front = task_service("front", tmp_path, depends_on=["web"], on_change="restart", restart=RESTART)
    plan = planned(sv.Topology(name="follow", services=[web, front]), runs_dir, four_nodes)
    async with launch_prepared(plan, allocation=four_nodes) as group:
        moving = group["web.1"]
        assert isinstance(moving, sv.Replica) and moving.plan.placement is not None
        front_pids = group["front"].pids
        node_down(slurm, moving.plan.placement.nodes[0].name)
        await wait_for(group, lambda events: ready_count("front")(events) == 2, timeout=60)
        assert group["front"].pids != front_pids
        changed = [e for e in group.event_history if isinstance(e, EndpointsChanged)]
        assert [(e.service, e.source, e.action) for e in changed] == [("front", "web", "restart")]
        assert ready_count("web.1")(group.event_history) == 2


async def test_a_lost_node_with_no_node_to_replace_it_fails_the_run_naming_it(
    runs_dir: Path, tmp_path: Path, two_nodes: SlurmAllocation, slurm: SlurmCluster
) -> None:
    """A 2-node replica on a 2-node allocation loses a node: no node is left to take its place, so the
    restart fails, and the error names the node."""
    service = task_service("engine", tmp_path, "--rank", "{node_rank}", placement=Placement(nodes=2), restart=RESTART)
    plan = planned(sv.Topology(name="nodeloss", services=[service]), runs_dir, two_nodes)
    lost = slurm.nodes[1]
    with pytest.raises(sv.ServiceFailed, match=rf"node {lost} went down \(it left Slurm job \d+\)") as failure:
        async with launch_prepared(plan, allocation=two_nodes) as group:
            node_down(slurm, lost)
            await group.wait()
    assert failure.value.replica == "engine"


async def test_a_scale_never_places_a_new_replica_on_a_node_that_went_down(
    runs_dir: Path, tmp_path: Path, four_nodes: SlurmAllocation, slurm: SlurmCluster
) -> None:
    """web on n1; n2 (idle) goes down and leaves the job: a scale to 3 skips it, the new replicas run on n3
    and n4 and are ready there."""
    plan = planned(sv.Topology(name="scaledown", services=[task_service("web", tmp_path)]), runs_dir, four_nodes)
    first, second, third, fourth = slurm.nodes
    async with launch_prepared(plan, allocation=four_nodes) as group:
        node_down(slurm, second)
        wait_until(lambda: second not in job_nodelist(four_nodes.job_id), timeout=30)
        await group.scale("web", 3)
        handle = group["web"]
        assert isinstance(handle, sv.ServiceHandle)
        placed = [r.plan.placement.nodes[0].name for r in handle.replicas if r.plan.placement is not None]
        assert placed == [first, third, fourth]
    assert sorted(records(tmp_path)) == [f"web.0.{first}", f"web.1.{third}", f"web.2.{fourth}"]
