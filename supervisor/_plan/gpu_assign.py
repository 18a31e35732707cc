"""Which replica gets which GPUs: pure and deterministic, on a snapshot of the node (no I/O here).

Replicas are served in plan order (services in start order, replicas in index order). Explicit ``ids``
are reserved first, so a count never takes a GPU that a later service named. A count takes the lowest
free indices; ``contiguous`` takes consecutive ones; a GPU in MIG mode, or an AMD GPU in partition mode, is
never handed out (CUDA or HIP would see one of its parts, not the GPU); a replica of more than one GPU
prefers a set fully joined by NVLink or XGMI (the lowest such set), and falls back to the lowest free
indices. Anything that cannot be honoured (more GPUs than the node has, one GPU wanted twice, a GPU that
does not exist) is reported as one problem that shows the whole plan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from .._host.gpu_inventory import GpuDevice, GpuInventory, GpuUnavailable, format_bytes, gpu_vendor
from .._spec.model import GpuRequest

__all__ = ["GpuNode", "GpuWant", "assign_gpus"]

_VENDOR_NAMES = {"nvidia": "NVIDIA", "amd": "AMD"}
_SEARCH_STEPS = 100_000  #: bound on the NVLink set search (a 16-GPU node needs far fewer)


@attrs.frozen
class GpuNode:
    """The node as planning sees it: its devices and their NVLink (XGMI) peers, read once."""

    description: str
    devices: tuple[GpuDevice, ...]
    peers: Mapping[int, frozenset[int]] = attrs.field(eq=False)
    vendor: str = "nvidia"  #: ``gpu_inventory.NVIDIA`` or ``AMD``: the variables its replicas get

    @classmethod
    def read(cls, inventory: GpuInventory) -> GpuNode:
        try:
            devices = tuple(sorted(inventory.devices(), key=lambda d: d.index))
            peers = {d.index: frozenset(inventory.nvlink_peers(d.index)) for d in devices}
        except GpuUnavailable:
            raise
        except Exception as exc:  # a driver error while reading: the same as no NVML for planning
            raise GpuUnavailable(f"cannot read the GPUs of {inventory.description}: {exc}") from None
        return cls(inventory.description, devices, peers, gpu_vendor(inventory))

    def summary(self) -> str:
        if not self.devices:
            return f"{self.description}: no GPU"
        sizes = sorted({d.memory_total_bytes for d in self.devices})
        memory = ", ".join(format_bytes(size) for size in sizes)
        indices = _ranges([d.index for d in self.devices])
        mig = [d.index for d in self.devices if d.mig]
        in_mig = f"; in MIG mode, not handed out: {_ranges(mig)}" if mig else ""
        split = [d.index for d in self.devices if d.partition and not d.mig]
        in_mig += f"; partitioned, not handed out: {_ranges(split)}" if split else ""
        return f"{self.description}: {len(self.devices)} GPUs ({indices}; {memory} each{in_mig})"


@attrs.frozen
class GpuWant:
    """One replica's request, in plan order."""

    service: str
    replica: str
    request: GpuRequest


def assign_gpus(wants: Sequence[GpuWant], node: GpuNode) -> tuple[dict[str, tuple[int, ...]], str | None]:
    """Each replica's GPU indices, and None, or a problem that shows the plan and what the node has."""
    known = {d.index: d for d in node.devices}
    owner: dict[int, str] = {}
    given: dict[str, tuple[int, ...]] = {}
    refused: dict[str, str] = {}
    for want in wants:  # a program for the other vendor's GPUs (TensorRT-LLM on AMD) is refused, nothing given
        wanted = want.request.vendor
        if wanted is not None and want.request.per_replica and wanted != node.vendor:
            refused[want.replica] = (
                f"runs on {_VENDOR_NAMES.get(wanted, wanted)} GPUs only (gpus: vendor: {wanted}); "
                f"{node.description} has {_VENDOR_NAMES.get(node.vendor, node.vendor)} GPUs"
            )
            given[want.replica] = ()
    for want in wants:  # explicit ids first: a count must not take a GPU that someone named
        ids = want.request.ids
        if ids is None or want.replica in refused:
            continue
        reasons = []
        for index in ids:
            if index not in known:
                reasons.append(f"GPU {index}, which the node does not have")
            elif known[index].mig:
                reasons.append(f"GPU {index}, which is in MIG mode (CUDA would see one of its instances)")
            elif known[index].partition:
                split = known[index].partition
                reasons.append(f"GPU {index}, which is partitioned ({split}: HIP sees its partitions, not the GPU)")
            elif index in owner:
                reasons.append(f"GPU {index}, already given to {owner[index]}")
        if reasons:
            refused[want.replica] = "wants " + "; and ".join(reasons)
        else:
            owner.update({index: want.replica for index in ids})
        given[want.replica] = tuple(i for i in ids if owner.get(i) == want.replica)
    for want in wants:
        request = want.request
        if request.ids is not None or want.replica in refused:
            continue
        free = [d.index for d in node.devices if d.index not in owner and d.divided is None]
        chosen = _choose(request.count, free, request.contiguous, node.peers)
        if chosen is None:
            kind = " contiguous" if request.contiguous else ""
            free_text = ", ".join(map(str, free)) if free else "none"
            refused[want.replica] = f"wants {request.count}{kind} GPUs; free: {free_text}"
            given[want.replica] = ()
            continue
        owner.update({index: want.replica for index in chosen})
        given[want.replica] = chosen
    for want in wants:  # a size no GPU of the node can ever have free
        needed = want.request.min_free_memory_bytes
        for index in given[want.replica]:
            if needed is not None and needed > known[index].memory_total_bytes and want.replica not in refused:
                refused[want.replica] = (
                    f"needs {format_bytes(needed)} free on GPU {index} (min_free_memory), "
                    f"which has {format_bytes(known[index].memory_total_bytes)} in all"
                )
    if not refused:
        return given, None
    return given, _plan_message(wants, given, refused, node)


def _plan_message(
    wants: Sequence[GpuWant], given: Mapping[str, tuple[int, ...]], refused: Mapping[str, str], node: GpuNode
) -> str:
    total = sum(w.request.per_replica for w in wants)
    services = list(dict.fromkeys(w.service for w in wants if w.replica in refused))
    head = ", ".join(f"'{s}'" for s in services)
    lines = [
        f"service {head}, field 'gpus': the GPU plan does not fit the node "
        f"({total} GPUs asked in all; {node.summary()})"
    ]
    width = max(len(w.replica) for w in wants)
    for want in wants:
        if want.replica in refused:
            lines.append(f"    {want.replica:<{width}}  REFUSED: {refused[want.replica]}")
        else:
            lines.append(f"    {want.replica:<{width}}  -> GPU {', '.join(map(str, given[want.replica])) or '-'}")
    return "\n".join(lines)


def _choose(
    count: int, free: Sequence[int], contiguous: bool, peers: Mapping[int, frozenset[int]]
) -> tuple[int, ...] | None:
    if count <= 0:
        return ()
    if len(free) < count:
        return None
    if contiguous:
        free_set = set(free)
        windows = [tuple(range(start, start + count)) for start in free]
        windows = [w for w in windows if free_set.issuperset(w)]
        joined = [w for w in windows if _joined(w, peers)]
        candidates = joined or windows
        return candidates[0] if candidates else None
    if count > 1:
        found = _lowest_joined_set(count, free, peers)
        if found is not None:
            return found
    return tuple(free[:count])


def _joined(indices: Sequence[int], peers: Mapping[int, frozenset[int]]) -> bool:
    return all(b in peers.get(a, frozenset()) for i, a in enumerate(indices) for b in indices[i + 1 :])


def _lowest_joined_set(count: int, free: Sequence[int], peers: Mapping[int, frozenset[int]]) -> tuple[int, ...] | None:
    """The lexicographically lowest ``count`` free GPUs that are pairwise NVLink (XGMI) peers (bounded search)."""
    steps = 0

    def extend(chosen: list[int], start: int) -> tuple[int, ...] | None:
        nonlocal steps
        if len(chosen) == count:
            return tuple(chosen)
        for position in range(start, len(free) - (count - len(chosen)) + 1):
            steps += 1
            if steps > _SEARCH_STEPS:
                return None
            candidate = free[position]
            if all(candidate in peers.get(c, frozenset()) for c in chosen):
                found = extend([*chosen, candidate], position + 1)
                if found is not None:
                    return found
        return None

    return extend([], 0)


def _ranges(indices: Sequence[int]) -> str:
    """``0-7`` or ``0-3, 6``."""
    parts: list[str] = []
    start = previous = None
    for index in sorted(indices):
        if start is None:
            start = previous = index
        elif previous is not None and index == previous + 1:
            previous = index
        else:
            parts.append(f"{start}" if start == previous else f"{start}-{previous}")
            start = previous = index
    if start is not None:
        parts.append(f"{start}" if start == previous else f"{start}-{previous}")
    return ", ".join(parts)
