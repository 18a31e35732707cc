"""Where a replica's process runs: the seam between the runtime and the machine.

The runtime only starts a process, reads its output, signals its group, waits for its exit and releases
it; a ``Launcher`` turns "start this argv" into such a handle. ``LocalLauncher`` runs it on this machine;
``_host.slurm.SlurmLauncher`` runs a replica that has a placement as one ``srun`` step on its nodes (the group
picks one per replica: ``launcher_for``), without the runtime changing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from .._marks import REPLICA_ENV
from .containment import RunContainment
from .process import ChildProcess

__all__ = ["LaunchedProcess", "Launcher", "LocalLauncher"]


class LaunchedProcess(Protocol):
    """A started replica process as the runtime sees it."""

    @property
    def pid(self) -> int: ...

    @property
    def create_time(self) -> float: ...

    @property
    def output_fd(self) -> int: ...  #: stdout+stderr, non-blocking; the runtime drains and closes it

    @property
    def reaped(self) -> bool: ...  #: its group id may name someone else's group now: never signal it

    async def wait(self) -> int: ...  #: the exit status (-N: killed by signal N), keeping its group ours

    def signal_group(self, signum: int) -> None: ...

    def reap(self) -> None: ...  #: release it once its group was stopped


class Launcher(Protocol):
    """Starts replica processes; raises OSError when it cannot."""

    def launch(self, argv: Sequence[str], env: Mapping[str, str], cwd: str | None) -> LaunchedProcess: ...


class LocalLauncher:
    """A child of this process, leader of a new session, output on one pipe (``ChildProcess``), inside its
    replica's cgroup when the run is contained by one (the replica is named in ``env``)."""

    def __init__(self, containment: RunContainment | None = None) -> None:
        self.containment = containment

    def launch(self, argv: Sequence[str], env: Mapping[str, str], cwd: str | None) -> LaunchedProcess:
        name = env.get(REPLICA_ENV)
        if self.containment is not None and name:
            argv = self.containment.enter(name, argv, env, cwd)
        return ChildProcess.spawn(argv, env, cwd)
