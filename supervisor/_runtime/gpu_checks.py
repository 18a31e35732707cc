"""The GPU checks around a run: free memory before anything starts, release after teardown, and who holds
a GPU (a pid, its program, and the topovisor run it belongs to, if any)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Collection, Mapping, Sequence

import anyio
import anyio.to_thread
import attrs
import psutil

from .._errors import ConfigError
from .._host.gpu_inventory import GpuInventory, GpuProcess, GpuUnavailable, format_bytes
from .._host.gpu_visible import open_inventory
from .._marks import REPLICA_ENV, RUN_ID_ENV
from .._plan.plan import Plan

__all__ = [
    "GPU_RELEASE_SECONDS",
    "GpuHolder",
    "check_free_memory",
    "describe_holders",
    "listed_before",
    "runtime_inventory",
    "wait_released",
]

GPU_RELEASE_SECONDS = 15.0  #: after teardown, how long the GPUs may keep listing our processes
_POLL_SECONDS = (0.01, 0.25)  #: first and slowest poll of the release wait


@attrs.frozen
class GpuHolder:
    """A process holding GPU memory, described for people."""

    process: GpuProcess
    name: str | None  #: the program (psutil), None when gone or hidden
    run_id: str | None  #: the topovisor run it belongs to
    replica: str | None

    def describe(self) -> str:
        parts = [self.name or "?"]
        if self.process.used_memory_bytes is not None:
            parts.append(format_bytes(self.process.used_memory_bytes))
        if self.run_id:
            parts.append(f"run {self.run_id}" + (f" replica {self.replica}" if self.replica else ""))
        return f"pid {self.process.pid} ({', '.join(parts)})"


def describe_holders(processes: Sequence[GpuProcess]) -> list[GpuHolder]:
    """Name each process and find its run: by the mark in its environment (descendants carry it too),
    else by the leader pids (with create times) recorded in the runs' manifests."""
    holders = []
    recorded: dict[int, tuple[str, str]] | None = None
    for gpu_process in processes:
        name = run_id = replica = None
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(gpu_process.pid)
            name = process.name()
            with contextlib.suppress(psutil.Error):
                environ = process.environ()
                run_id, replica = environ.get(RUN_ID_ENV), environ.get(REPLICA_ENV)
        if run_id is None:
            if recorded is None:
                recorded = _recorded_leaders()
            run_id, replica = recorded.get(gpu_process.pid, (None, None))
        holders.append(GpuHolder(gpu_process, name, run_id, replica))
    return holders


def _foreign_and_new(process: GpuProcess, gpus: Collection[int], before: frozenset[tuple[int, int]] | None) -> bool:
    """Listed on one of the run's GPUs since it began, under a pid of another namespace (none here)."""
    if before is None or process.gpu not in gpus or (process.gpu, process.pid) in before:
        return False
    return not psutil.pid_exists(process.pid)


def _recorded_leaders() -> dict[int, tuple[str, str]]:
    """pid -> (run id, replica) for the live leaders of the indexed runs (pid and create time match)."""
    from .._records.index import list_runs

    found: dict[int, tuple[str, str]] = {}
    with contextlib.suppress(OSError):
        for record in list_runs():
            for replica in record.replicas():
                if replica.pid is not None and replica.process() is not None:
                    found[replica.pid] = (record.run_id, replica.name)
    return found


def runtime_inventory(plan: Plan, gpus: GpuInventory | str | None) -> GpuInventory | None:
    """The inventory a run checks against: the one given, else NVML when the plan assigned GPUs."""
    if isinstance(gpus, str):
        return open_inventory(gpus)
    if gpus is not None or not any(r.gpus for s in plan.services for r in s.replicas):
        return gpus
    try:
        return open_inventory(None)
    except GpuUnavailable as exc:
        raise ConfigError(
            f"the plan assigns GPUs but {exc}; pass the inventory it was planned against (gpus=...) or {exc.hint}",
            source=plan.source,
        ) from None


def check_free_memory(plan: Plan, inventory: GpuInventory, *, replicas: Collection[str] | None = None) -> None:
    """Each assigned GPU of a replica with ``min_free_memory`` (of ``replicas`` only, when given: those a
    scale adds) has that much free now; otherwise one ``ConfigError`` naming the replica, the GPU and the
    processes holding its memory."""
    needs = [
        (service, replica, service.gpus.min_free_memory_bytes)
        for service in plan.services
        for replica in service.replicas
        if service.gpus is not None and service.gpus.min_free_memory_bytes is not None and replica.gpus
        if replicas is None or replica.name in replicas
    ]
    if not needs:
        return
    devices = {d.index: d for d in inventory.devices()}
    by_gpu: dict[int, list[GpuProcess]] = {}
    for process in inventory.processes():
        by_gpu.setdefault(process.gpu, []).append(process)
    problems = []
    for service, replica, needed in needs:
        for index in replica.gpus:
            device = devices.get(index)
            if device is None:
                problems.append(f"service '{service.name}', field 'gpus': {replica.name}: GPU {index} is gone")
                continue
            if device.memory_free_bytes >= needed:
                continue
            holders = describe_holders(by_gpu.get(index, []))
            held = ", ".join(h.describe() for h in holders) or "no process listed (another container or user?)"
            problems.append(
                f"service '{service.name}', field 'gpus': {replica.name} needs {format_bytes(needed)} free on "
                f"GPU {index} (min_free_memory), it has {format_bytes(device.memory_free_bytes)} free of "
                f"{format_bytes(device.memory_total_bytes)}; held by {held}"
            )
    if problems:
        raise ConfigError(problems, source=plan.source)


def listed_before(inventory: GpuInventory | None, plan: Plan) -> frozenset[tuple[int, int]] | None:
    """``(gpu, pid)`` of every process the GPUs list before the run's first spawn, when the run uses GPUs
    (None otherwise, or when the driver cannot say): ``wait_released`` tells the run's own from them."""
    if inventory is None or not any(r.gpus for s in plan.services for r in s.replicas):
        return None
    try:
        return frozenset((p.gpu, p.pid) for p in inventory.processes())
    except Exception:  # the driver cannot list processes: the release wait then matches our pids only
        return None


async def wait_released(
    inventory: GpuInventory,
    pids: Mapping[int, str],
    *,
    seconds: float | None = None,
    gpus: Collection[int] = (),
    before: frozenset[tuple[int, int]] | None = None,
) -> list[GpuProcess]:
    """Poll until the GPUs list none of ``pids`` (or ``seconds`` passed, default ``GPU_RELEASE_SECONDS``);
    returns what is still listed. The driver frees a context only after the process is gone, a moment
    after its exit, so a next run started at once could otherwise find the memory still taken.

    With ``before`` (``listed_before``), a process on one of the run's ``gpus`` that was not listed before
    it and whose pid is no process here counts as the run's too: in a container without the host's pid
    namespace, drivers that do not translate pids list the host's, which never match ours, and the wait
    would end at once with the memory still held."""
    limit = GPU_RELEASE_SECONDS if seconds is None else seconds
    deadline = time.monotonic() + limit
    delay = _POLL_SECONDS[0]
    while True:
        try:
            listed = await anyio.to_thread.run_sync(inventory.processes)
        except Exception:  # the driver went away: nothing more to learn
            return []
        left = [p for p in listed if p.pid in pids or _foreign_and_new(p, gpus, before)]
        if not left or time.monotonic() >= deadline:
            return left
        await anyio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, _POLL_SECONDS[1])
