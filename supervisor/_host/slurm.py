"""A replica on Slurm nodes: one ``srun --jobid J --overlap`` step, one task per node, as a local process handle.

The runtime watches, signals and waits for the local ``srun`` exactly as for any replica process; only
the signals change meaning (``../shared/SLURM.md`` has the measurements):

- srun runs in its own session with a parent-death SIGKILL. A SIGKILLed supervisor takes srun down at
  once, and srun's shepherd child (it blocks SIGTERM, so a polite stop does not hurt it) cancels the step:
  the tasks are gone within milliseconds.
- A stop signal becomes ``scancel -s SIG J.S``: every task gets it, and srun exits with the tasks' code.
  SIGTERM to srun itself would SIGKILL the tasks ("forcing job termination"): never sent.
- SIGKILL becomes ``scancel J.S`` (the tasks get SIGKILL) plus SIGKILL to srun alone, not its group: the
  shepherd must live to cancel the step.

The step is named ``<replica>.<token>``; its id (``J.S``) is looked up by that name in ``squeue`` the
first time a signal is sent. Tasks run on their node with srun's environment minus the run's mark: on
emulated nodes that share this host, the local process scan must not find (and signal twice) what Slurm
stops. A multi-node replica whose tasks' commands differ (``{node_rank}``) runs ``sh -c`` with a ``case``
on ``SLURMD_NODENAME``, so that each node gets its own command whatever order Slurm lists the nodes in.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence

import anyio
import anyio.to_thread
import attrs

from .._marks import REPLICA_ENV, RUN_ID_ENV
from .._spec.placement import ReplicaPlacement
from .process import ChildProcess
from .slurm_alloc import SlurmAllocation, SlurmError, job_nodelist

__all__ = ["SlurmLauncher", "SlurmStep", "srun_argv"]

_PR_SET_PDEATHSIG = 1
_LOOKUP_SECONDS = 3.0  #: a step that srun has not registered by then failed to start
_KEEP_SLURM_ENV = frozenset({"SLURM_CONF"})


def srun_argv(allocation: SlurmAllocation, placement: ReplicaPlacement, step_name: str, cwd: str | None) -> list[str]:
    """The ``srun`` command for one replica: one task per node of its placement."""
    count = len(placement.nodes)
    argv = [
        "srun",
        "--jobid",
        allocation.job_id,
        "--overlap",
        "--nodes",
        str(count),
        "--ntasks",
        str(count),
        "--ntasks-per-node",
        "1",
        "--nodelist",
        ",".join(node.name for node in placement.nodes),
        "--unbuffered",
        "--kill-on-bad-exit=1",  # one task of a multi-node replica dies: the replica is down
        "--job-name",
        step_name,
    ]
    if cwd:
        argv += ["--chdir", cwd]
    if placement.gpus_per_node:
        argv += ["--gpus-per-node", str(placement.gpus_per_node)]
    return [*argv, *task_argv(placement)]


def task_argv(placement: ReplicaPlacement) -> list[str]:
    """What each task runs: the command itself when every node runs the same one, else a dispatch on
    the node's name."""
    argvs = placement.argvs
    if len(set(argvs)) == 1:
        return list(argvs[0])
    pairs = zip(placement.nodes, argvs, strict=True)
    cases = "".join(f"  {shlex.quote(node.name)}) exec {shlex.join(argv)} ;;\n" for node, argv in pairs)
    script = (
        f'case "$SLURMD_NODENAME" in\n{cases}esac\n'
        'echo "topovisor: no command for node $SLURMD_NODENAME" >&2\nexit 127\n'
    )
    return ["/bin/sh", "-c", script]


def step_environment(env: Mapping[str, str]) -> dict[str, str]:
    """srun's environment (tasks inherit it): without the run's mark, and without the caller's job
    geometry (an ``sbatch -n 8`` would otherwise size every step)."""
    return {
        name: value
        for name, value in env.items()
        if name != RUN_ID_ENV and (not name.startswith(("SLURM_", "SRUN_")) or name in _KEEP_SLURM_ENV)
    }


_LIBC: list[ctypes.CDLL] = []


def _die_with(parent: int) -> Callable[[], None]:
    """A preexec: SIGKILL when ``parent`` dies (checked once set, in case it died before)."""
    if not _LIBC:
        _LIBC.append(ctypes.CDLL(None, use_errno=True))
    libc = _LIBC[0]

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


class SlurmLauncher:
    """Starts one replica's step on the nodes of its placement, inside ``allocation``."""

    def __init__(self, allocation: SlurmAllocation, placement: ReplicaPlacement) -> None:
        self.allocation = allocation
        self.placement = placement

    def launch(self, argv: Sequence[str], env: Mapping[str, str], cwd: str | None) -> SlurmStep:
        """Each task runs its node's command (``placement.argvs``); ``argv`` (the replica's) on every
        node when the placement has none."""
        replica = env.get(REPLICA_ENV, "replica")
        step_name = f"{replica}.{secrets.token_hex(3)}"
        srun_env = step_environment(env)
        placement = self.placement if self.placement.argvs else attrs.evolve(self.placement, argvs=(tuple(argv),))
        argv = srun_argv(self.allocation, placement, step_name, cwd)
        try:
            child = ChildProcess.spawn(argv, srun_env, None, preexec_fn=_die_with(os.getpid()))
        except OSError as exc:  # the replica's own program is started by Slurm, on the node
            raise OSError(exc.errno, f"srun (Slurm's client) does not run here: {exc.strerror or exc}") from None
        nodes = [node.name for node in self.placement.nodes]
        return SlurmStep(child, self.allocation.job_id, step_name, srun_env, nodes)


class SlurmStep:
    """A running step, through its local ``srun``: the runtime's ``LaunchedProcess``."""

    def __init__(
        self, child: ChildProcess, job_id: str, step_name: str, env: Mapping[str, str], nodes: Sequence[str] = ()
    ) -> None:
        self.child = child
        self.job_id = job_id
        self.step_name = step_name
        self.nodes = tuple(nodes)  #: Slurm's names of the step's nodes
        self._signalled = False  #: we asked it to stop: its exit is ours, not a node's failure
        self._env = dict(env)
        self._step_id: str | None = None
        self._scancels: list[subprocess.Popen[bytes]] = []

    @property
    def pid(self) -> int:
        return self.child.pid

    @property
    def create_time(self) -> float:
        return self.child.create_time

    @property
    def output_fd(self) -> int:
        return self.child.output_fd

    @property
    def reaped(self) -> bool:
        return self.child.reaped

    async def wait(self) -> int:
        """srun's exit code: the tasks' own; killed by SIGKILL when a node of the step left the job
        (a node failure, which srun may report as 0 when the tasks exited on the signal it sent)."""
        code = await self.child.wait()
        self._scancels = [p for p in self._scancels if p.poll() is None]
        if code == 0 and not self._signalled and await anyio.to_thread.run_sync(self._lost_a_node):
            return -signal.SIGKILL
        return code

    def _lost_a_node(self) -> bool:
        try:
            names = set(job_nodelist(self.job_id, self._env))
        except SlurmError:
            return False  # the job is gone: its end is reported elsewhere
        return any(node not in names for node in self.nodes)

    def step_id(self) -> str | None:
        """``J.S``, looked up by the step's name (cached); None while srun has not registered it, or
        once it is gone."""
        if self._step_id is None:
            deadline = time.monotonic() + _LOOKUP_SECONDS
            delay = 0.005
            while self._step_id is None and self.child.peek_exit() is None:  # a failed srun ends the wait
                self._step_id = self._lookup()
                if self._step_id is not None or time.monotonic() > deadline:
                    break
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
        return self._step_id

    def _lookup(self) -> str | None:
        try:
            result = subprocess.run(
                ["squeue", "-h", "-s", "-j", self.job_id, "-o", "%i %j"],
                env=self._env,
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        for line in result.stdout.splitlines():
            words = line.split()
            if len(words) == 2 and words[1] == self.step_name:
                return words[0]
        return None

    def signal_group(self, signum: int) -> None:
        """Every task of the step gets ``signum`` through Slurm; SIGKILL also ends srun (not its shepherd)."""
        if self.child.reaped:
            return
        self._signalled = True
        step = self.step_id() if self.child.peek_exit() is None else self._step_id
        if step is not None:
            argv = ["scancel", step] if signum == signal.SIGKILL else ["scancel", "-s", str(int(signum)), step]
            with contextlib.suppress(OSError):
                self._scancels.append(
                    subprocess.Popen(argv, env=self._env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                )
        if (signum == signal.SIGKILL or step is None) and self.child.returncode is None:
            # without a step id the shepherd is the only way to reach the tasks: it cancels the step
            with contextlib.suppress(OSError):
                os.kill(self.child.pid, signal.SIGKILL)

    def reap(self) -> None:
        self.child.reap()
        if self.child.reaped:
            self._collect_scancels()

    def _collect_scancels(self) -> None:
        for popen in self._scancels:
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(2.0)  # scancel answers in milliseconds; a stuck one is left to the final reap
        self._scancels = [p for p in self._scancels if p.returncode is None]
