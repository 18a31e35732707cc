"""The parser of ``supervisor ps|stop|gc|logs|status|restart|scale``, apart from the commands themselves: building the
``supervisor`` command's parser must not load what only these commands use (psutil, the run records)."""

from __future__ import annotations

import argparse

from .._units import parse_duration

__all__ = ["COMMANDS", "add_commands"]

COMMANDS = ("ps", "stop", "gc", "logs", "status", "restart", "scale")


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
    run_help = "run id, a unique prefix or suffix of one, its name, or its dir"
    status = command("status", "a live run's state, asked through its control socket: replicas, pids, urls, ports")
    status.add_argument("run", metavar="RUN", help=run_help)
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    restart = command("restart", "restart a service or replica of a live run; returns once it is ready again")
    restart.add_argument("run", metavar="RUN", help=run_help)
    restart.add_argument("service", metavar="SERVICE", help="a service, or a replica such as decode.1")
    restart.add_argument("--rolling", action="store_true", help="one replica at a time, keeping the rest serving")
    restart.add_argument("--max-unavailable", type=int, metavar="K", help="with --rolling: replicas down at once")
    restart.add_argument("--min-ready", type=int, metavar="N", help="with --rolling: never fewer ready than this")
    restart.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="with --rolling: restart with this var of the topology file changed; repeatable",
    )  # fmt: skip
    scale = command("scale", "run N replicas of a service of a live run (new ones get their own ports and GPUs)")
    scale.add_argument("run", metavar="RUN", help=run_help)
    scale.add_argument("service", metavar="SERVICE", help="the service to scale")
    scale.add_argument("replicas", type=_count, metavar="N", help="how many replicas it should have")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return value


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
