"""``supervisor run | validate | graph | sbatch FILE``: the commands on a topology file.

Each plans first (load, validate, resolve) and reports bad input with exit 2 before anything starts;
``run`` then starts the services that wait for nothing before the event loop (the head start), and
supervises the rest. Exit codes: 0 success, 1 a service failed, 2 bad input (nothing was started), 128+N
stopped by signal N, and with ``run FILE -- CMD`` the exit code of CMD.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import attrs

from .._errors import ConfigError, SupervisorError
from .._host.signals import hold_signals
from .._marks import CONTAINMENT_ENV
from .._plan.placement import planning_nodes
from .._plan.plan import Plan, fill_command, make_plan
from .._spec.cluster import placement_notes, with_slurm
from .._spec.load import load
from .._units import counted
from . import command as _cmd
from .context import Invocation
from .detach import detach, let_stop_signals_in, notify, output_to_run_dir
from .placement import placement_lines, where_it_runs
from .table import parse_overrides

if TYPE_CHECKING:  # the runtime loads once the first replicas run (``run``): a fast start is the point
    from .._host.gpu_inventory import GpuInventory
    from .._host.slurm_alloc import SlurmAllocation
    from .._runtime.group import RunningTopology
    from .._runtime.headstart import HeadStart
    from .console import LiveReporter, PlainReporter

__all__ = ["Planned", "graph_command", "plan_invocation", "run_command", "sbatch_command", "validate_command"]


class Planned(NamedTuple):
    """What planning a command's file worked out, beside the plan itself."""

    plan: Plan
    notes: list[str]  #: placement notes (``--slurm`` on a file without ``cluster:``...)
    inventory: GpuInventory | None  #: the simulated node of ``--gpus``, or None (NVML when asked)
    allocation: SlurmAllocation | None  #: ``run``'s Slurm allocation, taken before planning
    command: list[str]  #: ``-- CMD`` with its templates filled
    command_env: dict[str, str]  #: what CMD finds in its environment: the services' addresses


def plan_invocation(call: Invocation, *, check_executables: bool = True) -> Planned:
    """Load, validate and resolve; with ``-- CMD`` also CMD's templates and program: exit 2 starts nothing."""
    args = call.args
    topology = load(args.file, overrides=parse_overrides(args.overrides))
    nodes_wanted = getattr(args, "nodes", None)
    if getattr(args, "slurm", False) or nodes_wanted is not None:
        topology = with_slurm(topology, nodes_wanted)
    if getattr(args, "containment", None):
        topology = attrs.evolve(topology, containment=args.containment)
    if args.command == "sbatch":
        from .sbatch import apply_sbatch_flags

        topology = apply_sbatch_flags(topology, args)
    inventory = None
    if args.gpus:
        from .._host.gpu_inventory import SimulatedInventory

        inventory = SimulatedInventory.parse(args.gpus)
    # run: the allocation's nodes (taken now: they decide {host}); the other commands plan on placeholders,
    # and so does run --detach's parent, which only checks the file: the background run takes the allocation
    allocation = None
    taking = args.command == "run" and not getattr(args, "detach", False)
    if taking and topology.cluster is not None and topology.cluster.slurm is not None:
        from .._host.slurm_alloc import allocation_for

        allocation = allocation_for(topology)
    try:
        nodes = allocation.nodes if allocation is not None else planning_nodes(topology)
        plan = make_plan(
            topology, runs_dir=args.runs_dir, gpus=inventory, check_executables=check_executables, nodes=nodes
        )
        replicas = [r for s in plan.services for r in s.replicas]
        call.voice.learn(*(r.env for r in replicas), argvs=[r.argv for r in replicas])
        filled = fill_command(call.command, plan) if call.command else []
        command_env = plan.client_env() if call.command else {}  # a name collision is bad input too: exit 2
    except BaseException:
        if allocation is not None:  # ours to cancel (one we run inside stays): nothing will start in it
            allocation.release()
        raise
    return Planned(plan, placement_notes(topology), inventory, allocation, filled, command_env)


# ----- validate, graph, sbatch ---------------------------------------------------------------------------
def validate_command(call: Invocation) -> int:
    planned = plan_invocation(call)
    plan = planned.plan
    replicas = sum(len(s.replicas) for s in plan.services)
    print(f"ok: {call.args.file}: {counted(len(plan.services), 'service')}, {counted(replicas, 'replica')}")
    width = max((len(r.name) for s in plan.services for r in s.replicas), default=0)
    uses_gpus = any(r.gpus for s in plan.services for r in s.replicas)
    for service in plan.services:
        deps = ", ".join(f"{d.service} ({d.condition})" for d in service.depends_on) or "-"
        for replica in service.replicas:
            ports = " ".join(f"{k}={v}" for k, v in replica.ports.items()) or "-"
            gpus = f"  gpus: {','.join(map(str, replica.gpus)) or '-'}" if uses_gpus else ""
            where = f"  {where_it_runs(replica)}" if plan.nodes else ""
            print(f"  {replica.name:<{width}}  after: {deps:<30} ports: {ports}{gpus}{where}")
            if call.args.commands:
                tasks = replica.placement.argvs if replica.placement is not None else (replica.argv,)
                for rank, argv in enumerate(tasks):
                    if len(tasks) > 1:
                        print(f"    # rank {rank} on {replica.placement.nodes[rank].name}")  # type: ignore[union-attr]
                    _show_command(call, argv, replica.env, replica.cwd, replica.unset_env)
    for line in placement_lines(plan):
        print(line)
    for note in planned.notes:
        print(f"note: {note}")
    if uses_gpus:
        amd = plan.gpu_vendor == "amd"
        node = planned.inventory.description if planned.inventory is not None else "this machine (NVML)"
        if planned.inventory is None and amd:
            node = "this machine (amdsmi)"
        variable = "HIP_VISIBLE_DEVICES" if amd else "CUDA_VISIBLE_DEVICES"
        print(f"GPUs planned on {node}; each replica gets {variable}=<its gpus>")
    return 0


def graph_command(call: Invocation) -> int:
    """The graph needs the plan (replica counts and GPUs may come from vars) but not the engines."""
    from .._plan.graph import render_graph

    print(render_graph(plan_invocation(call, check_executables=False).plan, call.args.format))
    return 0


def sbatch_command(call: Invocation) -> int:
    """Engines may exist only on the compute nodes: not looked for here. With ``--vary``: a sweep's script."""
    from .sbatch import sweep_flags, sweep_plans, write_sbatch

    overrides = parse_overrides(call.args.overrides)
    sweep = sweep_flags(call.args)
    if sweep is not None:
        if not call.command:
            raise ConfigError("sbatch FILE --vary ...: no client command: give it after -- (CMD ARGS)")
        plans, sets = sweep_plans(call.args, call.command, overrides)
        return write_sbatch(call.args, call.command, plans, sets, sweep)
    plan = plan_invocation(call, check_executables=False).plan
    return write_sbatch(call.args, call.command, plan, overrides)


def _show_command(
    call: Invocation, argv: Sequence[str], env: Mapping[str, str], cwd: str | None, unset: Sequence[str] = ()
) -> None:
    """The command as a shell would take it: what a user pastes to run one replica by hand."""
    import shlex  # validate --commands only: run starts its first replica without it

    prefix = "    "
    secrets = call.voice.redactor
    if cwd:
        print(f"{prefix}cd {shlex.quote(cwd)}")
    if unset:  # inherited values that would disagree with the replica's own (ROCm's device variables)
        print(f"{prefix}unset {' '.join(unset)}")
    for name, value in secrets.env(dict(env)).items():
        print(f"{prefix}{name}={shlex.quote(value)}")
    print(prefix + shlex.join(secrets.argv(argv)))


# ----- run -----------------------------------------------------------------------------------------------
def run_command(call: Invocation) -> int:
    """``supervisor run FILE [-- CMD]``, or with ``--detach`` the same in the background."""
    args = call.args
    if args.notify_fd is not None:  # the background run of --detach: its parent held these while spawning it
        let_stop_signals_in()
    if args.file is None:
        if not args.logs:
            print("supervisor run: error: the following arguments are required: file", file=sys.stderr)
            return 2
        file_last = {**vars(args), "logs": args.logs[:-1], "file": args.logs[-1]}  # ``run --logs api FILE``
        call = call._replace(args=argparse.Namespace(**file_last))
    stop_warming = _warm_cgroup_moves(call.args)
    try:
        planned = plan_invocation(call)
        if call.args.detach:  # bad input was reported above, by the process the user is watching
            return detach(call.args, call.argv, say=call.voice.say, error=call.voice.error)
        try:
            return _run(call, planned, stop_warming)
        finally:
            if planned.allocation is not None:  # the group released it after its teardown: this is for a
                planned.allocation.release()  # failure before the start. One we run inside stays.
    except SupervisorError as exc:
        if call.args.notify_fd is not None:  # the --detach parent waits for this line
            kind = "error error: " if isinstance(exc, ConfigError) else "error "
            notify(call.args.notify_fd, call.voice.text(f"{kind}{exc}"))
        raise


def _warm_cgroup_moves(args: argparse.Namespace) -> Callable[[], None]:
    """While the file is read and planned, the kernel gets ready for the replicas' cgroup moves (see
    ``containment.warm_moves``): a run on this machine, not a ``--detach`` parent or a run told marks."""
    if args.detach or args.slurm or args.containment == "marks" or os.environ.get(CONTAINMENT_ENV) == "marks":
        return lambda: None
    from .._host.containment import warm_moves

    return warm_moves()


def _check_logs(logs: Sequence[str] | None, plan: Plan) -> None:
    """``--logs`` names services or replicas of the plan: bad input, before anything starts."""
    services = {r.name: s.name for s in plan.services for r in s.replicas}
    unknown = sorted(set(logs or ()) - set(services) - set(services.values()))
    if unknown:
        known = ", ".join(sorted({*services, *services.values()}))
        raise ConfigError(f"--logs {' '.join(unknown)}: no such service or replica; it has: {known}")


def _reporter(call: Invocation, plan: Plan) -> PlainReporter | LiveReporter:
    """A live table when stderr is a terminal (and not ``-q``), else plain timestamped lines."""
    from .console import PlainReporter

    args = call.args
    services = {r.name: s.name for s in plan.services for r in s.replicas}
    options = {"quiet": args.quiet, "logs": args.logs, "redact": call.voice.text, "services": services}
    if not args.quiet and _is_terminal(sys.stderr) and os.environ.get("TERM") != "dumb":
        from .console import LiveReporter
        from .status import StatusBoard

        return LiveReporter(StatusBoard(plan), **options)
    return PlainReporter(**options)


def _is_terminal(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


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


def _run(call: Invocation, planned: Planned, stop_warming: Callable[[], None]) -> int:
    args, plan, say = call.args, planned.plan, call.voice.say
    if args.notify_fd is not None:
        output_to_run_dir(plan.run_dir)
    _check_logs(args.logs, plan)
    started = time.monotonic()
    replicas = sum(len(s.replicas) for s in plan.services)

    async def body(group: RunningTopology) -> int | None:
        if not args.quiet:
            urls = ", ".join(f"{s.name} {s.url}" for s in group if s.url)
            reporter.say(f"all {replicas} ready in {time.monotonic() - started:.2f}s" + (f": {urls}" if urls else ""))
        await _snapshot_metrics(call, group, "ready")
        if args.notify_fd is not None:
            notify(args.notify_fd, f"ready {group.run_id} {group.run_dir}")
        try:
            if planned.command:
                reporter.pause()  # CMD writes to the terminal from here: no table redrawn over it
                voice = None if args.quiet else call.voice.say
                return await _cmd.run_command(group, planned.command, planned.command_env, stop_signals, voice)
            await group.wait()
            return None
        finally:
            with anyio.CancelScope(shield=True):  # bounded: each endpoint has its timeout
                await _snapshot_metrics(call, group, "final")

    stop_signals: list[int] = []
    with hold_signals() as early, _head_start(plan, planned.inventory) as head_start:
        stop_warming()  # the first replicas moved into their cgroups
        import anyio  # the runtime: everything from here on is imported while the first replicas run

        from .._runtime.runner import supervise_prepared

        reporter = _reporter(call, plan)
        if not args.quiet:
            # the run's first lines, stamped when it began: the head start's spawns, printed after them as
            # events, happened after that (printed now, they would read as earlier than the header)
            began = head_start.began_wall_time if head_start is not None else None
            say(f"run {plan.run_id}: {counted(replicas, 'replica')}, logs in {plan.run_dir / 'logs'}", wall_time=began)
            allocation = planned.allocation
            if allocation is not None:
                whose = "ours, cancelled at the end" if allocation.owned else "the caller's, left as it is"
                on = ",".join(node.name for node in allocation.nodes)
                say(f"Slurm job {allocation.job_id} ({whose}) on {on}", wall_time=began)
            for note in planned.notes:
                say(f"note: {note}", wall_time=began)
            if head_start is not None and head_start.containment is not None:
                say(head_start.containment.describe(), wall_time=began)
            elif plan.cluster is not None:
                say("containment: each replica in its Slurm step's cgroup (Slurm makes and kills it)", wall_time=began)
        with _summary_at_end(call, plan.run_dir), reporter:
            outcome = anyio.run(
                lambda: supervise_prepared(
                    plan,
                    body,
                    on_event=reporter.event,
                    on_output=reporter.output if reporter.reads_output else None,
                    on_signal=stop_signals.append,
                    early_signals=early,
                    gpus=planned.inventory,
                    head_start=head_start,
                    allocation=planned.allocation,
                    on_group=reporter.follow,
                )
            )
    down = (
        f"{len(outcome.leftovers)} processes survived the teardown: {list(outcome.leftovers)}"
        if outcome.leftovers
        else "everything is down (verified: no process of the run is left)"
    )
    if outcome.signal is not None:
        say(f"stopped by {signal.Signals(outcome.signal).name}; {down}")
        return 128 + outcome.signal
    if not args.quiet or outcome.leftovers:
        say(down)
    return outcome.result if isinstance(outcome.result, int) else 0


async def _snapshot_metrics(call: Invocation, group: RunningTopology, label: str) -> None:
    """``<run_dir>/metrics/<label>/`` when a service declares ``metrics:``; a failure is a warning line."""
    if not any(r.plan.metrics for r in group.replicas):
        return
    try:
        snapshot = await group.snapshot_metrics(label)
    except OSError as exc:
        call.voice.error(f"metrics snapshot '{label}' not saved: {exc}")
        return
    for endpoint in snapshot.failed:
        call.voice.error(f"metrics snapshot '{label}': {endpoint.replica} {endpoint.url}: {endpoint.error}")
    if not call.args.quiet and snapshot.endpoints:
        saved = len(snapshot.endpoints) - len(snapshot.failed)
        call.voice.say(f"metrics '{label}': {saved}/{len(snapshot.endpoints)} endpoints saved in {snapshot.directory}")


@contextlib.contextmanager
def _summary_at_end(call: Invocation, run_dir: Path) -> Iterator[None]:
    """Print ``summary.json`` once the run is over, however it ended (before a failure's error line);
    with ``quiet``, only the replicas that had problems."""
    try:
        yield
    finally:
        from .._records.summary import read_summary
        from .._records.summary_text import render_summary

        with contextlib.suppress(FileNotFoundError):
            for line in render_summary(read_summary(run_dir), quiet=call.args.quiet):
                print(call.voice.text(line), file=sys.stderr, flush=True)
