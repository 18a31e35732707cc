"""What a replica uses: CPU seconds, memory (now and at its peak), processes, GPU memory.

Read from the replica's cgroup where the kernel counts for it: v2 ``cpu.stat`` (every v2 cgroup has it),
``memory.current``/``memory.peak`` where the memory controller is enabled, else the v1 ``cpuacct`` and
``memory`` cgroups the replica was also placed in. A cgroup's counters cover every process that ever ran
in it, forks and exited children included, at the cost of a few small reads, whatever the host's size.
Without a cgroup (marks mode) the members are the leader's descendants and its process group, found in one
pass over ``/proc`` per sample for all replicas; their CPU and resident memory are summed, and the peak
is the largest sum seen. GPU memory is what the GPU inventory lists for the members' pids (NVML, amdsmi or
a fake), read once per sample for all replicas.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from .cgroupfs import read_small_file

if TYPE_CHECKING:
    from .gpu_inventory import GpuInventory

__all__ = ["CgroupCounters", "ProcTable", "Reading", "ResourceUsage", "gpu_memory_by_pid", "gpu_memory_of", "pid_stats"]

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@attrs.frozen
class ResourceUsage:
    """One replica's use at its latest sample (``replica.resources``)."""

    cpu_seconds: float  #: CPU time (user + system) of all its processes so far, exited ones included
    cpu_percent: float | None  #: since the sample before (100 = one core); None at the first sample
    memory_bytes: int  #: now: the cgroup's charge, else the members' resident memory
    memory_peak_bytes: int  #: the most it held: the kernel's peak where it keeps one, else the largest sample
    processes: int  #: live processes of the replica
    gpu_memory_bytes: int | None  #: GPU memory its processes hold; None on a run without a GPU inventory
    gpu_memory_peak_bytes: int | None = None  #: the most GPU memory seen at a sample

    def to_json(self) -> dict[str, Any]:
        """What ``supervisor status --json`` shows per replica."""
        return {
            "cpu_seconds": round(self.cpu_seconds, 3),
            "cpu_percent": None if self.cpu_percent is None else round(self.cpu_percent, 1),
            "memory_bytes": self.memory_bytes,
            "memory_peak_bytes": self.memory_peak_bytes,
            "processes": self.processes,
            "gpu_memory_bytes": self.gpu_memory_bytes,
        }


@attrs.frozen
class Reading:
    """One raw read of a replica's counters; None where this source has no such counter."""

    pids: tuple[int, ...]
    cpu_seconds: float | None = None
    memory_bytes: int | None = None
    memory_peak_bytes: int | None = None  #: the kernel's own peak; None: the sampler keeps the largest seen


class CgroupCounters:
    """Where one replica's counters are, found once (which files its cgroups have), read each sample."""

    def __init__(self, path: Path, extras: Sequence[Path] = ()) -> None:
        self.path = path
        self.cpu_usec = _existing(path / "cpu.stat")
        self.cpuacct_ns = _first_existing(extras, "cpuacct.usage")
        self.memory = _existing(path / "memory.current") or _first_existing(extras, "memory.usage_in_bytes")
        self.memory_peak = _existing(path / "memory.peak") or _first_existing(extras, "memory.max_usage_in_bytes")

    @property
    def counts_cpu(self) -> bool:
        """Whether the kernel counts this cgroup's CPU time (else it is summed over the live members)."""
        return self.cpu_usec is not None or self.cpuacct_ns is not None

    def read(self) -> Reading:
        from .containment import tree_pids

        cpu: float | None = None
        if self.cpu_usec is not None:
            cpu = _usage_usec(self.cpu_usec)
        if cpu is None and self.cpuacct_ns is not None:
            ns = _read_int(self.cpuacct_ns)
            cpu = None if ns is None else ns / 1e9
        return Reading(
            pids=tuple(tree_pids(self.path)),
            cpu_seconds=cpu,
            memory_bytes=None if self.memory is None else _read_int(self.memory),
            memory_peak_bytes=None if self.memory_peak is None else _read_int(self.memory_peak),
        )


class ProcTable:
    """Every process's parent, group, CPU time and resident memory, from one pass over ``/proc``: what a
    replica without a cgroup is measured from (its leader's descendants and its process group)."""

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self._stats: dict[int, tuple[int, int, float, int]] = {}  #: pid -> ppid, pgid, cpu seconds, rss
        self._children: dict[int, list[int]] = {}
        self._groups: dict[int, list[int]] = {}
        try:
            names = os.listdir(proc)
        except OSError:
            names = []
        for name in names:
            if not name.isdigit():
                continue
            try:
                with open(proc / name / "stat", "rb") as file:
                    fields = file.read().rpartition(b")")[2].split()
                if fields[0] in (b"Z", b"X"):
                    continue
                pid, ppid, pgid = int(name), int(fields[1]), int(fields[2])
                ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime, stime, and of reaped children
                self._stats[pid] = (ppid, pgid, ticks / _CLOCK_TICKS, int(fields[21]) * _PAGE_BYTES)
            except (OSError, IndexError, ValueError):
                continue
            self._children.setdefault(ppid, []).append(pid)
            self._groups.setdefault(pgid, []).append(pid)

    def read(self, leader: int) -> Reading:
        """The leader, its descendants and the rest of its process group, summed."""
        members: set[int] = set()
        todo = [leader, *self._groups.get(leader, ())]
        while todo:
            pid = todo.pop()
            if pid in members or pid not in self._stats:
                continue
            members.add(pid)
            todo.extend(self._children.get(pid, ()))
        stats = [self._stats[pid] for pid in members]
        return Reading(
            pids=tuple(sorted(members)),
            cpu_seconds=sum(s[2] for s in stats),
            memory_bytes=sum(s[3] for s in stats),
        )


def pid_stats(pids: Iterable[int], proc: Path = Path("/proc")) -> tuple[float, int]:
    """CPU seconds and resident bytes summed over ``pids`` (those gone meanwhile count nothing)."""
    cpu, rss = 0.0, 0
    for pid in pids:
        try:
            fields = read_small_file(proc / str(pid) / "stat").rpartition(b")")[2].split()
            cpu += sum(int(fields[i]) for i in (11, 12, 13, 14)) / _CLOCK_TICKS
            rss += int(fields[21]) * _PAGE_BYTES
        except (OSError, IndexError, ValueError):
            continue
    return cpu, rss


def gpu_memory_by_pid(inventory: GpuInventory) -> dict[int, int]:
    """GPU memory held by each pid, over all GPUs (a process on two GPUs counts both); {} when unreadable."""
    held: dict[int, int] = {}
    try:
        processes = inventory.processes()
    except Exception:  # a driver hiccup costs one sample's GPU numbers, never the run
        return held
    for process in processes:
        held[process.pid] = held.get(process.pid, 0) + (process.used_memory_bytes or 0)
    return held


def gpu_memory_of(pids: Iterable[int], held: Mapping[int, int]) -> int:
    return sum(held.get(pid, 0) for pid in pids)


def _existing(path: Path) -> Path | None:
    return path if path.exists() else None


def _first_existing(directories: Sequence[Path], name: str) -> Path | None:
    return next((d / name for d in directories if (d / name).exists()), None)


def _read_int(path: Path) -> int | None:
    try:
        return int(read_small_file(path).split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _usage_usec(path: Path) -> float | None:
    try:
        for line in read_small_file(path).splitlines():
            if line.startswith(b"usage_usec "):
                return int(line.split()[1]) / 1e6
    except (OSError, ValueError, IndexError):
        pass
    return None
