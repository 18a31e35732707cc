"""``supervisor run --detach``: the run goes on in a background process of its own session; the caller
waits for its ready (or error) line and returns, and a detached run writes its output in its run dir:
the event lines a ``run`` that is not on a terminal prints, and its summary at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from .._host.signals import STOP_SIGNALS
from .._records.paths import default_runs_dir, open_private, private_dirs

__all__ = ["DETACHED_OUTPUT", "detach", "let_stop_signals_in", "notify", "output_to_run_dir"]

EXIT_FAILED = 1  #: as ``_cli.main``'s: the background run failed to start

#: a detached run's own output (its event lines, the summary): in its run dir, where ``supervisor logs`` looks
DETACHED_OUTPUT = "supervisor.log"


def output_to_run_dir(run_dir: Path) -> None:
    """A ``--detach`` run, once it knows its directory, writes its output there (until then: the runs dir's
    ``detached.log``, where a failure to even plan ends up)."""
    private_dirs(run_dir)
    fd = open_private(run_dir / DETACHED_OUTPUT)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    finally:
        os.close(fd)


def notify(fd: int, message: str) -> None:
    """Tell the ``--detach`` parent how the start went; it returns as soon as it hears."""
    with contextlib.suppress(OSError):
        os.write(fd, (message.replace("\n", "\\n") + "\n").encode())
        os.close(fd)


def detach(
    args: argparse.Namespace, argv: list[str], *, say: Callable[[str], None], error: Callable[[str], None]
) -> int:
    """Re-run ourselves in a new session without --detach, and wait for its ready (or error) line (the
    caller has checked the input already); ``say`` and ``error`` print as the command line does.

    A stop signal (SIGINT, SIGTERM, SIGHUP) before the ready line stops the background run and waits until
    it is down: exit 128+N and nothing left. The signals are blocked while it spawns, so none can land
    between the fork and our holding its pid (where it once escaped, leaving a run nobody knew of), and
    are let in only while we wait. With the ready line the run is handed over, its id printed: a signal
    held since then is taken unseen (exit 0; only one after that has its usual effect)."""
    read_fd, write_fd = os.pipe()
    log_dir = Path(args.runs_dir) if args.runs_dir else default_runs_dir()
    private_dirs(log_dir)
    split = argv.index("--") if "--" in argv else len(argv)
    child_argv = [a for a in argv[:split] if a not in ("--detach", "-d")] + argv[split:]
    with _stop_signals_raise() as let_in, os.fdopen(open_private(log_dir / "detached.log"), "ab") as log:
        try:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "supervisor",
                    *child_argv[:1],  # not --quiet: its log holds the event lines (``-q`` given stays)
                    "--notify-fd",
                    str(write_fd),
                    *child_argv[1:],
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(write_fd,),
                start_new_session=True,
            )  # it inherits the blocked signals: it lets them in first thing (``let_stop_signals_in``)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        try:
            with os.fdopen(read_fd, "rb") as channel, let_in():
                line = channel.readline().decode().strip().replace("\\n", "\n")
                code = None if line.startswith("ready ") else process.wait()
        except _Interrupted as stop:  # before the run was handed over: it is still ours to cancel, whole
            return _cancel_detached(process, say, let_in, stop.signum)
        if code is None:
            held = _take_held_signal()
            if held is not None:  # it came with the ready line: the run was not handed over yet
                return _cancel_detached(process, say, let_in, held)
            _, run_id, run_dir = line.split(" ", 2)
            print(run_id, flush=True)  # alone on stdout: RUN=$(supervisor run -d FILE)
            say(
                f"run {run_id} is running in the background (supervisor pid {process.pid}) in {run_dir}; "
                f"its output: {run_dir}/{DETACHED_OUTPUT}; `supervisor status {run_id}`, `supervisor stop {run_id}`"
            )
            _take_held_signal()  # one while its id was printed comes too late: the run is handed over, exit 0
            return 0
    message = line.removeprefix("error ") or f"the background supervisor exited with code {code}"
    error(message)
    return code or EXIT_FAILED


def let_stop_signals_in() -> None:
    """(The background run, first thing.) Unblock the stop signals its ``--detach`` parent held while
    spawning it: one sent meanwhile (the parent cancelling) is delivered now."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


class _Interrupted(KeyboardInterrupt):
    """A stop signal while the background run starts (a KeyboardInterrupt, so ``main`` exits 130 should
    one ever escape)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum: int, _frame: object) -> None:
    raise _Interrupted(signum)


@contextlib.contextmanager
def _stop_signals_raise() -> Iterator[Callable[[], contextlib.AbstractContextManager[None]]]:
    """Stop signals raise ``_Interrupted`` (those ignored stay ignored), and are blocked except inside
    the context manager it yields; the handlers and the mask come back on exit, before it is unblocked
    (a signal after the hand-off is an ordinary late one)."""
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        for signum, handler in previous.items():
            if handler is not signal.SIG_IGN:
                signal.signal(signum, _raise_interrupted)

        @contextlib.contextmanager
        def let_in() -> Iterator[None]:
            try:  # one that came while blocked raises right here: pthread_sigmask runs the handlers at once
                signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
                yield
            finally:
                signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)

        yield let_in
    finally:
        for signum, handler in previous.items():
            if handler is not None:
                signal.signal(signum, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _take_held_signal() -> int | None:
    """Take the stop signals held (blocked) since the wait ended, so that no handler sees them: the first
    one's number, or None."""
    first = None
    for _ in STOP_SIGNALS:
        taken = signal.sigtimedwait(STOP_SIGNALS, 0)
        if taken is None:
            break
        first = first or taken.si_signo
    return first


def _cancel_detached(
    process: subprocess.Popen[bytes],
    say: Callable[[str], None],
    let_in: Callable[[], contextlib.AbstractContextManager[None]],
    signum: int,
) -> int:
    """A stop signal while a ``--detach`` run is starting: stop it (an orderly teardown) and wait until it
    is down, so no run keeps loading in the background with no id printed. A second signal kills it at
    once (its watchdog then sweeps whatever it had started)."""
    try:
        with let_in():
            say(f"interrupted ({signal.Signals(signum).name}) while starting: stopping the background run")
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            process.wait(timeout=600)
    except (_Interrupted, subprocess.TimeoutExpired):
        process.kill()
        process.wait(timeout=60)
    return 128 + signum
