"""Before a hung replica is killed: its Python stacks, by ``py-spy dump``, into its own log.

A liveness failure means "alive but stuck"; the kill that follows erases the one thing that says where.
So, when py-spy is on PATH, each Python process of the replica (its leader and descendants whose
executable is a python interpreter) is dumped first, bounded in time, and the output goes to the log
between clearly marked lines. py-spy reads another process's memory: it needs ptrace permission (root,
CAP_SYS_PTRACE, or ``kernel.yama.ptrace_scope`` 0 for a process of the same user; inside a container
often ``--cap-add SYS_PTRACE``). Without it py-spy says so, and that message is what the log gets.
``--nonblocking``: the dump reads the memory without pausing the process (no ptrace attach), so it also
works on a stopped process or one that a ``py-spy record`` wrapper samples; a hung process's stacks hold
still anyway. Nothing here can fail or delay the stop by more than ``DUMP_SECONDS`` per process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable

import anyio
import psutil

__all__ = ["DUMP_SECONDS", "MAX_DUMPED_PROCESSES", "dump_python_stacks", "python_processes"]

DUMP_SECONDS = 10.0  #: per process; a dump of a healthy process takes well under a second
MAX_DUMPED_PROCESSES = 4  #: a replica with a pool of workers: the first few say enough
_OUTPUT_LIMIT = 256 * 1024  #: bytes of one dump kept in the log
_BANNER = b"--- topovisor: "


def _is_python(process: psutil.Process) -> bool:
    try:
        exe = os.path.basename(process.exe() or process.name())
    except psutil.Error:
        return False
    return exe.startswith("python")


def python_processes(pid: int) -> list[int]:
    """``pid`` and its descendants that run a Python interpreter, leader first (at most a few)."""
    try:
        leader = psutil.Process(pid)
        tree = [leader, *leader.children(recursive=True)]
    except psutil.Error:
        return []
    return [p.pid for p in tree if _is_python(p)][:MAX_DUMPED_PROCESSES]


async def dump_python_stacks(
    pid: int, why: str, write: Callable[[bytes], None], *, py_spy: str | None = None, seconds: float = DUMP_SECONDS
) -> int:
    """Dump the Python stacks of ``pid``'s tree through ``write`` (one log line per call); returns how
    many dumps py-spy produced. Without py-spy on PATH: one note line."""
    program = py_spy or shutil.which("py-spy")
    if program is None:
        write(_BANNER + b"no stack dump before the kill (" + why.encode() + b"): py-spy is not installed ---\n")
        return 0
    pids = await anyio.to_thread.run_sync(python_processes, pid)
    if not pids:
        write(_BANNER + f"no stack dump before the kill ({why}): no Python process in pid {pid}'s tree ---\n".encode())
        return 0
    done = 0
    for target in pids:
        write(_BANNER + f"py-spy dump --pid {target} before the kill ({why}) ---\n".encode())
        output, code = await _run_bounded([program, "dump", "--nonblocking", "--pid", str(target)], seconds)
        for line in output.splitlines():
            write(line + b"\n")
        status = "timed out" if code is None else f"exit code {code}"
        write(_BANNER + f"end of py-spy dump --pid {target} ({status}) ---\n".encode())
        done += code == 0
    return done


async def _run_bounded(argv: list[str], seconds: float) -> tuple[bytes, int | None]:
    """Output and exit code of ``argv``; after ``seconds`` it is killed, waited for, and the code is None."""
    chunks: list[bytes] = []
    size = 0
    try:
        process = await anyio.open_process(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
    except OSError as exc:
        return f"cannot run {argv[0]}: {exc.strerror or exc}".encode(), -1
    async with process:
        with anyio.move_on_after(seconds):
            assert process.stdout is not None
            async for chunk in process.stdout:
                if size < _OUTPUT_LIMIT:
                    chunks.append(chunk[: _OUTPUT_LIMIT - size])
                    size += len(chunks[-1])
            return b"".join(chunks), await process.wait()
        process.kill()
        with anyio.CancelScope(shield=True):
            await process.wait()
    return b"".join(chunks), None
