"""One OS process: spawn in its own session, wait for its exit without threads, signal its whole tree.

The leader's exit is read without reaping it (``waitid(P_PIDFD, WNOWAIT)``): while its zombie stands, its
pid and process-group id cannot be handed to anyone else, so ``signal_group`` can only reach our own
processes. It is reaped (``reap``) once its group was stopped; after that the group is never signalled.

Every process we start carries ``TOPOVISOR_RUN_ID`` in its environment, and descendants inherit it. That
finds grandchildren that left the process group (``setsid``) or were re-parented, so teardown can reach
them without ever killing by name (``proctable.marked_processes``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from .._marks import REPLICA_ENV, RUN_ID_ENV

if TYPE_CHECKING:  # anyio and psutil load when first used: a spawn before the event loop needs neither
    import psutil

__all__ = [
    "REPLICA_ENV",
    "RUN_ID_ENV",
    "ChildProcess",
    "create_time",
    "describe_exit",
    "signal_processes",
]

_PIPE_SIZE = 1 << 20  # F_SETPIPE_SZ: room for bursts while the loop is busy
_F_SETPIPE_SZ = 1031


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


class ChildProcess:
    """A spawned child: its pid (= process group id), output pipe and exit status."""

    def __init__(self, popen: subprocess.Popen[bytes], output_fd: int, spawned_at: float) -> None:
        self.popen = popen
        self.spawned_at = spawned_at  #: ``time.monotonic()`` just before the spawn
        self.pid = popen.pid
        self.output_fd = output_fd
        self.create_time = create_time(popen.pid)
        self.returncode: int | None = None
        self.reaped = False  #: the pid is released: it may name someone else's process (group) now
        self._pidfd = _pidfd_open(popen.pid)

    @classmethod
    def spawn(
        cls,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: str | None,
        *,
        preexec_fn: Callable[[], None] | None = None,
    ) -> ChildProcess:
        """Start ``argv`` in a new session with stdout+stderr on one pipe and stdin from /dev/null.
        ``preexec_fn`` (a parent-death signal, say) makes the spawn fork instead of vfork: slower."""
        read_fd, write_fd = os.pipe()
        try:
            if sys.platform == "linux":
                with contextlib.suppress(OSError):
                    fcntl.fcntl(write_fd, _F_SETPIPE_SZ, _PIPE_SIZE)
            spawned_at = time.monotonic()
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=write_fd,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env),
                start_new_session=True,
                close_fds=True,
                preexec_fn=preexec_fn,
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        os.set_blocking(read_fd, False)
        fcntl.fcntl(read_fd, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
        return cls(popen, read_fd, spawned_at)

    async def wait(self) -> int:
        """Wait for the exit (pidfd where the kernel has it, a gentle poll elsewhere). With a pidfd the
        leader stays a zombie, unreaped, so that its process group stays ours until ``reap``."""
        import anyio

        if self._pidfd is not None:
            with contextlib.suppress(OSError):
                await anyio.wait_readable(self._pidfd)
            code = self._exit_status_unreaped()
            if code is not None:
                self.returncode = code
                return code
        delay = 0.001
        while (code := self.popen.poll()) is None:
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.05)
        self._released()
        self.returncode = code
        return code

    def peek_exit(self) -> int | None:
        """The exit status if it has exited, without reaping it (None: still running, or unknown)."""
        return self.returncode if self.returncode is not None else self._exit_status_unreaped()

    def _exit_status_unreaped(self) -> int | None:
        """The exit status, read without reaping (Popen's convention: -N for a signal); None if unknown."""
        if self._pidfd is None or not hasattr(os, "P_PIDFD"):
            return None
        try:
            result = os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED | os.WNOWAIT | os.WNOHANG)
        except OSError:
            return None
        if result is None:
            return None
        if result.si_code == os.CLD_EXITED:
            return result.si_status
        return -result.si_status

    def signal_group(self, signum: int) -> None:
        """Signal the process group, only while the leader is unreaped (its pid cannot have been reused);
        harmless once the group is empty."""
        if self.reaped:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def reap(self) -> None:
        """Release the exited leader's pid (call once its group was stopped); no-op while it runs."""
        if self.reaped or self.returncode is None:
            return
        if self.popen.poll() is not None:
            self._released()

    def _released(self) -> None:
        self.reaped = True
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


def _pidfd_open(pid: int) -> int | None:
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


_BOOT_TIME: list[float] = []


def create_time(pid: int) -> float:
    """The same value as psutil's ``create_time`` (pid-reuse checks compare them), read straight from
    ``/proc/<pid>/stat`` on Linux: a spawn burst of 200 replicas pays this 200 times."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            data = file.read()
        if not _BOOT_TIME:
            _BOOT_TIME.append(_boot_time())
        ticks = int(data[data.rfind(b")") + 2 :].split()[19])
        return _BOOT_TIME[0] + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return 0.0


def _boot_time() -> float:
    """``btime`` of ``/proc/stat``, as psutil reads it, without importing psutil before the first spawn."""
    with open("/proc/stat", "rb") as file:
        for line in file:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    raise ValueError("no btime in /proc/stat")


def signal_processes(processes: Sequence[psutil.Process], signum: int) -> None:
    """Signal each process, but only if it is still the process we saw (psutil checks the create time)."""
    import psutil

    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.send_signal(signum)


def alive(process: psutil.Process) -> bool:
    import psutil

    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
