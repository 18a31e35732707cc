"""One attempt of an ``exec`` probe: the command runs in a session of its own, and its whole process tree
ends with the attempt, whether it exited, timed out or was cancelled (a probe that forks must not leak).

A descendant that left the attempt's process group and session (``(setsid cmd &)``) after its parent exited
is out of reach of the group's signal and of the tree walk. Each attempt carries a mark of its own in the
environment (``TOPOVISOR_PROBE_ATTEMPT``); when the attempt's output pipe is still held open after its group
was killed, something of it escaped, and the processes with that mark are killed (one /proc scan, only
then). An escapee that also closed its stdout and stderr is not noticed here; it carries the run's mark, and
the run's teardown stops it."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
from collections.abc import Callable, Mapping, Sequence

import anyio
import anyio.to_thread
import psutil

from .._marks import PROBE_ATTEMPT_ENV
from .process import ChildProcess, signal_processes
from .proctable import processes_with_env

__all__ = ["run_command"]

_OUTPUT_KEEP_BYTES = 4096  #: only the tail of the output is reported
_PIPE_CLOSE_WAIT_SECONDS = 0.05  #: killed group members close the pipe as they die; only after this, scan
_ESCAPE_ROUNDS = 5  #: kill what carries the attempt's mark, look again: new forks of escapees included
_attempts = itertools.count()


async def run_command(
    argv: Sequence[str],
    env: Mapping[str, str],
    timeout: float,
    *,
    wrap: Callable[[Sequence[str], Mapping[str, str]], Sequence[str]] | None = None,
) -> tuple[int, bytes]:
    """Run ``argv`` to its exit: (exit status, tail of stdout+stderr); ``wrap`` makes it enter a cgroup.

    Raises ``TimeoutError`` after ``timeout`` seconds and ``OSError`` when it cannot start. Before this
    returns or raises, the command's process group and every descendant seen while it ran get SIGKILL,
    and the command is reaped (shielded from cancellation)."""
    mark = f"{os.getpid()}.{next(_attempts)}"
    env = {**env, PROBE_ATTEMPT_ENV: mark}
    process = ChildProcess.spawn(wrap(argv, env) if wrap is not None else argv, env, None)
    output = bytearray()
    try:
        with anyio.fail_after(timeout):
            async with anyio.create_task_group() as tg:
                tg.start_soon(_read_into, process.output_fd, output)
                code = await process.wait()
                tg.cancel_scope.cancel()  # stop at exit: a descendant holding the pipe must not stall us
        _drain(process.output_fd, output)  # what the command wrote is in the pipe by now
        return code, bytes(output[-_OUTPUT_KEEP_BYTES:])
    finally:
        with anyio.CancelScope(shield=True):
            _end_tree(process)
            await process.wait()
            process.reap()
            try:
                if await _pipe_still_held(process.output_fd):
                    await anyio.to_thread.run_sync(_end_escaped, mark)
            finally:
                os.close(process.output_fd)


def _end_tree(process: ChildProcess) -> None:
    """SIGKILL the group, and the descendants that left it (``setsid``) while the command still runs."""
    descendants: list[psutil.Process] = []
    if process.returncode is None:
        with contextlib.suppress(psutil.Error):
            descendants = psutil.Process(process.pid).children(recursive=True)
    process.signal_group(signal.SIGKILL)
    signal_processes(descendants, signal.SIGKILL)


async def _pipe_still_held(fd: int) -> bool:
    """Whether a process outside the killed group still holds the attempt's output pipe (no end of file)."""
    with anyio.move_on_after(_PIPE_CLOSE_WAIT_SECONDS):
        while True:
            await anyio.wait_readable(fd)
            try:
                if not os.read(fd, 65536):
                    return False
            except BlockingIOError:
                continue
            except OSError:
                return False
    return True


def _end_escaped(mark: str) -> None:
    """SIGKILL every process carrying this attempt's mark, until none is left (bounded)."""
    for _ in range(_ESCAPE_ROUNDS):
        pids = processes_with_env(PROBE_ATTEMPT_ENV, mark)
        if not pids:
            return
        escaped: list[psutil.Process] = []
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                escaped.append(psutil.Process(pid))  # signalled only while its create time matches
        signal_processes(escaped, signal.SIGKILL)


async def _read_into(fd: int, output: bytearray) -> None:
    while True:
        await anyio.wait_readable(fd)
        if not _drain(fd, output):
            return


def _drain(fd: int, output: bytearray) -> bool:
    """Read what the pipe holds now; False at end of file."""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not chunk:
            return False
        output += chunk
        del output[:-_OUTPUT_KEEP_BYTES]
