"""``supervisor sbatch FILE``: the batch script that runs the topology inside a Slurm allocation.

The file is loaded and planned first (on placeholder nodes), so a bad file fails here with exit 2 and not
in the queue. Prints the script (or writes ``-o FILE``); ``--submit`` hands it to ``sbatch`` and prints the
job id. Flags set ``cluster.slurm`` fields, as ``--set cluster.slurm.partition=P`` would.

With ``--vary K=V1,V2`` (and the sweep's ``--trials``, ``--order``...) the script runs a sweep instead:
``supervisor sweep FILE --slurm ... -- CMD``, every trial in the batch job. Every arm is checked here (exit 2
for any problem of any), and the job asks for what the largest arm needs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from .._errors import ConfigError, SupervisorError
from .._plan.plan import Plan
from .._spec.model import Topology
from .._units import slurm_time
from .placement import node_count

if TYPE_CHECKING:
    from .._experiment.arms import Arm

__all__ = ["add_sbatch_arguments", "apply_sbatch_flags", "sweep_flags", "sweep_plans", "write_sbatch"]

_FIELDS = ("partition", "account", "time", "qos", "constraint")


def add_sbatch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", "-N", type=node_count, metavar="N", help="nodes of the allocation")
    for name in _FIELDS:
        example = {"time": " (2h, 90m or Slurm's 2:00:00)"}.get(name, "")
        parser.add_argument(f"--{name}", metavar=name.upper(), help=f"cluster.slurm.{name}{example}")
    parser.add_argument("--output", "-o", metavar="FILE", help="write the script here instead of printing it")
    parser.add_argument("--submit", action="store_true", help="submit it with sbatch and print the job id")
    parser.epilog = (
        "supervisor sbatch FILE -- CMD ARGS: the job runs CMD once all are ready, and ends with it. "
        "supervisor sbatch FILE --vary K=V1,V2 -- CMD ARGS: the job runs that sweep, CMD being its client."
    )


def apply_sbatch_flags(topology: Topology, args: argparse.Namespace) -> Topology:
    """``--partition P`` etc. on the (already Slurm-enabled) topology; a bad ``--time`` names the flag."""
    cluster = topology.cluster
    if cluster is None or cluster.slurm is None:
        return topology
    changes: dict[str, Any] = {}
    for name in _FIELDS:
        value = getattr(args, name, None)
        if value is None:
            continue
        if name == "time":
            try:
                value = slurm_time(value)
            except ValueError as exc:
                raise ConfigError(f"--time: {exc}") from None
        changes[name] = value
    if not changes:
        return topology
    return attrs.evolve(topology, cluster=attrs.evolve(cluster, slurm=attrs.evolve(cluster.slurm, **changes)))


def sweep_flags(args: argparse.Namespace) -> list[str] | None:
    """The flags of ``supervisor sweep`` that the script passes on (None: no ``--vary``, the script of a run);
    a sweep's flag without ``--vary`` is bad input."""
    flags: list[str] = []
    for pair in args.vary:
        flags += ["--vary", pair]
    for name in ("trials", "order", "seed", "warmup"):
        value = getattr(args, name)
        if value is not None:
            flags += [f"--{name}", str(value)]
    if args.fail_fast:
        flags.append("--fail-fast")
    if flags and not args.vary:
        raise ConfigError(f"{flags[0]} is a sweep's: give --vary KEY=V1,V2 too (sbatch FILE --vary ... -- CMD)")
    return flags or None


def sweep_plans(
    args: argparse.Namespace, command: list[str], overrides: dict[str, str]
) -> tuple[list[Plan], dict[str, str]]:
    """Every arm of the sweep planned on the job's placeholder nodes (its problems all at once: exit 2); and
    the overrides the script's sweep line carries: the ``--set`` and the flags' ``cluster.slurm`` fields,
    ``nodes`` the largest arm's (``--nodes``, or what its file or placements ask for) when not given."""
    from .._experiment.arms import arms_from_vary, check_arms, empty_vary, parse_vary, parse_warmup
    from .._experiment.order import trial_order
    from .._host.gpu_inventory import SimulatedInventory

    vary = parse_vary(args.vary)
    sets = dict(overrides)
    nodes = args.nodes if args.nodes is not None else _largest_arm(arms_from_vary(args.file, vary, overrides))
    if nodes is not None:  # first: a cluster.slurm field set below would give a file without cluster: 1 node
        sets["cluster.slurm.nodes"] = str(nodes)
    for name in _FIELDS:
        value = getattr(args, name, None)
        if value is not None:
            try:
                sets[f"cluster.slurm.{name}"] = slurm_time(value) if name == "time" else value
            except ValueError as exc:
                raise ConfigError(f"--time: {exc}") from None
    problems = empty_vary(vary)
    arms = arms_from_vary(args.file, vary, sets)
    try:
        trial_order(len(arms), args.trials or 1, args.order or "ABBA", args.seed)
    except ConfigError as exc:
        problems += exc.problems
    inventory = SimulatedInventory.parse(args.gpus) if args.gpus else None
    plans: list[Plan] = []
    try:
        plans = check_arms(
            arms, command, args.runs_dir, warmup=parse_warmup(args.warmup), gpus=inventory, slurm=True,
            check_executables=False,
        )  # fmt: skip
    except ConfigError as exc:
        problems += exc.problems
    if problems or not plans:
        raise ConfigError(problems or ["no arm to run"])
    return plans, sets


def _largest_arm(arms: Sequence[Arm]) -> int | None:
    """The most nodes an arm asks for on Slurm (its file's ``cluster.slurm.nodes``, or as many as its
    placements need); an arm that does not load is left to ``check_arms`` to report."""
    from .._experiment.arms import load_arm

    counts = []
    for arm in arms:
        with contextlib.suppress(ConfigError):
            slurm = load_arm(arm, slurm=True).cluster
            if slurm is not None and slurm.slurm is not None and isinstance(slurm.slurm.nodes, int):
                counts.append(slurm.slurm.nodes)
    return max(counts, default=None)


def write_sbatch(
    args: argparse.Namespace,
    command: list[str],
    plan: Plan | list[Plan],
    overrides: dict[str, str],
    sweep: list[str] | None = None,
) -> int:
    """Print (or write, or submit) the script; ``sweep``: the sweep's flags, ``plan`` every arm's plan."""
    from .._plan.sbatch import batch_script

    file = os.path.abspath(args.file) if os.path.exists(args.file) else args.file  # else a bundled preset
    runs_dir = os.path.abspath(args.runs_dir) if args.runs_dir else None
    try:
        script = batch_script(
            plan, file, overrides, python=sys.executable, cwd=os.getcwd(), runs_dir=runs_dir,
            command=command, environ=os.environ, sweep=sweep,
        )  # fmt: skip
    except ValueError as exc:
        source = plan.source if isinstance(plan, Plan) else plan[0].source
        raise ConfigError(str(exc), source=source) from None
    if args.output:
        with open(args.output, "w") as out:
            out.write(script.text)
    elif not args.submit:
        sys.stdout.write(script.text)
    for name in script.secrets:
        if not args.submit and os.environ.get(name) != script.secrets[name]:
            print(f"supervisor: note: the script reads a secret from ${name}: export it before sbatch", file=sys.stderr)
    if not args.submit:
        return 0
    return _submit(script.text, script.secrets, args.output)


def _submit(text: str, secrets: Mapping[str, str], path: str | None) -> int:
    """``sbatch --parsable`` (the script on stdin, or the file written); prints the job id."""
    program = shutil.which("sbatch")
    if program is None:
        raise SupervisorError("sbatch not found on PATH: submit from a Slurm login node, or write the script with -o")
    argv = [program, "--parsable", *([path] if path else [])]
    env = {**os.environ, **secrets}  # sbatch hands its environment to the job: the secrets travel there
    if path:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=120)
    else:
        done = subprocess.run(argv, input=text, capture_output=True, text=True, env=env, timeout=120)
    if done.returncode != 0:
        raise SupervisorError(f"sbatch failed (exit {done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    job = done.stdout.strip().split(";", 1)[0]
    print(job)
    return 0
