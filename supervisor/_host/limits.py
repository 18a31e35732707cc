"""Limits on a replica's cgroup (``resources: {memory_max, cpu_max, pids_max}``), and the OOM kills it saw.

A limit is set where its controller is: in the unified (v2) hierarchy when the host enables it there
(``memory.max``, ``cpu.max``, ``pids.max``), else in the v1 hierarchy of that controller, which a hybrid
host mounts beside the unified one (``memory.limit_in_bytes``, ``cpu.cfs_quota_us``, ``pids.max``). Which
controllers go where is decided once per run (``split_controllers``), before anything starts; a limit that
no hierarchy can set is refused then, naming what is missing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Sequence
from pathlib import Path

from .._spec.model import ResourceLimits

__all__ = [
    "CPU_PERIOD_USEC",
    "LimitUnavailable",
    "describe_oom",
    "enable_controllers",
    "lift_limits",
    "oom_kills",
    "set_limits",
]

CPU_PERIOD_USEC = 100_000  #: the CFS period a CPU quota is given in (the kernel's default)


class LimitUnavailable(Exception):
    """A limit asked for whose controller this host cannot give the run's cgroups."""


def enable_controllers(directories: Sequence[Path], controllers: Collection[str]) -> None:
    """Enable ``controllers`` for the children of each directory (the supervisor's own cgroup, then the
    run's): ``cgroup.subtree_control``. ``LimitUnavailable`` saying which write failed and why."""
    if not controllers:
        return
    text = " ".join(f"+{c}" for c in sorted(controllers))
    for directory in directories:
        try:
            with open(directory / "cgroup.subtree_control", "w") as file:
                file.write(text)
        except OSError as exc:
            hint = (
                " (a cgroup that holds processes cannot hand controllers to its children: run the supervisor "
                "in a cgroup of its own, e.g. systemd-run --user --scope -p Delegate=yes supervisor run FILE)"
                if exc.errno == 16  # EBUSY
                else ""
            )
            which = ", ".join(sorted(controllers))
            raise LimitUnavailable(
                f"cannot enable the {which} controller(s) in {directory}/cgroup.subtree_control: "
                f"{exc.strerror or exc}{hint}"
            ) from None


def set_limits(path: Path, extras: Sequence[Path], limits: ResourceLimits) -> None:
    """Write ``limits`` to the replica's cgroup ``path`` (v2 files) or its v1 cgroups ``extras``, before any
    process enters it. OSError when a file cannot be written."""
    if limits.memory_max_bytes is not None:
        _write_one(path, extras, [("memory.max", "memory.limit_in_bytes")], str(limits.memory_max_bytes))
    if limits.cpu_max is not None:
        quota = max(1000, round(limits.cpu_max * CPU_PERIOD_USEC))
        if (path / "cpu.max").exists():
            _write(path / "cpu.max", f"{quota} {CPU_PERIOD_USEC}")
        else:
            v1 = _first(extras, "cpu.cfs_quota_us")
            _write(v1 / "cpu.cfs_period_us", str(CPU_PERIOD_USEC))
            _write(v1 / "cpu.cfs_quota_us", str(quota))
    if limits.pids_max is not None:
        _write_one(path, extras, [("pids.max", "pids.max")], str(limits.pids_max))


#: what each limit is set to when it is taken away: v2's and v1's files, each where it exists
_UNLIMITED = {
    "memory_max": (("memory.max", "max"), ("memory.limit_in_bytes", "-1")),
    "cpu_max": (("cpu.max", f"max {CPU_PERIOD_USEC}"), ("cpu.cfs_quota_us", "-1")),
    "pids_max": (("pids.max", "max"),),
}


def lift_limits(path: Path, extras: Sequence[Path], fields: Collection[str]) -> None:
    """Take the limits ``fields`` (``memory_max``...) off the replica's cgroups. OSError when a file cannot
    be written."""
    for field in fields:
        for name, value in _UNLIMITED[field]:
            for directory in (path, *extras):
                if (directory / name).exists():
                    _write(directory / name, value)


def oom_kills(path: Path, extras: Sequence[Path] = ()) -> int:
    """How many processes the OOM killer killed in this cgroup so far (v2 ``memory.events``, v1
    ``memory.oom_control``); 0 where no memory controller counts them."""
    for file in [path / "memory.events", *(e / "memory.oom_control" for e in extras)]:
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in file.read_text().splitlines():
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    return 0


def describe_oom(code: int, memory_max_bytes: int) -> str:
    """How a replica ended whose cgroup's OOM kill count rose: the leader killed, or one of its processes."""
    limit = f"memory_max {_size_as_written(memory_max_bytes)}"
    if code == -9:
        return f"killed by the OOM killer ({limit})"
    how = f"exited with code {code}" if code >= 0 else f"killed by signal {-code}"
    return f"{how} after the OOM killer killed one of its processes ({limit})"


def _size_as_written(size: int) -> str:
    """``64GB``, ``512MiB``: the largest unit that divides it, as a topology would write it."""
    for unit, scale in (("TB", 1000**4), ("TiB", 1024**4), ("GB", 1000**3), ("GiB", 1024**3), ("MB", 1000**2),
                        ("MiB", 1024**2), ("kB", 1000), ("KiB", 1024)):  # fmt: skip
        if size % scale == 0:
            return f"{size // scale}{unit}"
    return f"{size}B"


def _write_one(path: Path, extras: Sequence[Path], names: list[tuple[str, str]], value: str) -> None:
    for v2, v1 in names:
        if (path / v2).exists():
            _write(path / v2, value)
        else:
            _write(_first(extras, v1) / v1, value)


def _first(extras: Sequence[Path], name: str) -> Path:
    for directory in extras:
        if (directory / name).exists():
            return directory
    raise FileNotFoundError(2, f"no cgroup of the replica has {name}", name)


def _write(file: Path, value: str) -> None:
    with open(file, "w") as out:
        out.write(value)
