"""The client of a trial (``-- CMD``) and its warm-up (``--warmup CMD``): run once the trial's topology is
ready, the output into the trial's folder (``<name>.stdout``, ``<name>.stderr``), in a process group of its
own that is stopped (SIGTERM, a grace, SIGKILL) if the trial is cut short."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import anyio

from .._errors import ConfigError

__all__ = ["CLIENT_GRACE_SECONDS", "run_client", "tail"]

CLIENT_GRACE_SECONDS = 10.0  #: how long a client told to stop may take to write its results


async def run_client(
    argv: Sequence[str], env: Mapping[str, str], trial_dir: Path, name: str = "client"
) -> tuple[int, float]:
    """Run the client to its end: its exit code (128+N when killed by signal N) and how long it ran."""
    start = time.monotonic()
    with (trial_dir / f"{name}.stdout").open("wb") as out, (trial_dir / f"{name}.stderr").open("wb") as err:
        try:
            process = await anyio.open_process(
                list(argv), stdin=None, stdout=out, stderr=err, env=dict(env), cwd=os.getcwd(), start_new_session=True
            )
        except OSError as exc:
            raise ConfigError(f"-- {argv[0]}: cannot run: {exc.strerror or exc}") from None
        try:
            code = await process.wait()
        finally:
            if process.returncode is None:
                with anyio.CancelScope(shield=True):
                    await _stop(process)
    return (128 - code if code < 0 else code), time.monotonic() - start


async def _stop(process: anyio.abc.Process) -> None:
    for signum, grace in ((signal.SIGTERM, CLIENT_GRACE_SECONDS), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signum)  # its own group, made at spawn: only what it started
        with anyio.move_on_after(grace):
            await process.wait()
        if process.returncode is not None:
            return


def tail(path: Path, lines: int = 5) -> str:
    """The last lines of a client's output, for the reason a trial failed."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])
