"""``supervisor run FILE -- CMD``: CMD runs with the run's addresses in its environment, and is stopped
with a grace of its own (to write its results) when the run ends first.

The runtime (anyio) is imported when CMD starts, not with the command line: ``run`` stays light.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .._errors import ConfigError
from .._marks import RUN_ID_ENV

if TYPE_CHECKING:
    import anyio.abc

    from .._runtime.group import RunningTopology

__all__ = ["CMD_GRACE_SECONDS", "run_command"]


#: How long CMD may take to finish on its own after a stop signal (writing its results, say).
CMD_GRACE_SECONDS = 10.0


async def run_command(
    group: RunningTopology, argv: list[str], client_env: Mapping[str, str], stop_signals: list[int]
) -> int:
    """Run CMD (templates filled and checked by ``topology.plan_invocation``) in our own process group (so
    Ctrl-C reaches it), with the run's addresses in its environment; stop it if we are cancelled first."""
    import anyio

    env = {**os.environ, **client_env, RUN_ID_ENV: group.run_id}
    try:
        process = await anyio.open_process(argv, stdin=None, stdout=None, stderr=None, env=env)
    except OSError as exc:
        raise ConfigError(f"-- {argv[0]}: cannot run: {exc.strerror or exc}") from None
    try:
        code = await process.wait()
        return 128 - code if code < 0 else code  # killed by signal N: 128+N, as a shell reports it
    finally:
        if process.returncode is None:
            with anyio.CancelScope(shield=True):
                await _stop_command(process, stop_signals)


async def _stop_command(process: anyio.abc.Process, stop_signals: list[int]) -> None:
    """CMD gets the stop signal once and ``CMD_GRACE_SECONDS`` to finish (a benchmark catching Ctrl-C to
    write its results), then SIGTERM, then SIGKILL; a second signal to us ends the wait at once."""
    import anyio

    signum = signal.Signals(stop_signals[0]) if stop_signals else signal.SIGTERM
    if not (signum == signal.SIGINT and _terminal_sent_sigint()):
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)
    deadline = anyio.current_time() + CMD_GRACE_SECONDS
    while process.returncode is None and len(stop_signals) < 2 and anyio.current_time() < deadline:
        with anyio.move_on_after(0.05):
            await process.wait()
    for last, wait_seconds in ((signal.SIGTERM, 5.0), (signal.SIGKILL, None)):
        if process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(last)
        with anyio.move_on_after(wait_seconds if len(stop_signals) < 2 else 0.0):
            await process.wait()
    await process.wait()


def _terminal_sent_sigint() -> bool:
    """Ctrl-C at a terminal goes to its whole foreground process group, CMD included: no second SIGINT."""
    for fd in (0, 1, 2):
        with contextlib.suppress(OSError):
            if os.isatty(fd):
                return os.tcgetpgrp(fd) == os.getpgrp()
    return False
