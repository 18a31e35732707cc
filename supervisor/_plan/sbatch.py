"""The batch script ``supervisor sbatch`` writes: ``supervisor run FILE`` inside a Slurm allocation, or
for a sweep (``sbatch FILE --vary ...``) ``supervisor sweep FILE --slurm``: every trial in the batch job.

Pure text from a plan (a sweep: every arm's) and the user's overrides. ``#SBATCH`` lines come from
``cluster.slurm`` (and the command's flags, already applied to it); the GPUs each node needs come from the
placement plan, so the allocation holds what the steps will ask for. The run line carries the same
``--set`` as the command, so the topology inside is the one that was checked outside.

Secrets never land in the script: a ``--set`` whose name looks secret, or whose value holds a secret of
the caller's environment or a URL password, is written as ``"KEY=${NAME}"`` and read from the job's
environment (sbatch passes the submitter's environment to the job; ``--submit`` sets it), with a guard
line that stops the job with a clear message when it is missing.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence

import attrs

from .._redact import Redactor, is_secret_name
from .._spec.placement import ReplicaPlacement
from .placement import gpus_per_node_needed
from .plan import Plan

__all__ = ["SIGNAL_MARGIN_SECONDS", "BatchScript", "batch_script"]

#: Slurm may send ``--signal`` up to 60 s early or late: the warning comes this long before the limit,
#: on top of the longest stop grace, so the teardown ends before Slurm kills the job.
SIGNAL_MARGIN_SECONDS = 90
_GPU_OPTIONS = ("--gres", "--gpus", "-G", "--gpus-per-node", "--gpus-per-task", "--gpus-per-socket")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@attrs.frozen
class BatchScript:
    """The script's text and the environment variables it reads secrets from (name -> value)."""

    text: str
    secrets: Mapping[str, str] = attrs.field(hash=False)


def batch_script(
    plan: Plan | Sequence[Plan],
    file: str,
    overrides: Mapping[str, str],
    *,
    python: str,
    cwd: str,
    runs_dir: str | None = None,
    command: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    sweep: Sequence[str] | None = None,
) -> BatchScript:
    """The batch script for ``plan`` (planned on ``cluster.slurm.nodes`` nodes) from ``file`` + ``overrides``.

    ``sweep``: the sweep's own flags (``--vary K=V1,V2 --trials N``...); ``plan`` is then every arm's plan,
    and the allocation is the largest arm's: the nodes, and the GPUs per node, any of them asks for."""
    plans = [plan] if isinstance(plan, Plan) else list(plan)
    specs = [p.cluster.slurm for p in plans if p.cluster is not None and p.cluster.slurm is not None]
    if not plans or len(specs) != len(plans):
        raise ValueError("batch_script needs a plan with cluster: {slurm: ...}")
    slurm = attrs.evolve(specs[0], nodes=max(spec.nodes for spec in specs))
    name = plans[0].name
    if sweep is None:
        lines = [
            "#!/bin/bash",
            f"# topology '{name}' on {slurm.nodes} Slurm nodes: written by `supervisor sbatch`; submit with sbatch.",
            "# The supervisor runs in this allocation, places each replica on its nodes (one srun step each),",
            "# and leaves the allocation to Slurm. It gets SIGTERM before the time limit and stops in order.",
        ]
    else:
        lines = [
            "#!/bin/bash",
            f"# a sweep of topology '{name}' ({len(plans)} arms) on {slurm.nodes} Slurm nodes: written by",
            "# `supervisor sbatch`; submit with sbatch. Every trial runs in this allocation, each replica on its",
            "# nodes (one srun step each), and the allocation is left to Slurm. A job that ends early (its time",
            "# limit) leaves the sweep resumable: supervisor sweep --resume ID, in a new job.",
        ]
    options = [f"--job-name=topovisor-{name}" + ("-sweep" if sweep is not None else ""), f"--nodes={slurm.nodes}"]
    for field in ("partition", "account", "time", "qos", "constraint"):
        value = getattr(slurm, field)
        if value is not None:
            options.append(f"--{field}={_sbatch_word(value)}")
    gpus = max(gpus_per_node_needed(_placements(p)) for p in plans)
    if gpus and not any(arg.split("=", 1)[0] in _GPU_OPTIONS for arg in slurm.extra):
        options.append(f"--gpus-per-node={gpus}")
    grace = max((r.stop.grace_seconds for p in plans for s in p.services for r in s.replicas), default=0.0)
    options.append(f"--signal=B:TERM@{int(grace) + SIGNAL_MARGIN_SECONDS}")
    options.append("--no-kill")  # a failed node ends only its steps: the supervisor moves its replicas
    lines += [f"#SBATCH {option}" for option in options]
    if slurm.extra:
        lines.append("#SBATCH " + " ".join(_sbatch_word(arg) for arg in slurm.extra))
    lines += ["set -euo pipefail", f"cd {shlex.quote(cwd)}"]

    redactor = Redactor.from_environments(environ or {}, {k: v for k, v in overrides.items() if is_secret_name(k)})
    secrets: dict[str, str] = {}
    args = [python, "-m", "supervisor", "run" if sweep is None else "sweep", file, "--slurm"]
    words = [shlex.quote(arg) for arg in args]
    for key, value in {**overrides, "cluster.slurm.nodes": str(slurm.nodes)}.items():
        if is_secret_name(key.rsplit(".", 1)[-1]) or redactor.text(value) != value:
            variable = _variable_for(key)
            secrets[variable] = value
            words += ["--set", shlex.quote(f"{key}=") + f'"${{{variable}}}"']
        else:
            words += ["--set", shlex.quote(f"{key}={value}")]
    if runs_dir is not None:
        words += ["--runs-dir", shlex.quote(runs_dir)]
    if sweep:
        if redactor.argv(sweep) != list(sweep):
            raise ValueError("a sweep's flag holds a secret: pass it through the environment instead")
        words += map(shlex.quote, sweep)
    if command:
        if any(redactor.argv(command)[i] != arg for i, arg in enumerate(command)):
            raise ValueError("the command after -- holds a secret: pass it through the environment instead")
        words += ["--", *map(shlex.quote, command)]
    for variable in secrets:
        lines.append(
            f': "${{{variable}:?{variable} is not set: export it before sbatch (the job gets your environment)}}"'
        )
    lines.append("exec " + " ".join(words))
    return BatchScript("\n".join(lines) + "\n", secrets)


def _placements(plan: Plan) -> Iterable[ReplicaPlacement | None]:
    return (r.placement for s in plan.services for r in s.replicas)


def _variable_for(key: str) -> str:
    """The environment variable a secret ``--set KEY`` is read from: the var's own name when it is one."""
    if _IDENTIFIER.fullmatch(key):
        return key
    return "TOPOVISOR_SET_" + re.sub(r"[^A-Za-z0-9]+", "_", key).strip("_").upper()


def _sbatch_word(value: str) -> str:
    """One ``#SBATCH`` argument: sbatch splits those lines at blanks, honouring double quotes."""
    if value and not re.search(r'[\s"]', value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
