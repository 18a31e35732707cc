"""One attempt of an ``exec`` probe: the command runs in a session of its own, and its whole process tree
ends with the attempt, whether it exited, timed out or was cancelled (a probe that forks must not leak)."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Mapping, Sequence

import anyio
import psutil

from .process import ChildProcess, signal_processes

__all__ = ["run_command"]

_OUTPUT_KEEP_BYTES = 4096  #: only the tail of the output is reported


async def run_command(argv: Sequence[str], env: Mapping[str, str], timeout: float) -> tuple[int, bytes]:
    """Run ``argv`` to its exit: (exit status, tail of stdout+stderr).

    Raises ``TimeoutError`` after ``timeout`` seconds and ``OSError`` when it cannot start. Before this
    returns or raises, the command's process group and every descendant seen while it ran get SIGKILL,
    and the command is reaped (shielded from cancellation)."""
    process = ChildProcess.spawn(argv, env, None)
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
            os.close(process.output_fd)


def _end_tree(process: ChildProcess) -> None:
    """SIGKILL the group, and the descendants that left it (``setsid``) while the command still runs."""
    descendants: list[psutil.Process] = []
    if process.returncode is None:
        with contextlib.suppress(psutil.Error):
            descendants = psutil.Process(process.pid).children(recursive=True)
    process.signal_group(signal.SIGKILL)
    signal_processes(descendants, signal.SIGKILL)


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
