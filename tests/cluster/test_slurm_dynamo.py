"""The Dynamo preset on the Slurm test cluster: etcd, NATS and the frontend on the first node, the prefill
and decode workers (mocker engine, no GPU) on two others; a chat completion is answered."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import attrs
import httpx
import pytest

import topologies
from supervisor._host.slurm_alloc import SlurmAllocation
from supervisor._plan.plan import make_plan
from supervisor._runtime.runner import launch_prepared
from supervisor._spec.model import Cluster, Placement
from supervisor._spec.model import SlurmCluster as SlurmSpec

from ..e2e.test_engines_e2e import chat
from ..slurm import SlurmCluster, held_allocation

pytestmark = [pytest.mark.anyio, pytest.mark.slurm, pytest.mark.engines]

NODE_OF = {"etcd": 0, "nats": 0, "frontend": 0, "prefill": 1, "decode": 2}


@pytest.fixture
def three_nodes(slurm: SlurmCluster) -> Iterator[SlurmAllocation]:
    with held_allocation(3, "dynamo-test") as job:
        yield job


async def test_dynamo_workers_on_two_nodes_and_its_infrastructure_on_the_first(
    dynamo_env: Path, mocker_model: Path, runs_dir: Path, three_nodes: SlurmAllocation, slurm: SlurmCluster
) -> None:
    preset = topologies.dynamo(
        engine="mocker", model=str(mocker_model), served_model_name="org/tiny", env_path=str(dynamo_env)
    )
    services = [attrs.evolve(s, placement=Placement(node=NODE_OF[s.name])) for s in preset.services]
    topology = attrs.evolve(preset, services=services, cluster=Cluster(slurm=SlurmSpec(nodes=3)))
    plan = make_plan(topology, runs_dir=runs_dir, nodes=three_nodes.nodes)
    async with launch_prepared(plan, allocation=three_nodes) as group:
        steps = slurm.command("squeue", "-h", "-s", "-j", three_nodes.job_id, "-o", "%j %N").split("\n")
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await chat(client, group["frontend"].url, "org/tiny")
    where = {line.split()[0].split(".")[0]: line.split()[1] for line in steps if line.strip()}
    nodes = [node.name for node in three_nodes.nodes]
    assert where == {name: nodes[index] for name, index in NODE_OF.items()}, steps
    assert answer.strip()
