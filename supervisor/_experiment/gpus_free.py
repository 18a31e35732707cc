"""Before a sweep's first trial: the GPUs its arms plan on must hold no process, or the first trials would
measure a machine shared with something else. Leftovers of a run whose supervisor died are stopped, with
``stop_stale``, through that run's records as ``gc --yes`` does (never by a program's name); a process of
a live run, or of no run, refuses the sweep with its run, pid and command line."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING

import anyio
import psutil

from .._errors import ConfigError

if TYPE_CHECKING:
    from .._host.gpu_inventory import GpuInventory
    from .._plan.plan import Plan
    from .._runtime.gpu_checks import GpuHolder

__all__ = ["clear_gpus"]

_RELEASE_POLL_SECONDS = 0.25  #: how often the GPUs are read again while a stopped run's memory is freed


async def clear_gpus(
    plans: Sequence[Plan],
    inventory: GpuInventory | None,
    *,
    stop_stale: bool,
    say: Callable[[str], None] | None = None,
) -> None:
    """Return once no process holds a GPU that ``plans`` assign; ``ConfigError`` (nothing started)
    naming each holder otherwise. ``inventory`` None: NVML, read only when a plan assigns GPUs."""
    from .._records.leftovers import gc_candidates
    from .._records.reclaim import stop_run
    from .._runtime.gpu_checks import GPU_RELEASE_SECONDS

    gpus = sorted({g for plan in plans for s in plan.services for r in s.replicas for g in r.gpus})
    if not gpus:
        return
    if inventory is None:
        from .._host.gpu_visible import open_inventory

        inventory = open_inventory(None)
    holders = _holders(inventory, gpus)
    stale = {record.run_id: record for record in gc_candidates()}
    stopped: set[str] = set()
    if stop_stale:
        for run_id in sorted({h.run_id for h in holders if h.run_id in stale}):
            report = await stop_run(stale[run_id], by="sweep")
            stopped.add(run_id)
            if say is not None:
                left = f"; {len(report.remaining)} survived SIGKILL" if report.remaining else ""
                say(f"stopped run {run_id} (its supervisor had died), as gc --yes does{left}")
        deadline = time.monotonic() + GPU_RELEASE_SECONDS  # the driver frees a dead process's memory a bit later
        while any(h.run_id in stopped for h in holders) and time.monotonic() < deadline:
            await anyio.sleep(_RELEASE_POLL_SECONDS)
            holders = _holders(inventory, gpus)
    if holders:
        raise ConfigError([_why(h, stale, stopped) for h in holders])


def _holders(inventory: GpuInventory, gpus: Sequence[int]) -> list[GpuHolder]:
    from .._runtime.gpu_checks import describe_holders

    listed = sorted((p for p in inventory.processes() if p.gpu in gpus), key=lambda p: (p.gpu, p.pid))
    return describe_holders(listed)


def _why(holder: GpuHolder, stale: Collection[str], stopped: set[str]) -> str:
    process = holder.process
    held = f"GPU {process.gpu}, which the sweep plans on, is held by pid {process.pid} ({_command(process.pid)})"
    if holder.run_id is None:
        return f"{held}, of no topovisor run: stop it yourself (topovisor signals only what its runs started)"
    of_run = f"{held} of run {holder.run_id}" + (f" replica {holder.replica}" if holder.replica else "")
    if holder.run_id in stopped:
        return f"{of_run}: it survived its stop (supervisor stop {holder.run_id} says more)"
    if holder.run_id in stale:
        return f"{of_run}, whose supervisor died: --stop-stale stops it through its records (as gc --yes does)"
    return f"{of_run}, which is running: let it end, or supervisor stop {holder.run_id}"


def _command(pid: int, width: int = 80) -> str:
    with contextlib.suppress(psutil.Error):
        process = psutil.Process(pid)
        text = " ".join(process.cmdline()) or process.name()
        return text if len(text) <= width else text[: width - 3] + "..."
    return "gone, or not ours to read"
