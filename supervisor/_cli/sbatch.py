"""``supervisor sbatch FILE``: the batch script that runs the topology inside a Slurm allocation.

The file is loaded and planned first (on placeholder nodes), so a bad file fails here with exit 2 and not
in the queue. Prints the script (or writes ``-o FILE``); ``--submit`` hands it to ``sbatch`` and prints the
job id. Flags set ``cluster.slurm`` fields, as ``--set cluster.slurm.partition=P`` would.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import attrs

from .._errors import ConfigError, SupervisorError
from .._plan.plan import Plan
from .._spec.model import Topology
from .._units import slurm_time
from .placement import node_count

__all__ = ["add_sbatch_arguments", "apply_sbatch_flags", "write_sbatch"]

_FIELDS = ("partition", "account", "time", "qos", "constraint")


def add_sbatch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", "-N", type=node_count, metavar="N", help="nodes of the allocation")
    for name in _FIELDS:
        example = {"time": " (2h, 90m or Slurm's 2:00:00)"}.get(name, "")
        parser.add_argument(f"--{name}", metavar=name.upper(), help=f"cluster.slurm.{name}{example}")
    parser.add_argument("--output", "-o", metavar="FILE", help="write the script here instead of printing it")
    parser.add_argument("--submit", action="store_true", help="submit it with sbatch and print the job id")
    parser.epilog = "supervisor sbatch FILE -- CMD ARGS: the job runs CMD once all are ready, and ends with it."


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


def write_sbatch(args: argparse.Namespace, command: list[str], plan: Plan, overrides: dict[str, str]) -> int:
    from .._plan.sbatch import batch_script

    file = os.path.abspath(args.file) if os.path.exists(args.file) else args.file  # else a bundled preset
    runs_dir = os.path.abspath(args.runs_dir) if args.runs_dir else None
    try:
        script = batch_script(
            plan, file, overrides, python=sys.executable, cwd=os.getcwd(), runs_dir=runs_dir,
            command=command, environ=os.environ,
        )  # fmt: skip
    except ValueError as exc:
        raise ConfigError(str(exc), source=plan.source) from None
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
