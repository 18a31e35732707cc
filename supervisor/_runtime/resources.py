"""The run's resource sampler: every few seconds each replica's CPU, memory, processes and GPU memory.

One task per run. The reads (``_host.resources``: a few small cgroup files per replica, one GPU listing per
sample, a /proc pass only for replicas without a cgroup) run in a worker thread, so a slow driver call
never stalls the event loop; the results are set on the replicas (``replica.resources``) in the loop.
Peaks and totals are kept here across restarts, for ``summary.json``: per replica, and per service the
largest sum of its replicas' memory seen at one sample.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import anyio
import attrs

from .._host.resources import (
    CgroupCounters,
    ProcTable,
    Reading,
    ResourceUsage,
    gpu_memory_by_pid,
    gpu_memory_of,
    pid_stats,
)

if TYPE_CHECKING:
    from .._host.containment import ReplicaCgroup
    from .._host.gpu_inventory import GpuInventory
    from .replica import Replica

__all__ = [
    "SAMPLER_CPU_SHARE",
    "SAMPLE_INTERVAL_SECONDS",
    "ResourceSampler",
    "ServicePeaks",
    "next_sample_in",
    "sample_resources",
]

#: between samples, at least: 100 replicas cost well under 1 % of a core at this rate (bench_resources.py)
SAMPLE_INTERVAL_SECONDS = 2.0
#: the share of one core the sampler may take: a round that cost more waits longer for the next, so the
#: cost stays bounded whatever the number of replicas (200 idle ones held a supervisor at 1.3 % of a core)
SAMPLER_CPU_SHARE = 0.005


@attrs.define
class ServicePeaks:
    """The most a service's replicas held together at one sample."""

    memory_bytes: int = 0
    gpu_memory_bytes: int | None = None


@attrs.define
class _Track:
    """What the sampler remembers of one replica between samples."""

    counters: CgroupCounters | None = None
    memory_peak: int = 0
    gpu_peak: int | None = None
    cpu_total: float = 0.0
    cpu_base: float = 0.0  #: CPU of earlier incarnations, where it is summed over live processes
    cpu_live: float = 0.0
    leader: int | None = None
    last_at: float | None = None


@attrs.frozen
class _Target:
    name: str
    service: str
    counters: CgroupCounters | None
    leader: int | None  #: read from /proc when there is no cgroup


class ResourceSampler:
    """Reads every replica of a run and keeps peaks; ``sample`` is one round (the task calls it)."""

    def __init__(self, gpus: GpuInventory | None = None) -> None:
        self.gpus = gpus
        self.services: dict[str, ServicePeaks] = {}
        self._tracks: dict[str, _Track] = {}

    async def sample(self, replicas: Sequence[Replica], cgroup_of: Callable[[str], ReplicaCgroup | None]) -> float:
        """One round; returns what it cost (its worker thread's CPU and the loop's), in seconds."""
        targets = [t for t in (self._target(r, cgroup_of(r.name)) for r in replicas) if t is not None]
        if not targets:
            return 0.0
        readings, held, read_cpu = await anyio.to_thread.run_sync(self._read, targets)
        began = time.thread_time()
        now = time.monotonic()
        by_name = {r.name: r for r in replicas}
        totals: dict[str, ServicePeaks] = {}
        for target in targets:
            usage = self._apply(target, readings[target.name], held, now)
            by_name[target.name].resources = usage
            total = totals.setdefault(target.service, ServicePeaks())
            total.memory_bytes += usage.memory_bytes
            if usage.gpu_memory_bytes is not None:
                total.gpu_memory_bytes = (total.gpu_memory_bytes or 0) + usage.gpu_memory_bytes
        for service, total in totals.items():
            peak = self.services.setdefault(service, ServicePeaks())
            peak.memory_bytes = max(peak.memory_bytes, total.memory_bytes)
            if total.gpu_memory_bytes is not None:
                peak.gpu_memory_bytes = max(peak.gpu_memory_bytes or 0, total.gpu_memory_bytes)
        return read_cpu + time.thread_time() - began

    def _target(self, replica: Replica, cgroup: ReplicaCgroup | None) -> _Target | None:
        track = self._tracks.setdefault(replica.name, _Track())
        if cgroup is not None:
            if track.counters is None or track.counters.path != cgroup.path:
                track.counters = CgroupCounters(cgroup.path, cgroup.extras)
            return _Target(replica.name, replica.service, track.counters, None)
        if replica.incarnation is None:
            return None  # never started: nothing to show yet
        return _Target(replica.name, replica.service, None, replica.pid if replica.running else None)

    def _read(self, targets: list[_Target]) -> tuple[dict[str, Reading], dict[int, int] | None, float]:
        """In a worker thread: every target's counters, the GPUs' holders once, and this thread's CPU."""
        began = time.thread_time()
        table = ProcTable() if any(t.counters is None and t.leader is not None for t in targets) else None
        readings: dict[str, Reading] = {}
        for target in targets:
            if target.counters is not None:
                reading = target.counters.read()
                if reading.cpu_seconds is None or reading.memory_bytes is None:  # no such counter here
                    cpu, rss = pid_stats(reading.pids)
                    reading = attrs.evolve(
                        reading,
                        cpu_seconds=cpu if reading.cpu_seconds is None else reading.cpu_seconds,
                        memory_bytes=rss if reading.memory_bytes is None else reading.memory_bytes,
                    )
            elif table is not None and target.leader is not None:
                reading = table.read(target.leader)
            else:
                reading = Reading(pids=())
            readings[target.name] = reading
        held = gpu_memory_by_pid(self.gpus) if self.gpus is not None else None
        return readings, held, time.thread_time() - began

    def _apply(self, target: _Target, reading: Reading, held: dict[int, int] | None, now: float) -> ResourceUsage:
        track = self._tracks[target.name]
        before, last_at = track.cpu_total, track.last_at
        if target.counters is not None and target.counters.counts_cpu:
            track.cpu_total = max(track.cpu_total, reading.cpu_seconds or 0.0)  # the kernel's, over its life
        else:  # summed over live processes: an earlier incarnation's time is carried over
            leader = target.leader
            if leader is not None and leader != track.leader:
                track.cpu_base, track.leader = track.cpu_base + track.cpu_live, leader
                track.cpu_live = 0.0
            track.cpu_live = max(track.cpu_live, reading.cpu_seconds or 0.0)
            track.cpu_total = max(track.cpu_total, track.cpu_base + track.cpu_live)
        track.last_at = now
        memory = reading.memory_bytes or 0
        track.memory_peak = max(track.memory_peak, memory, reading.memory_peak_bytes or 0)
        gpu = None if held is None else gpu_memory_of(reading.pids, held)
        if gpu is not None:
            track.gpu_peak = max(track.gpu_peak or 0, gpu)
        percent = None if last_at is None or now <= last_at else 100.0 * (track.cpu_total - before) / (now - last_at)
        return ResourceUsage(
            cpu_seconds=track.cpu_total,
            cpu_percent=percent,
            memory_bytes=memory,
            memory_peak_bytes=track.memory_peak,
            processes=len(reading.pids),
            gpu_memory_bytes=gpu,
            gpu_memory_peak_bytes=track.gpu_peak,
        )


async def sample_resources(
    sampler: ResourceSampler,
    replicas: Callable[[], Sequence[Replica]],
    cgroup_of: Callable[[str], ReplicaCgroup | None],
) -> None:
    """The run's sampler task: a round now and every ``SAMPLE_INTERVAL_SECONDS`` until it is cancelled, or
    less often where a round costs more than ``SAMPLER_CPU_SHARE`` of a core at that rate."""
    while True:
        cost = await sampler.sample(replicas(), cgroup_of)
        await anyio.sleep(next_sample_in(cost))


def next_sample_in(round_cpu_seconds: float) -> float:
    """Seconds until the next round: the interval, or longer, so rounds take at most their share of a core."""
    return max(SAMPLE_INTERVAL_SECONDS, round_cpu_seconds / SAMPLER_CPU_SHARE)
