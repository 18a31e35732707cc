"""The Slurm allocation a topology runs in: the caller's own (``SLURM_JOB_ID``), or one we ask for and cancel.

Inside an allocation (under ``sbatch`` or ``salloc``) the run uses it and never cancels it: it belongs to
whoever made it. Otherwise ``salloc --no-shell`` gets one named after the run, with the topology's
``cluster.slurm`` settings, and ``release`` cancels it at teardown; it is in the run record so that
``supervisor gc`` can cancel it for a dead run, and the run's watchdog cancels it if we are SIGKILLed.
Every Slurm client command needs ``SLURM_CONF`` where the cluster has no ``/etc/slurm/slurm.conf``: it
comes from the caller's environment.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import attrs

from .._errors import SupervisorError
from .._spec.model import SlurmCluster
from .._spec.placement import ClusterNode

if TYPE_CHECKING:
    from .._spec.model import Topology

__all__ = [
    "SlurmAllocation",
    "SlurmError",
    "allocation_for",
    "cancel_job",
    "job_nodelist",
    "salloc_argv",
]

_COMMAND_SECONDS = 30.0  #: a Slurm client command that does not answer within this is stuck
_GRANTED = re.compile(rb"(?:Granted job allocation|Pending job allocation) (\d+)")


class SlurmError(SupervisorError):
    """A Slurm command failed: no allocation, a step that cannot start, a controller that does not answer."""


def slurm_command(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """Run a Slurm client command to completion; its stdout, or ``SlurmError`` with its stderr."""
    try:
        result = subprocess.run(
            list(argv),
            env=dict(env) if env is not None else None,
            capture_output=True,
            text=True,
            timeout=_COMMAND_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SlurmError(f"{argv[0]}: {exc}") from None
    if result.returncode != 0:
        raise SlurmError(f"{' '.join(argv[:3])}: {result.stderr.strip() or f'exit code {result.returncode}'}")
    return result.stdout


def cancel_job(job_id: str, env: Mapping[str, str] | None = None, *, name: str | None = None) -> bool:
    """``scancel J`` (only if it is still named ``name``, when given: a job id from an old record may be
    someone else's by now): True once Slurm took the request (also for a job that already ended)."""
    try:
        slurm_command(["scancel", *(["--name", name] if name else []), job_id], env)
    except SlurmError as exc:
        return "Invalid job id" in str(exc)  # gone already
    return True


def salloc_argv(spec: SlurmCluster, name: str) -> list[str]:
    """``salloc --no-shell`` for ``spec``: the run's name, one task per node, the user's extras last."""
    argv = ["salloc", "--no-shell", "--job-name", name, "--nodes", str(spec.nodes), "--ntasks-per-node", "1"]
    argv.append("--no-kill")  # a node failure ends only the steps on that node, not the whole allocation
    for option, value in (
        ("--partition", spec.partition),
        ("--account", spec.account),
        ("--time", spec.time),
        ("--qos", spec.qos),
        ("--constraint", spec.constraint),
    ):
        if value:
            argv += [option, value]
    return [*argv, *spec.extra]


@attrs.frozen
class SlurmAllocation:
    """A job whose nodes the run's steps go to; ``owned``: we made it, so we cancel it."""

    job_id: str
    nodes: tuple[ClusterNode, ...]
    owned: bool
    name: str = ""  #: the job's name (``salloc --job-name``); ours are ``topovisor-<topology>``

    @classmethod
    def current(cls, env: Mapping[str, str] | None = None) -> SlurmAllocation | None:
        """The allocation we run inside (``SLURM_JOB_ID``), never ours to cancel; None outside one."""
        env = os.environ if env is None else env
        job_id = env.get("SLURM_JOB_ID")
        if not job_id:
            return None
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
        if not nodelist:
            nodelist = _job_field(job_id, "NodeList", env)
        return cls(job_id, resolve_nodes(nodelist, env), owned=False)

    @classmethod
    def acquire(cls, spec: SlurmCluster, name: str, env: Mapping[str, str] | None = None) -> SlurmAllocation:
        """``salloc --no-shell``: waits while the job is pending; an interrupt (or any failure once the
        job id is known) cancels the job before raising."""
        with _interrupted_by_stop_signals():
            return cls._acquire(spec, name, dict(os.environ if env is None else env))

    @classmethod
    def _acquire(cls, spec: SlurmCluster, name: str, env: dict[str, str]) -> SlurmAllocation:
        argv = salloc_argv(spec, name)
        job_id: str | None = None
        try:
            process = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
        except OSError as exc:
            raise SlurmError(f"salloc: cannot run it: {exc.strerror or exc}") from None
        try:
            assert process.stderr is not None
            lines: list[bytes] = []
            with process.stderr:
                for line in process.stderr:  # line by line: the job id is known while it is still pending
                    lines.append(line)
                    match = _GRANTED.search(line)
                    if match and job_id is None:
                        job_id = match.group(1).decode()
            stderr = b"".join(lines)
            code = process.wait()
            if code != 0 or job_id is None or b"Granted job allocation" not in stderr:
                text = stderr.decode(errors="replace").strip()
                raise SlurmError(f"no Slurm allocation ({' '.join(argv)}): {text or f'exit code {code}'}")
            nodelist = _job_field(job_id, "NodeList", env)
            return cls(job_id, resolve_nodes(nodelist, env), owned=True, name=name)
        except BaseException:
            if process.poll() is None:
                with contextlib.suppress(OSError):
                    process.send_signal(signal.SIGINT)  # salloc revokes a pending request on SIGINT
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(5.0)
                if process.poll() is None:
                    process.kill()
                    process.wait()
            if job_id is not None:
                cancel_job(job_id, env, name=name)
            raise

    def borrowed(self) -> SlurmAllocation:
        """The same job lent to a run inside something longer (a sweep's trials): the run places its steps
        there and leaves the job to the lender, which releases it (``owned`` False)."""
        return attrs.evolve(self, owned=False)

    def release(self, env: Mapping[str, str] | None = None) -> None:
        """Cancel the allocation if we made it; one we run inside stays, for whoever made it."""
        if self.owned:
            cancel_job(self.job_id, env, name=self.name or None)


@contextlib.contextmanager
def _interrupted_by_stop_signals() -> Iterator[None]:
    """In the main thread, SIGTERM and SIGHUP interrupt a pending ``salloc`` as Ctrl-C does (by default
    they would end us at once, and the job, granted later, would be nobody's); the handlers come back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"interrupted by {signal.Signals(signum).name} while waiting for an allocation")

    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _job_field(job_id: str, field: str, env: Mapping[str, str]) -> str:
    """One field of ``scontrol show job -o J``."""
    text = slurm_command(["scontrol", "show", "job", "-o", job_id], env)
    match = re.search(rf"(?:^|\s){field}=(\S+)", text)
    if match is None:
        raise SlurmError(f"scontrol show job {job_id}: no {field} in {text.strip()!r}")
    return match.group(1)


def job_nodelist(job_id: str, env: Mapping[str, str] | None = None) -> list[str]:
    """The job's nodes now (a ``--no-kill`` job loses a node that failed)."""
    env = os.environ if env is None else env
    nodelist = _job_field(job_id, "NodeList", env)
    if nodelist in ("", "(null)"):
        return []
    return slurm_command(["scontrol", "show", "hostnames", nodelist], env).split()


def resolve_nodes(nodelist: str, env: Mapping[str, str]) -> tuple[ClusterNode, ...]:
    """``n[1-4]`` -> each node with the address services reach it by: Slurm's ``NodeAddr`` (a node's
    hostname unless configured), resolved to an IP address where it resolves."""
    names = slurm_command(["scontrol", "show", "hostnames", nodelist], env).split()
    if not names:
        raise SlurmError(f"allocation has no nodes ({nodelist!r})")
    addresses: dict[str, str] = {}
    for record in slurm_command(["scontrol", "show", "node", "-o", ",".join(names)], env).splitlines():
        name = re.search(r"NodeName=(\S+)", record)
        addr = re.search(r"NodeAddr=(\S+)", record)
        if name and addr:
            addresses[name.group(1)] = addr.group(1)
    return tuple(ClusterNode(name, _ip_of(addresses.get(name, name))) for name in names)


def _ip_of(host: str) -> str:
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return host
    for family in (socket.AF_INET, socket.AF_INET6):
        for info in infos:
            if info[0] == family:
                return str(info[4][0])
    return host


def allocation_for(topology: Topology, env: Mapping[str, str] | None = None) -> SlurmAllocation | None:
    """Where ``topology`` runs: None without ``cluster.slurm``; inside an allocation that one (never
    cancelled by us); else a new one, named after the topology, that the caller must ``release``."""
    spec = topology.cluster.slurm if topology.cluster is not None else None
    if spec is None:
        return None
    current = SlurmAllocation.current(env)
    if current is not None:
        return current
    return SlurmAllocation.acquire(spec, f"topovisor-{topology.name}", env)
