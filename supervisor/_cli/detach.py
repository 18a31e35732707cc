"""``supervisor run --detach``: the run goes on in a background process of its own session; the caller
waits for its ready (or error) line and returns, and a detached run writes its output in its run dir.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from .._records.paths import default_runs_dir, open_private, private_dirs

__all__ = ["DETACHED_OUTPUT", "detach", "notify", "output_to_run_dir"]

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
    caller has checked the input already); ``say`` and ``error`` print as the command line does."""
    read_fd, write_fd = os.pipe()
    log_dir = Path(args.runs_dir) if args.runs_dir else default_runs_dir()
    private_dirs(log_dir)
    split = argv.index("--") if "--" in argv else len(argv)
    child_argv = [a for a in argv[:split] if a not in ("--detach", "-d")] + argv[split:]
    with os.fdopen(open_private(log_dir / "detached.log"), "ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "supervisor",
                *child_argv[:1],
                "--quiet",
                "--notify-fd",
                str(write_fd),
                *child_argv[1:],
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            pass_fds=(write_fd,),
            start_new_session=True,
        )
    os.close(write_fd)
    try:
        with os.fdopen(read_fd, "rb") as channel:
            line = channel.readline().decode().strip().replace("\\n", "\n")
    except KeyboardInterrupt:  # before the run was handed over: it is still ours to cancel, whole
        return _cancel_detached(process, say)
    if line.startswith("ready "):
        _, run_id, run_dir = line.split(" ", 2)
        print(run_id)  # alone on stdout: RUN=$(supervisor run -d FILE)
        say(
            f"run {run_id} is running in the background (supervisor pid {process.pid}) in {run_dir}; "
            f"its output: {run_dir}/{DETACHED_OUTPUT}; `supervisor status {run_id}`, `supervisor stop {run_id}`"
        )
        return 0
    code = process.wait()
    message = line.removeprefix("error ") or f"the background supervisor exited with code {code}"
    error(message)
    return code or EXIT_FAILED


def _cancel_detached(process: subprocess.Popen[bytes], say: Callable[[str], None]) -> int:
    """Ctrl-C while a ``--detach`` run is starting: stop it (an orderly teardown) and wait until it is down,
    so no run keeps loading in the background with no id printed. A second Ctrl-C kills it at once (its
    watchdog then sweeps whatever it had started)."""
    say("interrupted while starting: stopping the background run")
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=600)
    except KeyboardInterrupt:
        process.kill()
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=60)
    return 128 + signal.SIGINT
