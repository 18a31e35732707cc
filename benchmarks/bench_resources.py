"""The resource sampler's cost: the supervisor's CPU time per sample of 100 replicas, as a share of a core
at the sampler's interval (the goal: at most 1 %). Run on its own: ``python benchmarks/bench_resources.py``.

Each round samples every replica back to back (``ResourceSampler.sample``, worker thread included) and
times it with the process's CPU clock; the share is that time over the wait the run's sampler takes after
such a round (``next_sample_in``: ``SAMPLE_INTERVAL_SECONDS``, or longer after a round that cost more than
``SAMPLER_CPU_SHARE`` of a core). Measured for the cgroup a replica is contained in and for the /proc
fallback (``containment: marks``), at 100 replicas and (``--replicas``) any other count.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

import supervisor as sv
from supervisor._runtime.resources import SAMPLE_INTERVAL_SECONDS, ResourceSampler, next_sample_in

REPLICAS = 100
ROUNDS = 50


async def measure(containment: str, replicas: int, rounds: int, runs_dir: Path) -> tuple[float, float, str]:
    """(CPU ms per sample, wall ms per sample, the mode the run got) over ``rounds`` samples."""
    service = sv.Service(name="idle", command=["sleep", "3600"], replicas=replicas, stop=sv.StopPolicy(grace_seconds=2))
    topology = sv.Topology(name="bench-resources", services=[service], containment=containment)
    async with sv.launch(topology, runs_dir=runs_dir) as group:
        state = group._run  # the run's own state: the sampler reads what the run's task reads
        sampler = ResourceSampler(state.gpus)
        await sampler.sample(state.replicas, state.cgroup_of)  # the first: finds each cgroup's files
        cpu: list[float] = []
        wall: list[float] = []
        for _ in range(rounds):
            began_cpu, began = time.process_time(), time.perf_counter()
            await sampler.sample(state.replicas, state.cgroup_of)
            cpu.append((time.process_time() - began_cpu) * 1000)
            wall.append((time.perf_counter() - began) * 1000)
        assert all(r.resources is not None for r in state.replicas)
        return statistics.median(cpu), statistics.median(wall), group.containment


async def main(replicas: int, rounds: int) -> int:
    print(f"{replicas} replicas, {rounds} samples each, sampling every {SAMPLE_INTERVAL_SECONDS:g}s")
    worst = 0.0
    with tempfile.TemporaryDirectory() as runs:
        for containment in ("auto", "marks"):
            cpu_ms, wall_ms, mode = await measure(containment, replicas, rounds, Path(runs))
            wait = next_sample_in(cpu_ms / 1000)
            share = cpu_ms / 1000 / wait * 100
            worst = max(worst, share)
            print(
                f"{mode:8s} cpu {cpu_ms:6.2f} ms/sample  wall {wall_ms:6.2f} ms/sample  next in {wait:.1f} s"
                f"  = {share:.2f} % of a core"
            )
    print(f"goal: at most 1 % of a core: {'met' if worst <= 1.0 else 'MISSED'}")
    return 0 if worst <= 1.0 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=REPLICAS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    sys.exit(anyio.run(main, args.replicas, args.rounds))
