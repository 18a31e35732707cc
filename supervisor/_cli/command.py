"""``supervisor run FILE -- CMD``: CMD runs with the run's addresses in its environment, and is stopped
with a grace of its own (to write its results) when the run ends first.

The runtime (anyio) is imported when CMD starts, not with the command line: ``run`` stays light.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from .._errors import ConfigError
from .._marks import RUN_ID_ENV

if TYPE_CHECKING:
    from .._runtime.group import RunningTopology

__all__ = ["CMD_GRACE_SECONDS", "run_command"]


#: How long CMD may take to finish on its own after a stop signal (writing its results, say).
CMD_GRACE_SECONDS = 10.0


async def run_command(
    group: RunningTopology,
    argv: list[str],
    client_env: Mapping[str, str],
    stop_signals: list[int],
    say: Callable[[str], None] | None = None,
) -> int:
    """Run CMD (templates filled and checked by ``topology.plan_invocation``) with the run's addresses in
    its environment; stop it if we are cancelled first (``say``, if given, tells how).

    Which process group CMD runs in decides who signals it, so that it gets a stop signal once. In the
    terminal's foreground it stays in ours: it may use the terminal, and the terminal's Ctrl-C reaches it
    directly (we do not pass that one on). Anywhere else it gets a group of its own, and only what we pass
    on reaches it: a SIGINT to our group (``setsid supervisor run ...; kill -INT -- -PGID``) once reached
    it twice, from the group and from us, and cut short its cleanup after KeyboardInterrupt."""
    env = {**os.environ, **client_env, RUN_ID_ENV: group.run_id}
    shares_terminal = _terminal_foreground()
    try:
        process = _CommandProcess.spawn(argv, env, own_group=not shares_terminal)
    except OSError as exc:
        raise ConfigError(f"-- {argv[0]}: cannot run: {exc.strerror or exc}") from None
    try:
        code = await process.wait()
        return 128 - code if code < 0 else code  # killed by signal N: 128+N, as a shell reports it
    finally:
        if process.returncode is None:
            import anyio

            with anyio.CancelScope(shield=True):
                await _stop_command(process, stop_signals, shares_terminal, say)
        process.close()


class _CommandProcess:
    """CMD's process, waited for without a thread: a pidfd where the kernel has one, else a gentle poll."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid
        self._pidfd: int | None = None
        if hasattr(os, "pidfd_open"):
            with contextlib.suppress(OSError):
                self._pidfd = os.pidfd_open(popen.pid)

    @classmethod
    def spawn(cls, argv: list[str], env: Mapping[str, str], *, own_group: bool) -> _CommandProcess:
        """stdin, stdout and stderr are ours; ``own_group``: a new process group (not a session: the
        terminal, if any, stays CMD's controlling terminal)."""
        if sys.version_info >= (3, 11):
            return cls(subprocess.Popen(argv, env=env, process_group=0 if own_group else None))
        return cls(subprocess.Popen(argv, env=env, preexec_fn=os.setpgrp if own_group else None))

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def send_signal(self, signum: int) -> None:
        self._popen.send_signal(signum)  # a no-op once it was reaped: never someone else's pid

    async def wait(self) -> int:
        import anyio

        delay = 0.001
        while (code := self._popen.poll()) is None:
            if self._pidfd is not None:
                with contextlib.suppress(OSError):
                    await anyio.wait_readable(self._pidfd)
                    continue
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.05)
        return code

    def close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


async def _stop_command(
    process: _CommandProcess, stop_signals: list[int], shares_terminal: bool, say: Callable[[str], None] | None
) -> None:
    """CMD gets the stop signal once and ``CMD_GRACE_SECONDS`` to finish (a benchmark catching Ctrl-C to
    write its results), then SIGTERM, then SIGKILL; a second signal to us ends the wait at once."""
    import anyio

    signum = signal.Signals(stop_signals[0]) if stop_signals else signal.SIGTERM
    if shares_terminal and signum == signal.SIGINT and _terminal_foreground():
        how = "has the terminal's SIGINT"  # the terminal sent it to our whole group, CMD included
    else:
        how = f"was sent {signum.name}"
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)
    if say is not None:
        say(f"-- CMD (pid {process.pid}) {how}; it has {CMD_GRACE_SECONDS:g}s to finish")
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


def _terminal_foreground() -> bool:
    """We are the foreground process group of our terminal: its Ctrl-C goes to our whole group."""
    for fd in (0, 1, 2):
        with contextlib.suppress(OSError):
            if os.isatty(fd):
                return os.tcgetpgrp(fd) == os.getpgrp()
    return False
