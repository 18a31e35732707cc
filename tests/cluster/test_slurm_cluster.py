"""The Slurm test cluster itself: 4 idle nodes, a step's tasks land on distinct nodes, the leftover check bites."""

from __future__ import annotations

import subprocess

import pytest

from ..slurm import SlurmCluster

pytestmark = pytest.mark.slurm


def test_four_nodes_run_one_task_each(slurm: SlurmCluster) -> None:
    """A 4-node step runs one task per node, each seeing its own SLURMD_NODENAME and SLURM_NODEID."""
    assert slurm.command("sinfo", "-h", "-N", "-o", "%N %T").split() == [
        word for node in slurm.nodes for word in (node, "idle")
    ]
    out = slurm.command("srun", "-N4", "--ntasks-per-node", "1", "sh", "-c", 'echo "$SLURMD_NODENAME $SLURM_NODEID"')
    assert sorted(out.split("\n")[:-1]) == [f"{node} {i}" for i, node in enumerate(slurm.nodes)]


def test_leftover_check_sees_a_running_step(slurm: SlurmCluster) -> None:
    """What the after-test check looks at: an allocation and its step's task show up, and are gone after
    scancel (so a test that leaves one fails)."""
    alloc = subprocess.run(
        ["salloc", "--no-shell", "-N1", "-J", "leftover-check"],
        env=slurm.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    job = alloc.stderr.split("Granted job allocation ")[1].split()[0]
    step = subprocess.Popen(
        ["srun", "--jobid", job, "--overlap", "-N1", "sleep", "60"],
        env=slurm.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        queue: list[str] = []
        for _ in range(200):
            queue, tasks = slurm.queue(), slurm.tasks()
            if any(line.startswith(f"{job}.0 ") for line in queue) and tasks:
                break
            subprocess.run(["sleep", "0.05"], check=True)
        assert any(line.startswith(f"{job} leftover-check RUNNING") for line in queue), queue
        assert tasks
    finally:
        slurm.command("scancel", job)
        step.wait(30)
    assert slurm.wait_clean() == ([], [])
