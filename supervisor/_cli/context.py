"""What every command handler is given: the parsed flags, the command after ``--``, and the voice it
speaks with. One object, built once by ``main`` and never mutated by the handlers: what planning works
out goes into its own result (``topology.Planned``), not back into the flags."""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple

from .._redact import Redactor, argv_secrets

__all__ = ["Invocation", "Voice", "reader_may_leave"]


class Voice:
    """Lines on stderr with secrets hidden: the caller's from the start, the services' once a plan is
    made (``learn``). A plain class, as ``Invocation`` is a tuple: each attrs class costs ``run`` about a
    millisecond of code generation before its first child."""

    def __init__(self) -> None:
        self.redactor = Redactor.from_environments(os.environ)

    def learn(self, *environments: Mapping[str, str], argvs: Iterable[Sequence[str]] = ()) -> None:
        """Also hide what these environments hold (a plan's replicas'), and the value of each secret flag in
        these command lines (``--api_key KEY``) wherever else it is quoted (a fatal line on the console)."""
        flagged = Redactor([value for argv in argvs for value in argv_secrets(argv)])
        self.redactor = Redactor.from_environments(os.environ, *environments) | flagged

    def text(self, message: str) -> str:
        return self.redactor.text(message)

    def say(self, message: str, *, wall_time: float | None = None) -> None:
        """A timestamped ``[supervisor]`` line: what the run is doing (stamped now, or at ``wall_time``)."""
        from .console import stamp

        print(f"{stamp(wall_time)} [supervisor] {self.text(message)}", file=sys.stderr, flush=True)

    def error(self, message: str) -> None:
        print(f"supervisor: {self.text(message)}", file=sys.stderr, flush=True)


class Invocation(NamedTuple):
    """One run of the ``supervisor`` command."""

    args: argparse.Namespace  #: the parsed flags (read, never written)
    command: list[str]  #: what came after ``--`` (``run FILE -- CMD``), as given
    argv: list[str]  #: the arguments as given (``--detach`` runs them again in the background)
    voice: Voice


def reader_may_leave(command: Callable[[Invocation], int]) -> Callable[[Invocation], int]:
    """``supervisor logs RUN | head``: a reader that leaves early is no error (exit 0, no traceback), for
    the commands on runs (``validate | head`` is 141, as a shell reports it: ``_entry``)."""

    @functools.wraps(command)
    def quiet(call: Invocation) -> int:
        try:
            return command(call)
        except BrokenPipeError:
            with contextlib.suppress(OSError):
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps the interpreter's final flush quiet
            return 0

    return quiet
