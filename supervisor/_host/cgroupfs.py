"""Where this host's cgroups are and which of them this process may use: read, never written.

A run is contained in a cgroup nested under the supervisor's own (never at the hierarchy's root: a sandbox's,
container's or systemd unit's accounting keeps covering the replicas). This module finds those cgroups from
``/proc/self/mountinfo`` and ``/proc/self/cgroup``: the unified (v2) hierarchy wherever it is mounted
(``/sys/fs/cgroup`` on a systemd host, ``/sys/fs/cgroup/unified`` on a hybrid one), and each v1 hierarchy by
controller (``freezer``, ``memory``, ``cpu``, ``pids``...). Both texts can be given, so a test reads a fake
layout from a temporary tree (``CgroupHost.read(mountinfo=..., cgroup=...)``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import attrs

__all__ = ["DELEGATION_HINT", "CgroupHost", "Hierarchy", "read_small_file"]

#: how a user who is not root gets a cgroup subtree of their own (systemd's delegation)
DELEGATION_HINT = "systemd-run --user --scope -p Delegate=yes supervisor run FILE (or run it as root)"
_V1_CONTROLLERS = frozenset({"freezer", "memory", "cpu", "cpuacct", "pids", "cpuset", "devices", "blkio", "io"})


@attrs.frozen
class Hierarchy:
    """One mounted cgroup hierarchy and this process's cgroup in it."""

    mount: Path  #: where it is mounted
    root: str  #: the mount's root inside the hierarchy ("/" unless a bind mount of a subtree)
    own: str  #: this process's cgroup, as /proc/self/cgroup names it
    read_only: bool

    @property
    def own_dir(self) -> Path:
        """This process's cgroup as a directory (its path relative to the mount's root)."""
        relative = self.own[len(self.root) :] if self.own.startswith(self.root) else self.own
        return self.mount / relative.lstrip("/")

    def why_unusable(self, *, procs_file: str) -> str | None:
        """Why a child cgroup cannot be made here and processes moved into it; None when they can."""
        if self.read_only:
            return f"the cgroup filesystem at {self.mount} is mounted read-only"
        own = self.own_dir
        if not own.is_dir():
            return f"this process's cgroup {own} is not visible (another cgroup namespace?)"
        if not os.access(own, os.W_OK) or not os.access(own / procs_file, os.W_OK):
            who = "not root, and it is not delegated to you" if os.geteuid() != 0 else "not writable"
            return f"{own} is not writable by uid {os.geteuid()} ({who})"
        return None


@attrs.frozen
class CgroupHost:
    """The cgroup hierarchies this process sees: the unified one (if mounted) and the v1 ones by controller."""

    unified: Hierarchy | None
    v1: Mapping[str, Hierarchy] = attrs.field(factory=dict)  #: controller -> its hierarchy

    @classmethod
    def read(cls, *, mountinfo: str | None = None, cgroup: str | None = None) -> CgroupHost:
        """This process's view (or the view the given texts describe); an empty one off Linux."""
        try:
            if mountinfo is None:
                mountinfo = Path("/proc/self/mountinfo").read_text()
            if cgroup is None:
                cgroup = Path("/proc/self/cgroup").read_text()
        except OSError:
            return cls(None)
        own_v2: str | None = None
        own_v1: dict[str, str] = {}
        for line in cgroup.splitlines():
            parts = line.split(":", 2)
            if len(parts) != 3:
                continue
            _, controllers, path = parts
            if parts[0] == "0" and controllers == "":
                own_v2 = path
            for controller in controllers.split(","):
                if controller:
                    own_v1[controller] = path
        unified: Hierarchy | None = None
        v1: dict[str, Hierarchy] = {}
        for line in mountinfo.splitlines():
            before, _, after = line.partition(" - ")
            fields, tail = before.split(), after.split()
            if len(fields) < 6 or len(tail) < 3:
                continue
            root, mount, options = _unescape(fields[3]), Path(_unescape(fields[4])), fields[5].split(",")
            fstype, super_options = tail[0], tail[2].split(",")
            read_only = "ro" in options or "ro" in super_options
            if fstype == "cgroup2" and unified is None and own_v2 is not None:
                unified = Hierarchy(mount, root, own_v2, read_only)
            elif fstype == "cgroup":
                for controller in super_options:
                    if (controller in _V1_CONTROLLERS or controller.startswith("name=")) and controller in own_v1:
                        v1.setdefault(controller, Hierarchy(mount, root, own_v1[controller], read_only))
        return cls(unified, v1)

    def unified_controllers(self, directory: Path) -> frozenset[str]:
        """The controllers a child of ``directory`` could have (its ``cgroup.controllers``)."""
        try:
            return frozenset((directory / "cgroup.controllers").read_text().split())
        except OSError:
            return frozenset()


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (``\\040``)."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def read_small_file(path: str | Path) -> bytes:
    """A small kernel file (a cgroup's counter, a ``/proc`` stat) whole, with raw system calls: a sample
    reads a few per replica, and ``open()``'s buffered file object costs about three times as much."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = [os.read(fd, 65536)]
        while len(chunks[-1]) == 65536:  # a kernel file ends at a short read (cgroup.procs may be long)
            chunks.append(os.read(fd, 65536))
        return b"".join(chunks)
    finally:
        os.close(fd)
