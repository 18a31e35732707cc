"""``supervisor gpus``: each GPU of this machine with its memory and the processes (and runs) holding it.

Exit codes: 0 listed, 2 no NVML (or amdsmi) here (nothing to list; ``--gpus 8x80GB`` or ``--gpus 8xMI300X``
shows a simulated node).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from .._errors import ConfigError

if TYPE_CHECKING:  # loaded by the command itself: the parser of every other command stays light
    from .._host.gpu_inventory import GpuInventory, GpuProcess
    from .context import Invocation

__all__ = ["gpus_command", "render_gpus"]

EXIT_OK = 0
EXIT_BAD_INPUT = 2


def gpus_command(call: Invocation) -> int:
    args = call.args
    from .._host.gpu_inventory import GpuUnavailable
    from .._host.gpu_visible import open_inventory

    try:
        inventory = open_inventory(args.gpus)
        text = render_gpus(inventory)
    except ConfigError as exc:  # a bad --gpus, or no NVML here: GpuUnavailable says what to do about its cause
        hint = f"; {exc.hint}" if isinstance(exc, GpuUnavailable) and not args.gpus else ""
        print(f"supervisor: error: {exc}{hint}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(text)
    return EXIT_OK


def render_gpus(inventory: GpuInventory) -> str:
    """One block per GPU: index, name, bus id, memory used of total, then one line per holder."""
    from .._host.gpu_inventory import format_bytes, gpu_vendor, link_name
    from .._runtime.gpu_checks import describe_holders

    link = link_name(gpu_vendor(inventory)).lower()
    devices = inventory.devices()
    by_gpu: dict[int, list[GpuProcess]] = {}
    for process in inventory.processes():
        by_gpu.setdefault(process.gpu, []).append(process)
    lines = [f"{len(devices)} GPUs on {inventory.description}"]
    for device in devices:
        used = f"{format_bytes(device.memory_used_bytes)} / {format_bytes(device.memory_total_bytes)} used"
        peers = sorted(inventory.nvlink_peers(device.index))
        nvlink = f"  {link}: {','.join(map(str, peers))}" if peers else ""
        mig = f"  {device.divided}" if device.divided else ""
        lines.append(f"GPU {device.index}  {device.name}  {device.pci_bus_id}  {used}{mig}{nvlink}")
        holders = describe_holders(by_gpu.get(device.index, []))
        lines.extend(f"    {holder.describe()}" for holder in holders)
        if not holders:
            lines.append("    (no process)")
    return "\n".join(lines)
