"""A supervisor on the Slurm test cluster, for the tests that signal or kill it, or run it under sbatch.

    slurm_driver.py RECORD_DIR RUNS_DIR REPLICAS [--once] [--term-delay S]

Takes the allocation as ``supervisor run`` does (the caller's own under sbatch, else ``salloc``), plans
REPLICAS test tasks on its nodes (round-robin: one per node), prints
``ready <run_dir> <job id> owned=<bool>`` once all are ready, then supervises until a signal
(``--once``: stops at once). Exits 128+N after signal N, as the CLI does.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

import supervisor as sv
from supervisor._host.slurm_alloc import allocation_for
from supervisor._plan.plan import make_plan
from supervisor._runtime.runner import supervise_prepared
from supervisor._spec.model import Cluster, SlurmCluster

TASK = str(Path(__file__).with_name("slurm_task.py"))


def main() -> int:
    record, runs_dir, replicas, *options = sys.argv[1:]
    once = "--once" in options
    delay = options[options.index("--term-delay") + 1] if "--term-delay" in options else "0"
    service = sv.Service(
        name="web",
        command=[sys.executable, TASK, record, "web.{replica}", "--port", "{port}", "--term-delay", delay],
        ports=["port"],
        replicas=int(replicas),
        ready=sv.HttpCheck("http://{host}:{port}/"),
        stop=sv.StopPolicy(grace_seconds=20),
    )
    topology = sv.Topology(name="driven", services=[service], cluster=Cluster(slurm=SlurmCluster(nodes=4)))
    allocation = allocation_for(topology)
    assert allocation is not None
    plan = make_plan(topology, runs_dir=runs_dir, nodes=allocation.nodes)

    async def body(group: sv.RunningTopology) -> None:
        print(f"ready {group.run_dir} {allocation.job_id} owned={allocation.owned}", flush=True)
        if not once:
            await group.wait()

    outcome = anyio.run(lambda: supervise_prepared(plan, body, allocation=allocation))
    return 128 + outcome.signal if outcome.signal else 0


if __name__ == "__main__":
    sys.exit(main())
