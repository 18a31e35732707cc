"""The ``supervisor`` command: a thin ``main(argv) -> int`` over the library.

Exit codes: 0 success, 1 a service failed, 2 bad input (nothing was started), 128+N stopped by signal N,
and with ``run FILE -- CMD`` the exit code of CMD.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .._errors import ConfigError, SupervisorError
from .._host.signals import hold_signals
from .._plan.graph import FORMATS, render_graph
from .._plan.plan import Plan, fill_command, make_plan
from .._redact import Redactor
from .._spec.cluster import placement_notes, with_slurm
from .._spec.load import load
from .command import run_command
from .detach import detach, notify, output_to_run_dir
from .gpus import add_gpus_command, gpus_command
from .placement import node_count, placement_lines, planning_nodes, where_it_runs
from .runs_args import COMMANDS, add_commands
from .sbatch import add_sbatch_arguments, apply_sbatch_flags, sbatch_command

if TYPE_CHECKING:  # the runtime loads once the first replicas run (``_run``): a fast start is the point
    from .._host.gpu_inventory import GpuInventory
    from .._runtime.group import RunningTopology
    from .._runtime.headstart import HeadStart
    from .console import LiveReporter, PlainReporter

__all__ = ["main"]

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="supervisor", description="Launch and supervise process topologies.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_file(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        # run's FILE may come after --logs SERVICE... (``run --logs api FILE``): main() takes it from there
        sub.add_argument(
            "file", nargs="?" if name == "run" else None,
            help="topology YAML file, or a bundled preset: dynamo, vllm, sglang, trtllm, llamacpp",
        )  # fmt: skip
        sub.add_argument(
            "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
            help="set ${KEY} for the file, or a field by path (services.decode.replicas=4); repeatable",
        )  # fmt: skip
        sub.add_argument("--runs-dir", help="parent of the run directory (default: run_dir: or the state dir)")
        sub.add_argument(
            "--gpus", metavar="SPEC",
            help="assign GPUs on a simulated node such as 8x80GB instead of this machine's (NVML)",
        )  # fmt: skip
        return sub

    run = with_file("run", "start a topology and supervise it until Ctrl-C (or until CMD after -- ends)")
    validate = with_file("validate", "check a topology file and show the start order; starts nothing")
    for sub in (run, validate):
        sub.add_argument(
            "--slurm", action="store_true",
            help="run on Slurm: cluster: {slurm: {}} when the file has none (as many nodes as its placements need)",
        )  # fmt: skip
    run.add_argument(
        "--logs", nargs="*", metavar="SERVICE",
        help="also print the output of every service (or of these services or replicas), prefixed per replica",
    )  # fmt: skip
    run.add_argument("--quiet", "-q", action="store_true", help="print only problems: failures, restarts, leftovers")
    run.add_argument(
        "--detach", "-d", action="store_true",
        help="supervise in the background; return once all are ready, printing the run id (stop: supervisor stop ID)",
    )  # fmt: skip
    run.add_argument("--notify-fd", type=int, help=argparse.SUPPRESS)  # --detach's channel to the background run
    run.epilog = (
        "supervisor run FILE -- CMD ARGS runs CMD once all are ready ({svc.url} templates work); CMD's environment "
        "has TOPOVISOR_<SERVICE>_URL, _URLS, _PORT and TOPOVISOR_RUN_DIR."
    )
    validate.add_argument(
        "--nodes", type=node_count, metavar="N",
        help="show the placement plan on N Slurm nodes (placeholders node0..; no cluster needed)",
    )  # fmt: skip
    validate.add_argument(
        "--commands", "-c", action="store_true",
        help="also show each replica's command line and the environment it adds (secrets redacted)",
    )  # fmt: skip
    sbatch = with_file("sbatch", "write (or --submit) the batch script that runs FILE in a Slurm allocation")
    sbatch.set_defaults(slurm=True)
    add_sbatch_arguments(sbatch)
    graph = with_file("graph", "draw the dependency graph (conditions, replicas, GPUs); starts nothing")
    graph.add_argument("--format", "-f", choices=FORMATS, default="text", help="text (default), mermaid or dot")
    add_commands(commands)
    add_gpus_command(commands)
    return parser


def _overrides(pairs: list[str]) -> dict[str, str]:
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE")
        overrides[key.strip()] = value
    return overrides


def _plan(args: argparse.Namespace, *, check_executables: bool = True) -> Plan:
    """Load, validate and resolve; with ``-- CMD`` also CMD's templates and program: exit 2 starts nothing."""
    global _secrets
    topology = load(args.file, overrides=_overrides(args.overrides))
    nodes_wanted = getattr(args, "nodes", None)
    if getattr(args, "slurm", False) or nodes_wanted is not None:
        topology = with_slurm(topology, nodes_wanted)
    if args.command == "sbatch":
        topology = apply_sbatch_flags(topology, args)
    args.notes = placement_notes(topology)
    if args.gpus:
        from .._host.gpu_inventory import SimulatedInventory

        args.inventory = SimulatedInventory.parse(args.gpus)
    else:
        args.inventory = None
    # run: the allocation's nodes (taken now: they decide {host}); the other commands plan on placeholders,
    # and so does run --detach's parent, which only checks the file: the background run takes the allocation
    args.allocation = None
    taking = args.command == "run" and not getattr(args, "detach", False)
    if taking and topology.cluster is not None and topology.cluster.slurm is not None:
        from .._host.slurm_alloc import allocation_for

        args.allocation = allocation_for(topology)
    try:
        nodes = args.allocation.nodes if args.allocation is not None else planning_nodes(topology)
        plan = make_plan(
            topology, runs_dir=args.runs_dir, gpus=args.inventory, check_executables=check_executables, nodes=nodes
        )
    except BaseException:
        _release(args)
        raise
    _secrets = Redactor.from_environments(os.environ, *(r.env for s in plan.services for r in s.replicas))
    cmd: list[str] = getattr(args, "cmd", [])
    if cmd:
        args.filled_cmd = fill_command(cmd, plan)
        args.cmd_env = plan.client_env()  # a name collision is bad input too: exit 2, nothing started
    return plan


#: what the console must never show: the caller's secrets, and the services' once a plan is made
_secrets = Redactor.from_environments(os.environ)


def _say(message: str) -> None:
    from .console import stamp

    print(f"{stamp()} [supervisor] {_secrets.text(message)}", file=sys.stderr, flush=True)


def _error(message: str) -> None:
    print(f"supervisor: {_secrets.text(message)}", file=sys.stderr)


def _validate(args: argparse.Namespace) -> int:
    plan = _plan(args)
    replicas = sum(len(s.replicas) for s in plan.services)
    print(f"ok: {args.file}: {len(plan.services)} services, {replicas} replicas")
    width = max((len(r.name) for s in plan.services for r in s.replicas), default=0)
    uses_gpus = any(r.gpus for s in plan.services for r in s.replicas)
    for service in plan.services:
        deps = ", ".join(f"{d.service} ({d.condition})" for d in service.depends_on) or "-"
        for replica in service.replicas:
            ports = " ".join(f"{k}={v}" for k, v in replica.ports.items()) or "-"
            gpus = f"  gpus: {','.join(map(str, replica.gpus)) or '-'}" if uses_gpus else ""
            where = f"  {where_it_runs(replica)}" if plan.nodes else ""
            print(f"  {replica.name:<{width}}  after: {deps:<30} ports: {ports}{gpus}{where}")
            if args.commands:
                tasks = replica.placement.argvs if replica.placement is not None else (replica.argv,)
                for rank, argv in enumerate(tasks):
                    if len(tasks) > 1:
                        print(f"    # rank {rank} on {replica.placement.nodes[rank].name}")  # type: ignore[union-attr]
                    _show_command(argv, replica.env, replica.cwd)
    for line in placement_lines(plan):
        print(line)
    for note in args.notes:
        print(f"note: {note}")
    if uses_gpus:
        node = args.inventory.description if args.inventory is not None else "this machine (NVML)"
        print(f"GPUs planned on {node}; each replica gets CUDA_VISIBLE_DEVICES=<its gpus>")
    return 0


def _graph(args: argparse.Namespace) -> int:
    """The graph needs the plan (replica counts and GPUs may come from vars) but not the engines."""
    print(render_graph(_plan(args, check_executables=False), args.format))
    return 0


def _show_command(argv: Sequence[str], env: Mapping[str, str], cwd: str | None) -> None:
    """The command as a shell would take it: what a user pastes to run one replica by hand."""
    prefix = "    "
    if cwd:
        print(f"{prefix}cd {shlex.quote(cwd)}")
    for name, value in _secrets.env(dict(env)).items():
        print(f"{prefix}{name}={shlex.quote(value)}")
    print(prefix + shlex.join(_secrets.argv(argv)))


def _check_logs(args: argparse.Namespace, plan: Plan) -> None:
    """``--logs`` names services or replicas of the plan: bad input, before anything starts."""
    services = {r.name: s.name for s in plan.services for r in s.replicas}
    unknown = sorted(set(args.logs or ()) - set(services) - set(services.values()))
    if unknown:
        known = ", ".join(sorted({*services, *services.values()}))
        raise ConfigError(f"--logs {' '.join(unknown)}: no such service or replica; it has: {known}")


def _reporter(args: argparse.Namespace, plan: Plan) -> PlainReporter | LiveReporter:
    """A live table when stderr is a terminal (and not ``-q``), else plain timestamped lines."""
    from .console import PlainReporter

    _check_logs(args, plan)
    services = {r.name: s.name for s in plan.services for r in s.replicas}
    logs: list[str] | None = args.logs
    options = {"quiet": args.quiet, "logs": logs, "redact": _secrets.text, "services": services}
    if not args.quiet and _is_terminal(sys.stderr) and os.environ.get("TERM") != "dumb":
        from .console import LiveReporter
        from .status import StatusBoard

        return LiveReporter(StatusBoard(plan), **options)
    return PlainReporter(**options)


def _is_terminal(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _release(args: argparse.Namespace) -> None:
    """Cancel the Slurm allocation ``run`` made (the group does it after its teardown; this catches a
    failure before the start). One we run inside stays."""
    allocation = getattr(args, "allocation", None)
    if allocation is not None:
        allocation.release()


@contextlib.contextmanager
def _head_start(plan: Plan, gpus: GpuInventory | None) -> Iterator[HeadStart | None]:
    """The services that wait for nothing start now, while the runtime is still being imported; what the
    run never adopted is killed on the way out. A ``cluster:`` run starts everything in the event loop."""
    if plan.cluster is not None:
        yield None
        return
    from .._runtime.headstart import HeadStart

    with HeadStart.begin(plan, gpus) as head_start:
        yield head_start


def _run(args: argparse.Namespace) -> int:
    plan = _plan(args)
    try:
        return _run_plan(args, plan)
    finally:
        _release(args)


def _run_plan(args: argparse.Namespace, plan: Plan) -> int:
    if args.notify_fd is not None:
        output_to_run_dir(plan.run_dir)
    command: list[str] = getattr(args, "filled_cmd", [])
    _check_logs(args, plan)
    started = time.monotonic()
    replicas = sum(len(s.replicas) for s in plan.services)

    async def body(group: RunningTopology) -> int | None:
        if not args.quiet:
            urls = ", ".join(f"{s.name} {s.url}" for s in group if s.url)
            reporter.say(f"all {replicas} ready in {time.monotonic() - started:.2f}s" + (f": {urls}" if urls else ""))
        await _snapshot_metrics(group, "ready", quiet=args.quiet)
        if args.notify_fd is not None:
            notify(args.notify_fd, f"ready {group.run_id} {group.run_dir}")
        try:
            if command:
                reporter.pause()  # CMD writes to the terminal from here: no table redrawn over it
                return await run_command(group, command, args.cmd_env, stop_signals)
            await group.wait()
            return None
        finally:
            with anyio.CancelScope(shield=True):  # bounded: each endpoint has its timeout
                await _snapshot_metrics(group, "final", quiet=args.quiet)

    stop_signals: list[int] = []
    with hold_signals() as early, _head_start(plan, args.inventory) as head_start:
        import anyio  # the runtime: everything from here on is imported while the first replicas run

        from .._runtime.runner import supervise

        reporter = _reporter(args, plan)
        if not args.quiet:
            _say(f"run {plan.run_id}: {replicas} replicas, logs in {plan.run_dir / 'logs'}")
            if args.allocation is not None:
                whose = "ours, cancelled at the end" if args.allocation.owned else "the caller's, left as it is"
                names = ",".join(node.name for node in args.allocation.nodes)
                _say(f"Slurm job {args.allocation.job_id} ({whose}) on {names}")
            for note in args.notes:
                _say(f"note: {note}")
        with _summary_at_end(plan.run_dir, quiet=args.quiet), reporter:
            outcome = anyio.run(
                lambda: supervise(
                    plan,
                    body,
                    on_event=reporter.event,
                    on_output=reporter.output,
                    on_signal=stop_signals.append,
                    early_signals=early,
                    gpus=args.inventory,
                    _head_start=head_start,
                    _allocation=args.allocation,
                )
            )
    down = (
        f"{len(outcome.leftovers)} processes survived the teardown: {list(outcome.leftovers)}"
        if outcome.leftovers
        else "everything is down (verified: no process of the run is left)"
    )
    if outcome.signal is not None:
        _say(f"stopped by {signal.Signals(outcome.signal).name}; {down}")
        return 128 + outcome.signal
    if not args.quiet or outcome.leftovers:
        _say(down)
    return outcome.result if isinstance(outcome.result, int) else 0


async def _snapshot_metrics(group: RunningTopology, label: str, *, quiet: bool) -> None:
    """``<run_dir>/metrics/<label>/`` when a service declares ``metrics:``; a failure is a warning line."""
    if not any(r.plan.metrics for r in group.replicas):
        return
    try:
        snapshot = await group.snapshot_metrics(label)
    except OSError as exc:
        _error(f"metrics snapshot '{label}' not saved: {exc}")
        return
    for endpoint in snapshot.failed:
        _error(f"metrics snapshot '{label}': {endpoint.replica} {endpoint.url}: {endpoint.error}")
    if not quiet and snapshot.endpoints:
        saved = len(snapshot.endpoints) - len(snapshot.failed)
        _say(f"metrics '{label}': {saved}/{len(snapshot.endpoints)} endpoints saved in {snapshot.directory}")


@contextlib.contextmanager
def _summary_at_end(run_dir: Path, *, quiet: bool) -> Iterator[None]:
    """Print ``summary.json`` once the run is over, however it ended (before a failure's error line);
    with ``quiet``, only the replicas that had problems."""
    try:
        yield
    finally:
        from .._records.summary import read_summary
        from .._records.summary_text import render_summary

        with contextlib.suppress(FileNotFoundError):
            for line in render_summary(read_summary(run_dir), quiet=quiet):
                print(_secrets.text(line), file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    original_argv = argv
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1 :]
    parser = _parser()
    args = parser.parse_args(argv)
    args.cmd = command
    if args.command == "run" and args.file is None:
        if not args.logs:
            print("supervisor run: error: the following arguments are required: file", file=sys.stderr)
            return EXIT_BAD_INPUT
        args.file = args.logs.pop()
    if command and args.command not in ("run", "sbatch"):
        print("supervisor: error: only 'run' and 'sbatch' take a command after --", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.command in COMMANDS:  # loaded only for these commands: `run` stays light
        from .runs import dispatch

        code = dispatch(args)
        if code is not None:
            return code
    if args.command == "gpus":
        return gpus_command(args)
    notify_fd = getattr(args, "notify_fd", None)
    try:
        if args.command == "validate":
            return _validate(args)
        if args.command == "graph":
            return _graph(args)
        if args.command == "sbatch":  # engines may exist only on the compute nodes: not looked for here
            return sbatch_command(args, _plan(args, check_executables=False), _overrides(args.overrides))
        if args.detach:
            _plan(args)  # bad input is reported here, by the process the user is watching
            argv_given = list(sys.argv[1:] if original_argv is None else original_argv)
            return detach(args, argv_given, say=_say, error=_error)
        return _run(args)
    except ConfigError as exc:
        if notify_fd is not None:
            notify(notify_fd, _secrets.text(f"error error: {exc}"))
        _error(f"error: {exc}")
        return EXIT_BAD_INPUT
    except SupervisorError as exc:
        if notify_fd is not None:
            notify(notify_fd, _secrets.text(f"error {exc}"))
        _error(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())
