"""Who listens on a port we want: a stale server of an earlier run is named, with the command to stop it."""

from __future__ import annotations

import contextlib
from collections.abc import Collection

import attrs
import psutil

from .._marks import REPLICA_ENV, RUN_ID_ENV
from .paths import index_path, runs_dir

__all__ = ["PortOwner", "port_owner", "port_owners"]

_LOCAL_ADDRESSES = frozenset({"127.0.0.1", "0.0.0.0", "::1", "::", "::ffff:127.0.0.1"})


@attrs.frozen
class PortOwner:
    """Who listens on a port we want: pid and command line, and the run it belongs to if it has a mark."""

    port: int
    address: str
    pid: int | None  #: None when the socket belongs to another user's process
    cmdline: tuple[str, ...]
    run_id: str | None
    replica: str | None
    recorded: bool  #: ``run_id`` has a record here, so ``supervisor stop/gc`` can reach it

    def describe(self) -> str:
        """One line for a person: who holds the port and what to do about it."""
        if self.pid is None:
            return f"port {self.port} is already in use on {self.address} by another user's process"
        command = " ".join(self.cmdline) or "?"
        text = f"port {self.port} is already in use on {self.address} by pid {self.pid} ({command})"
        if self.run_id is not None:
            text += f", a leftover of run {self.run_id}" + (f" (replica {self.replica})" if self.replica else "")
            text += f"; stop it with: supervisor stop {self.run_id}" if self.recorded else "; it has no record here"
        return text


def port_owners(ports: Collection[int]) -> dict[int, PortOwner]:
    """Listeners on loopback or wildcard addresses for each of ``ports`` (one scan of the socket table)."""
    wanted = set(ports)
    owners: dict[int, PortOwner] = {}
    with contextlib.suppress(psutil.AccessDenied):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status != psutil.CONN_LISTEN or not conn.laddr or conn.laddr.port not in wanted:
                continue
            if conn.laddr.ip not in _LOCAL_ADDRESSES or conn.laddr.port in owners:
                continue
            owners[conn.laddr.port] = _owner(conn.laddr.port, conn.laddr.ip, conn.pid)
    return owners


def port_owner(port: int) -> PortOwner | None:
    """Who listens on ``port`` (127.0.0.1, 0.0.0.0, ::1 or ::), or None if it is free."""
    return port_owners([port]).get(port)


def _owner(port: int, address: str, pid: int | None) -> PortOwner:
    cmdline: list[str] = []
    environ: dict[str, str] = {}
    if pid is not None:
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            cmdline = process.cmdline()
            environ = process.environ()
    run_id = environ.get(RUN_ID_ENV)
    recorded = False
    if run_id is not None:
        recorded = index_path(run_id).is_file() or (runs_dir() / run_id / "manifest.json").is_file()
    replica = environ.get(REPLICA_ENV)
    return PortOwner(port, address, pid, tuple(cmdline), run_id, replica, recorded)
