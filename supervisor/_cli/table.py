"""The ``supervisor`` command's one table: each command's name, help, arguments, and the handler that runs
it. ``main`` builds the parser from this table and dispatches through it; a handler is named as
``module:function`` of this package and imported only when its command runs, so that building the parser
loads nothing that ``run`` does not need."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import NamedTuple

from .._marks import CONTAINMENT_CHOICES
from .._units import parse_duration

__all__ = ["COMMANDS", "Command", "build_parser", "parse_overrides"]

_RUN_HELP = "run id, a unique prefix or suffix of one, its name, or its dir"


class Command(NamedTuple):
    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    handler: str  #: ``module:function`` in ``supervisor._cli``; the function takes an ``Invocation``
    takes_command: bool = False  #: accepts ``-- CMD ARGS``


# ----- commands on a topology file -------------------------------------------------------------------------
def _file(parser: argparse.ArgumentParser, *, optional: bool = False) -> None:
    # run's FILE may come after --logs SERVICE... (``run --logs api FILE``): the handler takes it from there
    parser.add_argument(
        "file", nargs="?" if optional else None,
        help="topology YAML file, or a registered preset's name (demo, dynamo, vllm, sglang, trtllm, llamacpp...)",
    )  # fmt: skip
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="set ${KEY} for the file, or a field by path (services.decode.replicas=4); repeatable",
    )  # fmt: skip
    parser.add_argument("--runs-dir", help="parent of the run directory (default: run_dir: or the state dir)")
    parser.add_argument(
        "--gpus",
        metavar="SPEC",
        help="assign GPUs on a simulated node such as 8x80GB or 8xMI300X instead of this machine's",
    )


def _slurm_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--slurm", action="store_true",
        help="run on Slurm: cluster: {slurm: {}} when the file has none (as many nodes as its placements need)",
    )  # fmt: skip


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    _file(parser, optional=True)
    _slurm_flag(parser)
    parser.add_argument(
        "--logs", nargs="*", metavar="SERVICE",
        help="also print the output of every service (or of these services or replicas), prefixed per replica",
    )  # fmt: skip
    parser.add_argument("--quiet", "-q", action="store_true", help="print only problems: failures, restarts, leftovers")
    parser.add_argument(
        "--detach", "-d", action="store_true",
        help="supervise in the background; return once all are ready, printing the run id (stop: supervisor stop ID)",
    )  # fmt: skip
    parser.add_argument(
        "--containment", choices=CONTAINMENT_CHOICES, metavar="MODE",
        help="require how the run's processes are kept together: cgroup2, freezer or marks (default: the "
        "topology's containment, auto: the best this host allows); exit 2 if it cannot be had",
    )  # fmt: skip
    parser.add_argument("--notify-fd", type=int, help=argparse.SUPPRESS)  # --detach's channel to the background run
    parser.epilog = (
        "supervisor run FILE -- CMD ARGS runs CMD once all are ready ({svc.url} templates work); CMD's environment "
        "has TOPOVISOR_<SERVICE>_URL, _URLS, _PORT and TOPOVISOR_RUN_DIR."
    )


def _validate_arguments(parser: argparse.ArgumentParser) -> None:
    from .placement import node_count

    _file(parser)
    _slurm_flag(parser)
    parser.add_argument(
        "--nodes", type=node_count, metavar="N",
        help="show the placement plan on N Slurm nodes (placeholders node0..; no cluster needed)",
    )  # fmt: skip
    parser.add_argument(
        "--commands", "-c", action="store_true",
        help="also show each replica's command line and the environment it adds (secrets redacted)",
    )  # fmt: skip


def _sbatch_arguments(parser: argparse.ArgumentParser) -> None:
    from .sbatch import add_sbatch_arguments

    _file(parser)
    parser.set_defaults(slurm=True)
    add_sbatch_arguments(parser)
    sweep = parser.add_argument_group("a sweep's script (the job runs supervisor sweep FILE --slurm ... -- CMD)")
    sweep.add_argument(
        "--vary", action="append", default=[], metavar="KEY=V1,V2",
        help="an arm per value, as supervisor sweep's; every trial runs in the batch job",
    )  # fmt: skip
    sweep.add_argument("--trials", type=_positive, metavar="N", help="trials of each arm (default 1)")
    sweep.add_argument("--order", metavar="ORDER", help="ABBA (default), ABAB, random, or a pattern of arm letters")
    sweep.add_argument("--seed", type=int, metavar="N", help="with --order random: the shuffle's seed")
    sweep.add_argument("--fail-fast", action="store_true", help="stop at the first failed trial")
    sweep.add_argument("--warmup", metavar="'CMD ARGS'", help="run this once all are ready, before the window")


def _graph_arguments(parser: argparse.ArgumentParser) -> None:
    from .._plan.graph import FORMATS

    _file(parser)
    parser.add_argument("--format", "-f", choices=FORMATS, default="text", help="text (default), mermaid or dot")


# ----- commands on recorded runs (``runs``) and on live ones (``control``) -----------------------------------
def _ps_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--all", action="store_true", help="also list finished runs kept in the state dir")
    parser.add_argument(
        "--sweeps", action="store_true", help="list only the sweeps (with --json: a list of sweeps, not of runs)"
    )


def _stop_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help=_RUN_HELP)
    parser.add_argument("--grace", type=_duration, metavar="DURATION", help="replace each replica's stop grace")


def _gc_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--yes", action="store_true", help="stop (and prune) them (default: only list them)")
    parser.add_argument(
        "--older-than", type=_duration, metavar="DURATION",
        help="also prune the run dirs of finished runs untouched this long, such as 7d (never a live run's)",
    )  # fmt: skip


def _env_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help=_RUN_HELP)
    parser.epilog = 'eval "$(supervisor env RUN)" sets TOPOVISOR_<SERVICE>_URL, _URLS, _PORT and TOPOVISOR_RUN_DIR'


def _logs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help=_RUN_HELP)
    parser.add_argument("service", metavar="SERVICE", nargs="?", help="a service or a replica such as decode.1")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until the run ends")
    parser.add_argument("-n", "--lines", type=int, default=20, metavar="LINES", help="lines of history (default 20)")


def _status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help=_RUN_HELP)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _restart_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help=_RUN_HELP)
    parser.add_argument("service", metavar="SERVICE", help="a service, or a replica such as decode.1")
    parser.add_argument("--rolling", action="store_true", help="one replica at a time, keeping the rest serving")
    parser.add_argument("--max-unavailable", type=int, metavar="K", help="with --rolling: replicas down at once")
    parser.add_argument("--min-ready", type=int, metavar="N", help="with --rolling: never fewer ready than this")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="with --rolling: restart with this var of the topology file changed; repeatable",
    )  # fmt: skip


def _scale_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help=_RUN_HELP)
    parser.add_argument("service", metavar="SERVICE", help="the service to scale")
    parser.add_argument("replicas", type=_count, metavar="N", help="how many replicas it should have")


def _autoscale_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help=_RUN_HELP)
    parser.add_argument("service", metavar="SERVICE", help="a service with autoscale:")
    parser.add_argument("switch", choices=("off", "on"), help="off: keep the count as it is; on: follow the load again")


# ----- experiments (``experiment``) ---------------------------------------------------------------------------
def _trial_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="set ${KEY} or a field by path for every arm; repeatable",
    )  # fmt: skip
    parser.add_argument(
        "--runs-dir", help="parent of the trials' run dirs and of sweeps/<id>/ (default: the state dir)"
    )
    parser.add_argument("--trials", type=_positive, default=1, metavar="N", help="trials of each arm (default 1)")
    parser.add_argument(
        "--order", default="ABBA", metavar="ORDER",
        help="ABBA (every arm forward then backward, default), ABAB, random, or a pattern of arm letters",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, metavar="N", help="with --order random: the shuffle's seed")
    parser.add_argument("--fail-fast", action="store_true", help="stop at the first failed trial")
    parser.add_argument(
        "--warmup", metavar="'CMD ARGS'",
        help="run this (one quoted string, the templates of CMD) once all are ready, before the measured window",
    )  # fmt: skip
    parser.add_argument(
        "--gpus", metavar="SPEC", help="plan the trials on a simulated node such as 8x80GB instead of this machine's"
    )
    parser.add_argument(
        "--stop-stale", action="store_true",
        help="stop what runs whose supervisor died left on the sweep's GPUs (through their records, as gc --yes)",
    )  # fmt: skip
    parser.add_argument(
        "--slurm", action="store_true",
        help="run every trial in one Slurm allocation (cluster: {slurm: {}} where a file has none), taken once",
    )  # fmt: skip
    parser.epilog = (
        "each trial is a fresh launch; CMD runs once all are ready, with the same templates and TOPOVISOR_* "
        "variables as run -- CMD, and {trial_dir}: a JSON object it writes to {trial_dir}/result.json becomes "
        "columns of results.csv"
    )


def _sweep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", help="topology YAML file, or a registered preset's name")
    parser.add_argument(
        "--vary", action="append", default=[], metavar="KEY=V1,V2",
        help="an arm per value (typed as --set is); several --vary: every combination",
    )  # fmt: skip
    parser.add_argument("--resume", metavar="SWEEP", help="run the trials of this sweep not yet done")
    _trial_flags(parser)


def _ab_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="A.yaml B.yaml, or one file with --a and --b")
    parser.add_argument("--a", action="append", default=[], metavar="KEY=VALUE", help="arm A's sets (the baseline)")
    parser.add_argument("--b", action="append", default=[], metavar="KEY=VALUE", help="arm B's sets")
    _trial_flags(parser)


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", metavar="SWEEP", help="a sweep's id (its first line of output) or its folder")
    parser.add_argument("--runs-dir", help="where its sweeps/ folder is (default: the state dir's runs)")
    parser.add_argument("--json", action="store_true", help="print JSON: the report and every row")
    parser.add_argument(
        "--plot", metavar="FILE", help="also draw the report to FILE.png or FILE.svg (needs topovisor[plot])"
    )
    parser.add_argument(
        "--figure", action="append", default=[], metavar="NAME", help="with --plot: draw this figure (default all)"
    )


def _gpus_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gpus", metavar="SPEC", help="show a simulated node such as 8x80GB or 8xMI300X instead")


COMMANDS: tuple[Command, ...] = (
    Command("run", "start a topology and supervise it until Ctrl-C (or until CMD after -- ends)",
            _run_arguments, "topology:run_command", takes_command=True),
    Command("validate", "check a topology file and show the start order; starts nothing",
            _validate_arguments, "topology:validate_command"),
    Command("sbatch", "write (or --submit) the batch script that runs FILE in a Slurm allocation",
            _sbatch_arguments, "topology:sbatch_command", takes_command=True),
    Command("graph", "draw the dependency graph (conditions, replicas, GPUs); starts nothing",
            _graph_arguments, "topology:graph_command"),
    Command("ps", "list recorded runs and their replicas: state, pids, ports, uptime, restarts",
            _ps_arguments, "runs:ps_command"),
    Command("stop", "tear down a run started by another process (its supervisor may be dead)",
            _stop_arguments, "runs:stop_command"),
    Command("gc", "find leftovers of runs whose supervisor died (and, --older-than, old run dirs); act with --yes",
            _gc_arguments, "runs:gc_command"),
    Command("logs", "print a run's logs (all replicas, one service, or one replica)",
            _logs_arguments, "runs:logs_command"),
    Command("env", "print a live run's TOPOVISOR_* client variables as export lines for sh (eval them)",
            _env_arguments, "environment:env_command"),
    Command("status", "a live run's state, asked through its control socket: replicas, pids, urls, ports",
            _status_arguments, "control:status_command"),
    Command("restart", "restart a service or replica of a live run; returns once it is ready again",
            _restart_arguments, "control:restart_command"),
    Command("scale", "run N replicas of a service of a live run (new ones get their own ports and GPUs)",
            _scale_arguments, "control:scale_command"),
    Command("autoscale", "pause (off) or resume (on) the autoscale: of a service of a live run",
            _autoscale_arguments, "control:autoscale_command"),
    Command("sweep", "run CMD against every combination of --vary values, each trial on a fresh topology",
            _sweep_arguments, "experiment:sweep_command", takes_command=True),
    Command("ab", "run CMD against two configurations (A.yaml B.yaml, or --a/--b sets) in A B B A order",
            _ab_arguments, "experiment:ab_command", takes_command=True),
    Command("report", "a sweep's report again: per arm the median and min-max of each figure, ratios",
            _report_arguments, "experiment:report_command"),
    Command("gpus", "list this machine's GPUs: memory used, and the processes (and runs) holding each",
            _gpus_arguments, "gpus:gpus_command"),
)  # fmt: skip


def build_parser(first: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; when ``first`` (the first argument) names one, of that one alone: its
    arguments, help and errors are the same, and ``run`` does not import what ``sbatch`` or ``graph`` need
    (``--version`` builds none)."""
    from .. import __version__

    parser = argparse.ArgumentParser(prog="supervisor", description="Launch and supervise process topologies.")
    parser.add_argument("--version", action="version", version=f"topovisor {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if first == "--version":  # prints and exits while parsing: no command's arguments need building
        return parser
    chosen = [c for c in COMMANDS if c.name == first] or COMMANDS
    for command in chosen:
        command.arguments(subparsers.add_parser(command.name, help=command.help, description=command.help))
    return parser


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """``--set KEY=VALUE`` pairs; a pair without ``=`` is bad input (``ConfigError``: exit 2)."""
    from .._errors import ConfigError

    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE")
        overrides[key.strip()] = value
    return overrides


def _count(text: str) -> int:
    """A replica count in decimal digits (``int()`` would also take ``10_000``, `` 7`` and other scripts' digits)."""
    if not re.fullmatch(r"-?[0-9]+", text):
        raise argparse.ArgumentTypeError(f"expected a whole number in decimal digits, got {text!r}")
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return value


def _positive(text: str) -> int:
    value = _count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {value}")
    return value


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
