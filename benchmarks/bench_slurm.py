"""11. Slurm: replicas as steps on a real 4-node cluster, each figure against a baseline from the same run.

    python benchmarks/bench_slurm.py [--quick] [--json PATH]     # as root, after .ci/slurm-cluster install

Starts its own emulated 4-node cluster (``.ci/slurm-cluster``; about 1 s), takes one allocation of the 4
nodes, and measures, alternating with each baseline:

- a replica's start over a bare ``srun --jobid J --overlap`` step of the same program (spawn to its
  ready line; goal: within 20 ms of it);
- all-ready time of 4 replicas, one per node, against the same topology on this machine (goal: ratio
  <= 1.1);
- teardown of 16 replicas over the 4 nodes (each exits at once on SIGTERM; goal: under 1 s).

The cluster is stopped at the end whatever happens; no job is left in its queue.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
import attrs
from harness import LAUNCH_LIMIT_SECONDS, Result, Settings, Stats, info, read_until, report, rounds, summary

import supervisor as sv
from supervisor._host.slurm_alloc import SlurmAllocation
from supervisor._plan.plan import make_plan
from supervisor._runtime.runner import launch_prepared
from supervisor._spec.model import Cluster, SlurmCluster

SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "slurm-cluster"
WORKER = [sys.executable, "-S", "-c", "print('ready', flush=True)\nimport time\ntime.sleep(3600)"]


def topology(replicas: int, *, cluster: bool) -> sv.Topology:
    service = sv.Service(
        name="w", command=WORKER, replicas=replicas, ready=sv.LogCheck("^ready$"), stop=sv.StopPolicy(grace_seconds=10)
    )
    return sv.Topology(
        name="bench-slurm", services=[service], cluster=Cluster(slurm=SlurmCluster(nodes=4)) if cluster else None
    )


async def launch_ready(
    settings: Settings, replicas: int, allocation: SlurmAllocation | None
) -> tuple[float, float, float]:
    """Seconds from ``launch`` to all ready, the first replica's spawn-to-ready, and the teardown's seconds."""
    topo = topology(replicas, cluster=allocation is not None)
    nodes = allocation.nodes if allocation is not None else None
    began = time.monotonic()
    plan = make_plan(topo, runs_dir=settings.runs_dir, nodes=nodes)
    with anyio.fail_after(LAUNCH_LIMIT_SECONDS):
        async with launch_prepared(plan, allocation=allocation) as group:
            ready = time.monotonic() - began
            first = next(e for e in group.event_history if isinstance(e, sv.Ready))
            leaving = time.monotonic()
    return ready, first.seconds, time.monotonic() - leaving


async def bare_steps(allocation: SlurmAllocation, count: int) -> float:
    """``count`` bare steps at once, one per node, by hand: seconds until the last is ready."""
    began = time.monotonic()
    async with anyio.create_task_group() as tg:
        for index in range(count):
            tg.start_soon(bare_step, allocation, index)
    return time.monotonic() - began


async def bare_step(allocation: SlurmAllocation, node: int = 0) -> float:
    """A bare step of the same program, by hand: spawn srun, read its output until the ready line (s)."""
    argv = [
        "srun",
        "--jobid",
        allocation.job_id,
        "--overlap",
        "-N1",
        "-n1",
        "-w",
        allocation.nodes[node].name,
        "--unbuffered",
        *WORKER,
    ]
    read_fd, write_fd = os.pipe()
    began = time.monotonic()
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=write_fd, stderr=subprocess.STDOUT, start_new_session=True
    )
    os.close(write_fd)
    os.set_blocking(read_fd, False)
    try:
        with anyio.fail_after(LAUNCH_LIMIT_SECONDS):
            seen = await read_until(read_fd, b"ready", bytearray())
        return seen - began
    finally:
        os.close(read_fd)
        process.kill()  # srun alone: its shepherd cancels the step
        process.wait()


async def main_async(settings: Settings, allocation: SlurmAllocation) -> list[Result]:
    results: list[Result] = []
    await launch_ready(settings, 1, allocation)  # warm-up: lazy imports, first srun
    starts: list[float] = []
    bares: list[float] = []
    launches: list[float] = []
    for _ in rounds(settings.count(15, 6), settings.budget(30, 10)):
        bares.append(await bare_step(allocation))
        whole, spawn_to_ready, _ = await launch_ready(settings, 1, allocation)
        starts.append(spawn_to_ready)
        launches.append(whole)
    bare = Stats([b * 1000 for b in bares])
    report(
        Result(
            key="slurm_step_start_overhead",
            title="11. Slurm: a replica's step, spawn to ready, minus a bare srun step",
            unit="ms",
            value=Stats([(s - bare.median / 1000) * 1000 for s in starts]),
            baseline=bare,
            baseline_label="bare srun --overlap step to its ready line",
            goal_kind="max",
            goal=20.0,
            note=f"whole launch of 1 replica (plan, watchdog, step, ready): {Stats(launches).median * 1000:.1f} ms",
        ),
        results,
    )
    on_nodes: list[float] = []
    local: list[float] = []
    bare4: list[float] = []
    for _ in rounds(settings.count(7, 3), settings.budget(30, 10)):
        local.append((await launch_ready(settings, 4, None))[0])
        on_nodes.append((await launch_ready(settings, 4, allocation))[0])
        bare4.append(await bare_steps(allocation, 4))
    report(
        Result(
            key="slurm_all_ready",
            title="11. Slurm: 4 replicas on 4 nodes, launch to all ready",
            unit="s",
            value=Stats(on_nodes),
            baseline=Stats(local),
            baseline_label="the same 4 replicas on this machine",
            goal_kind="ratio",
            goal=1.1,
            note=f"4 bare srun steps at once, by hand: {Stats(bare4).median:.3f} s (Slurm's own floor)",
        ),
        results,
    )
    teardowns: list[float] = []
    local_teardowns: list[float] = []
    for _ in rounds(settings.count(5, 2), settings.budget(40, 15)):
        local_teardowns.append((await launch_ready(settings, 16, None))[2])
        teardowns.append((await launch_ready(settings, 16, allocation))[2])
    report(
        Result(
            key="slurm_teardown",
            title="11. Slurm: teardown of 16 replicas on 4 nodes (grace 10 s, exit on SIGTERM)",
            unit="s",
            value=Stats(teardowns),
            baseline=Stats(local_teardowns),
            baseline_label="the same 16 on this machine",
            goal_kind="max",
            goal=1.0,
        ),
        results,
    )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="tvb.", dir="/tmp"))  # short: slurmstepd sockets live under it
    started = subprocess.run([str(SCRIPT), "start", str(root)], check=False)
    try:
        if started.returncode != 0:
            print("the Slurm test cluster did not start (root and .ci/slurm-cluster install needed)", file=sys.stderr)
            return 2
        os.environ["SLURM_CONF"] = str(root / "etc" / "slurm.conf")
        for name in [n for n in os.environ if n.startswith("SLURM_") and n != "SLURM_CONF"]:
            del os.environ[name]
        allocation = SlurmAllocation.acquire(SlurmCluster(nodes=4), "bench-slurm")
        try:
            with tempfile.TemporaryDirectory(prefix="topovisor-bench-") as work:
                settings = Settings(quick=args.quick, repeats=None, work=Path(work))
                names = ", ".join(n.name for n in allocation.nodes)
                info(f"cluster in {root}, allocation {allocation.job_id} on {names}")
                # each launch uses the one allocation and must not cancel it at its teardown
                results = anyio.run(main_async, settings, attrs.evolve(allocation, owned=False))
        finally:
            allocation.release()
    finally:
        stopped = subprocess.run([str(SCRIPT), "stop", str(root)], check=False)
        if stopped.returncode == 0:
            shutil.rmtree(root, ignore_errors=True)
    print("\nsummary\n" + summary(results), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"results": [r.to_json() for r in results]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
