"""The srun command of a replica, and what its tasks inherit: pure, no cluster needed."""

from __future__ import annotations

import subprocess

from supervisor._host.slurm import srun_argv, step_environment, task_argv
from supervisor._host.slurm_alloc import SlurmAllocation
from supervisor._spec.placement import ClusterNode, ReplicaPlacement

NODES = (ClusterNode("gpu-a", "10.0.0.1"), ClusterNode("gpu-b", "10.0.0.2"))
JOB = SlurmAllocation("42", NODES, owned=True, name="topovisor-demo")


def test_one_step_one_task_per_node_in_the_allocation() -> None:
    placement = ReplicaPlacement(NODES, (("serve", "--x"),) * 2, gpus_per_node=8)
    assert srun_argv(JOB, placement, "decode.0.ab12cd", "/work") == [
        "srun", "--jobid", "42", "--overlap", "--nodes", "2", "--ntasks", "2", "--ntasks-per-node", "1",
        "--nodelist", "gpu-a,gpu-b", "--unbuffered", "--kill-on-bad-exit=1", "--job-name", "decode.0.ab12cd",
        "--chdir", "/work", "--gpus-per-node", "8", "serve", "--x",
    ]  # fmt: skip


def test_per_node_commands_go_by_the_nodes_name_whatever_order_slurm_lists_them_in() -> None:
    """Rank 1's command runs on gpu-b even if Slurm numbers gpu-b's task 0; arguments survive quoting."""
    placement = ReplicaPlacement(NODES, (("echo", "rank 0", "it's"), ("echo", "rank 1", "$HOME")))
    argv = task_argv(placement)
    assert argv[:2] == ["/bin/sh", "-c"]
    for node, expected in (("gpu-a", "rank 0 it's\n"), ("gpu-b", "rank 1 $HOME\n")):
        out = subprocess.run(argv, env={"SLURMD_NODENAME": node}, capture_output=True, text=True, check=True)
        assert out.stdout == expected
    other = subprocess.run(argv, env={"SLURMD_NODENAME": "gpu-z"}, capture_output=True, text=True, check=False)
    assert other.returncode == 127 and "no command for node gpu-z" in other.stderr


def test_tasks_inherit_neither_the_runs_mark_nor_the_callers_job_geometry() -> None:
    env = step_environment(
        {
            "TOPOVISOR_RUN_ID": "r1",
            "TOPOVISOR_REPLICA": "web.0",
            "SLURM_CONF": "/etc/x.conf",
            "SLURM_NTASKS": "8",
            "SRUN_CPUS_PER_TASK": "4",
            "HF_HOME": "/models",
        }
    )
    assert env == {"TOPOVISOR_REPLICA": "web.0", "SLURM_CONF": "/etc/x.conf", "HF_HOME": "/models"}
