"""Getting the allocation: salloc's options, a refusal, an interrupted wait in the queue, one we run inside."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

import pytest

import supervisor as sv
from supervisor import ConfigError
from supervisor._host.slurm_alloc import SlurmAllocation, SlurmError, salloc_argv
from supervisor._plan.plan import make_plan
from supervisor._runtime.preflight import refuse_taken_ports
from supervisor._spec.model import Cluster
from supervisor._spec.model import SlurmCluster as SlurmSpec
from supervisor._spec.placement import ClusterNode

from ..helpers import PYTHON, wait_until
from ..slurm import SlurmCluster

ROOT = str(Path(__file__).resolve().parents[2])


def test_salloc_gets_the_cluster_settings_and_no_kill() -> None:
    """Named after the run, one task per node, --no-kill (a node failure ends only its steps), the
    settings as given and the user's extras last, verbatim."""
    spec = SlurmSpec(
        nodes=8, partition="gpu", account="lab", time="2:00:00", qos="high", constraint="h100", extra=("--exclusive",)
    )
    assert salloc_argv(spec, "topovisor-demo") == [
        "salloc", "--no-shell", "--job-name", "topovisor-demo", "--nodes", "8", "--ntasks-per-node", "1",
        "--no-kill", "--partition", "gpu", "--account", "lab", "--time", "2:00:00", "--qos", "high",
        "--constraint", "h100", "--exclusive",
    ]  # fmt: skip


@pytest.mark.slurm
def test_a_refused_allocation_is_an_error_with_slurms_reason(slurm: SlurmCluster) -> None:
    with pytest.raises(
        SlurmError, match=r"no Slurm allocation \(salloc .*--partition nosuch\): .*[Ii]nvalid partition"
    ):
        SlurmAllocation.acquire(SlurmSpec(nodes=1, partition="nosuch"), "bad-partition")


@pytest.mark.slurm
def test_the_current_allocation_is_used_and_never_ours(slurm: SlurmCluster) -> None:
    """SLURM_JOB_ID set (as under sbatch): that job, its nodes with their addresses, not owned."""
    job = SlurmAllocation.acquire(SlurmSpec(nodes=2), "outer")
    try:
        inside = SlurmAllocation.current({**slurm.env, "SLURM_JOB_ID": job.job_id})
        assert inside is not None and inside.job_id == job.job_id and not inside.owned
        assert inside.nodes == job.nodes and [n.address for n in job.nodes] == ["127.0.0.1", "127.0.0.1"]
        inside.release({**slurm.env})  # not ours: a no-op
        assert any(line.startswith(f"{job.job_id} outer RUNNING") for line in slurm.queue())
    finally:
        job.release()


@pytest.mark.slurm
def test_a_stop_signal_while_waiting_in_the_queue_leaves_no_job(slurm: SlurmCluster) -> None:
    """Every node taken exclusively: our salloc waits (pending); SIGTERM to us revokes our request and
    cancels the job, instead of leaving one to be granted later to nobody."""
    slurm.command("salloc", "--no-shell", "-N4", "--exclusive", "-J", "blocker")
    code = (
        "from supervisor._host.slurm_alloc import SlurmAllocation; from supervisor._spec.model import SlurmCluster; "
        "SlurmAllocation.acquire(SlurmCluster(nodes=4, extra=('--exclusive',)), 'pending-test')"
    )
    waiting = subprocess.Popen(
        [PYTHON, "-c", code], env={**slurm.env, "PYTHONPATH": ROOT}, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_until(lambda: any("pending-test PENDING" in line for line in slurm.queue()), timeout=30)
        waiting.send_signal(signal.SIGTERM)
        _, stderr = waiting.communicate(timeout=30)
        assert "interrupted by SIGTERM while waiting for an allocation" in stderr
        wait_until(lambda: not any("pending-test" in line for line in slurm.queue()), timeout=15)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
        slurm.command("scancel", "--name", "blocker")


def test_a_port_taken_here_does_not_refuse_a_replica_placed_on_another_machine(tmp_path: Path) -> None:
    """The taken-port check looks at this machine's ports: a replica on a remote node is not refused
    because a local process holds the same number; one on an emulated node (127.0.0.1) still is."""
    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
        service = sv.Service(name="web", command=[PYTHON, "-c", "pass"], ports=[{"port": port}])
        topology = sv.Topology(name="ports", services=[service], cluster=Cluster(slurm=SlurmSpec(nodes=1)))
        remote = make_plan(topology, runs_dir=tmp_path, nodes=[ClusterNode("far", "192.0.2.7")])
        refuse_taken_ports(remote)  # nothing raised: port 'port' is taken here, not on 192.0.2.7
        emulated = make_plan(topology, runs_dir=tmp_path, nodes=[ClusterNode("n1", "127.0.0.1")])
        with pytest.raises(ConfigError, match="service 'web'"):
            refuse_taken_ports(emulated)
