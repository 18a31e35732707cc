"""Replicas as Slurm steps on the real 4-node test cluster: where they land, how they stop, how they restart."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

import supervisor as sv
from supervisor._events import Exited, Stopped
from supervisor._host.slurm_alloc import SlurmAllocation
from supervisor._plan.plan import Plan, make_plan
from supervisor._runtime.runner import launch_prepared
from supervisor._spec.model import Cluster, Placement
from supervisor._spec.model import SlurmCluster as SlurmSpec
from supervisor._spec.placement import ClusterNode

from ..helpers import PROGRAMS, PYTHON, wait_until
from ..slurm import SlurmCluster, held_allocation

pytestmark = [pytest.mark.anyio, pytest.mark.slurm]

TASK = str(PROGRAMS / "slurm_task.py")


@pytest.fixture
def allocation(slurm: SlurmCluster) -> Iterator[SlurmAllocation]:
    """All 4 nodes, ours (the group cancels it at teardown; cancelled here too if a test failed first)."""
    with held_allocation(4, "launcher-test") as job:
        yield job


def task_service(name: str, record: Path, *options: str, replicas: int = 1, **kwargs: object) -> sv.Service:
    """The test task, ready once it answers HTTP on its own port at its node's address."""
    return sv.Service(  # type: ignore[arg-type]
        name=name,
        command=[PYTHON, TASK, str(record), name + ".{replica}", "--port", "{port}", *options],
        ports=["port"],
        replicas=replicas,
        ready=sv.HttpCheck("http://{host}:{port}/"),
        **kwargs,
    )


def records(record: Path) -> dict[str, dict[str, object]]:
    """What each task wrote at start, by ``<replica>.<node>``."""
    return {p.name.removesuffix(".json"): json.loads(p.read_text()) for p in sorted(record.glob("*.json"))}


def planned(topology: sv.Topology, runs_dir: Path, allocation: SlurmAllocation) -> Plan:
    """Planned on the allocation's nodes, as ``supervisor run`` does for ``cluster: {slurm: ...}``."""
    on_cluster = attrs.evolve(topology, cluster=Cluster(slurm=SlurmSpec(nodes=len(allocation.nodes))))
    return make_plan(on_cluster, runs_dir=runs_dir, nodes=allocation.nodes)


async def test_replicas_land_on_distinct_nodes_and_are_probed_by_host(
    runs_dir: Path, tmp_path: Path, allocation: SlurmAllocation, slurm: SlurmCluster
) -> None:
    """4 replicas, one per node: each task sees its own SLURMD_NODENAME, runs in our allocation without the
    run's mark, and its readiness probe reached it at its node's address and its own port."""
    topology = sv.Topology(name="spread", services=[task_service("web", tmp_path, replicas=4)])
    plan = planned(topology, runs_dir, allocation)
    async with launch_prepared(plan, allocation=allocation) as group:
        seen = records(tmp_path)
        ports = {r.port for r in group["web"].replicas}
        assert all(r.url and r.url.startswith("http://127.0.0.1:") for r in group["web"].replicas)
    assert len(ports) == 4
    assert sorted(info["node"] for info in seen.values()) == list(slurm.nodes)
    assert {info["job"] for info in seen.values()} == {allocation.job_id}
    assert not any(info["marked"] for info in seen.values())


async def test_a_two_node_replica_is_one_step_with_two_tasks(
    runs_dir: Path, tmp_path: Path, allocation: SlurmAllocation
) -> None:
    """placement over 2 nodes: one step, one task per node, each with its own command (rank) and node."""
    service = task_service("engine", tmp_path, "--rank", "{node_rank}", placement=Placement(nodes=2))
    plan = planned(sv.Topology(name="span", services=[service]), runs_dir, allocation)
    async with launch_prepared(plan, allocation=allocation):
        wait_until(lambda: len(records(tmp_path)) == 2)  # ready = the leader answers; the other starts too
        seen = records(tmp_path)
    assert len({info["step"] for info in seen.values()}) == 1
    by_node = {info["node"]: info["argv"] for info in seen.values()}
    first, second = (node.name for node in plan.services[0].replicas[0].placement.nodes)  # type: ignore[union-attr]
    assert by_node[first][-2:] == ["--rank", "0"]
    assert by_node[second][-2:] == ["--rank", "1"]


async def test_stop_signal_reaches_every_task_through_slurm(
    runs_dir: Path, tmp_path: Path, allocation: SlurmAllocation
) -> None:
    """Teardown: each task gets the stop signal (not SIGKILL), finishes its handler, and srun exits with
    the tasks' own code 0: nothing is killed."""
    service = task_service(
        "web",
        tmp_path,
        "--rank",
        "{node_rank}",
        "--term-delay",
        "0.3",
        replicas=2,
        placement=Placement(nodes=2),
        stop=sv.StopPolicy(grace_seconds=20),
    )
    plan = planned(sv.Topology(name="stop", services=[service]), runs_dir, allocation)
    async with launch_prepared(plan, allocation=allocation) as group:
        # ready = each leader answers; the teardown of a running step is tested, so every task runs first (a
        # step stopped while a rank still starts: Slurm signalled its rank 0 twice and the other never ran)
        wait_until(lambda: len(records(tmp_path)) == 4)
    history = group.event_history
    signals = {p.name.removesuffix(".signals"): p.read_text().split() for p in tmp_path.glob("*.signals")}
    assert sorted(signals) == sorted(records(tmp_path))  # every task got the stop signal, once
    assert all(len(words) == 2 and words[0] == "TERM" for words in signals.values()), signals
    assert [e.exit_code for e in history if isinstance(e, Exited)] == [0, 0]
    assert not any(e.killed for e in history if isinstance(e, Stopped))


async def test_a_task_that_ignores_the_stop_signal_is_killed_after_the_grace(
    runs_dir: Path, tmp_path: Path, allocation: SlurmAllocation
) -> None:
    """After the grace the step is cancelled (SIGKILL to the tasks): the replica is down, nothing is left."""
    service = task_service("stubborn", tmp_path, "--ignore-term", stop=sv.StopPolicy(grace_seconds=0.5))
    plan = planned(sv.Topology(name="grace", services=[service]), runs_dir, allocation)
    async with launch_prepared(plan, allocation=allocation) as group:
        pass
    assert list(tmp_path.glob("*.signals"))  # it got SIGTERM first
    assert [e.killed for e in group.event_history if isinstance(e, Stopped)] == [True]


async def test_a_crashed_replica_restarts_in_the_same_allocation(
    runs_dir: Path, tmp_path: Path, allocation: SlurmAllocation
) -> None:
    """A step whose task exits 3 is restarted per policy: a new step in the same job."""
    service = task_service(
        "flaky", tmp_path, "--fail-once", restart=sv.RestartPolicy(policy="on-failure", backoff=sv.Backoff(0.05))
    )
    plan = planned(sv.Topology(name="restart", services=[service]), runs_dir, allocation)
    async with launch_prepared(plan, allocation=allocation) as group:
        replica = group["flaky"]
        assert isinstance(replica, sv.ServiceHandle)
        assert replica.replicas[0].restarts == 1
    exits = [e.exit_code for e in group.event_history if isinstance(e, Exited)]
    assert exits[0] == 3
    assert [info["job"] for info in records(tmp_path).values()] == [allocation.job_id]


def test_signal_numbers_are_what_scancel_takes() -> None:
    """``scancel -s`` gets the number; names differ in spelling between Slurm versions."""
    assert str(int(signal.SIGTERM)) == "15"


async def test_without_srun_the_replica_fails_naming_srun(
    runs_dir: Path, tmp_path: Path, allocation: SlurmAllocation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No srun on PATH: the start fails with a message about srun, not about the replica's program."""
    plan = planned(sv.Topology(name="nosrun", services=[task_service("web", tmp_path)]), runs_dir, allocation)
    with monkeypatch.context() as patch:  # undone before the after-test check runs squeue
        patch.setenv("PATH", str(tmp_path))
        with pytest.raises(sv.ServiceFailed, match="srun \\(Slurm's client\\) does not run here"):
            async with launch_prepared(plan, allocation=allocation):
                pass


async def test_a_step_slurm_refuses_fails_the_replica_with_sruns_words(
    runs_dir: Path, tmp_path: Path, slurm: SlurmCluster
) -> None:
    """A replica placed on a node outside the allocation: srun cannot create the step; the failure shows
    srun's own message in the log tail, and stopping it does not wait on a step that never existed."""
    with held_allocation(1, "refused-step") as job:
        outside = attrs.evolve(job, nodes=(*job.nodes, *(n for n in planned_nodes(slurm) if n not in job.nodes)))
        topology = sv.Topology(name="refused", services=[task_service("web", tmp_path, replicas=2)])
        plan = planned(topology, runs_dir, outside)
        with pytest.raises(sv.ServiceFailed, match=r"web\.1") as failure:
            async with launch_prepared(plan, allocation=job):
                pass
        assert any("srun" in line for line in failure.value.log_tail), failure.value.log_tail


def planned_nodes(slurm: SlurmCluster) -> list[ClusterNode]:
    return [ClusterNode(name, "127.0.0.1") for name in slurm.nodes]


async def test_a_scale_places_new_replicas_on_other_nodes_as_steps_and_a_scale_down_ends_them(
    runs_dir: Path, tmp_path: Path, allocation: SlurmAllocation, slurm: SlurmCluster
) -> None:
    """1 -> 3 on 4 idle nodes: the two new replicas are steps of our job on two nodes the first does not
    use, each probed at its node's address ({host}) and its own port; back to 1, their steps are gone
    from the queue and their processes from the system."""
    topology = sv.Topology(name="grow", services=[task_service("web", tmp_path)])
    plan = planned(topology, runs_dir, allocation)
    async with launch_prepared(plan, allocation=allocation) as group:
        await group.scale("web", 3)
        handle = group["web"]
        assert isinstance(handle, sv.ServiceHandle)
        assert [r.name for r in handle.replicas] == ["web", "web.1", "web.2"]
        assert all(r.state is sv.ReplicaState.READY for r in handle.replicas)
        seen = records(tmp_path)
        nodes = {name.split(".")[-1]: name.rsplit(".", 1)[0] for name in seen}  # node -> replica
        assert sorted(nodes.values()) == ["web.0", "web.1", "web.2"]  # three replicas, three distinct nodes
        for replica in handle.replicas:
            placement = replica.plan.placement
            assert placement is not None
            info = seen[f"web.{replica.index}.{placement.leader.name}"]
            assert info["node"] == placement.leader.name and info["job"] == allocation.job_id
            assert replica.url == f"http://{placement.leader.address}:{replica.port}"
        assert len({r.port for r in handle.replicas}) == 3  # emulated nodes share one address
        steps_before = slurm.command("squeue", "-h", "-s", "-o", "%j").split()
        added = [s for s in steps_before if s.startswith(("web.1.", "web.2."))]
        assert len(added) == 2, steps_before
        pids = [int(seen[name]["pid"]) for name in seen if not name.startswith("web.0.")]  # type: ignore[call-overload]
        await group.scale("web", 1)
        assert [r.name for r in handle.replicas] == ["web"]
        wait_until(lambda: not set(added) & set(slurm.command("squeue", "-h", "-s", "-o", "%j").split()))
        wait_until(lambda: not any(_alive(pid) for pid in pids))
        assert handle.replicas[0].state is sv.ReplicaState.READY


async def test_a_scale_whose_new_replica_fails_is_undone_on_the_cluster(
    runs_dir: Path, tmp_path: Path, allocation: SlurmAllocation, slurm: SlurmCluster
) -> None:
    """The new replica's step exits 3 at its first start: the scale is undone, its step is gone and the
    first replica serves on; the run's plan is the one from before."""
    (tmp_path / "web.0.failed-once").write_text("x")  # only the added replica fails its start
    topology = sv.Topology(name="undo", services=[task_service("web", tmp_path, "--fail-once")])
    plan = planned(topology, runs_dir, allocation)
    async with launch_prepared(plan, allocation=allocation) as group:
        before = group.plan
        with pytest.raises(sv.ServiceFailed, match=r"web\.1: .*scale of 'web' to 2 was undone"):
            await group.scale("web", 2)
        handle = group["web"]
        assert isinstance(handle, sv.ServiceHandle)
        assert [r.name for r in handle.replicas] == ["web"]
        assert handle.replicas[0].state is sv.ReplicaState.READY
        assert group.plan == before
        wait_until(
            lambda: not any(s.startswith("web.1.") for s in slurm.command("squeue", "-h", "-s", "-o", "%j").split())
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
