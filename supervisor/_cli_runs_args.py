"""The parser of ``supervisor ps|stop|gc|logs``, apart from the commands themselves: building the
``supervisor`` command's parser must not load what only these commands use (psutil, the run records)."""

from __future__ import annotations

import argparse

from ._units import parse_duration

__all__ = ["COMMANDS", "add_commands"]

COMMANDS = ("ps", "stop", "gc", "logs")


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``ps``, ``stop``, ``gc`` and ``logs`` to the ``supervisor`` command's subparsers."""

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(name, help=help_text, description=help_text)
        parser.set_defaults(runs_command=name)
        return parser

    ps = command("ps", "list recorded runs and their replicas: state, pids, ports, uptime, restarts")
    ps.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ps.add_argument("--all", action="store_true", help="also list finished runs kept in the state dir")
    stop = command("stop", "tear down a run started by another process (its supervisor may be dead)")
    stop.add_argument("run", metavar="RUN", help="run id, a unique prefix or suffix of one, its name, or its dir")
    stop.add_argument("--grace", type=_duration, metavar="DURATION", help="replace each replica's stop grace")
    gc = command("gc", "find leftovers of runs whose supervisor died; stop them with --yes")
    gc.add_argument("--yes", action="store_true", help="stop them (default: only list them)")
    logs = command("logs", "print a run's logs (all replicas, one service, or one replica)")
    logs.add_argument("run", metavar="RUN", help="run id, a unique prefix or suffix of one, its name, or its dir")
    logs.add_argument("service", metavar="SERVICE", nargs="?", help="a service or a replica such as decode.1")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until the run ends")
    logs.add_argument("-n", "--lines", type=int, default=20, metavar="LINES", help="lines of history (default 20)")


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
