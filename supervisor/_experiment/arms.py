"""The arms of an experiment and the checks made on all of them before the first trial starts.

An arm is one topology file with its overrides (``--set`` for every arm, plus the arm's own values); each
is loaded and planned once here, so a value that fails its field's type or a var that no field uses is
reported for every arm at once (``ConfigError``: exit 2, nothing started)."""

from __future__ import annotations

import itertools
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from .._errors import ConfigError

if TYPE_CHECKING:
    from .._host.gpu_inventory import GpuInventory
    from .._plan.plan import Plan
    from .._spec.model import Topology

__all__ = [
    "TRIAL_DIR_TEMPLATE",
    "Arm",
    "arms_from_files",
    "arms_from_sets",
    "arms_from_vary",
    "check_arms",
    "fill_trial_dir",
    "load_arm",
    "parse_warmup",
]

TRIAL_DIR_TEMPLATE = "{trial_dir}"  #: in ``-- CMD``: the trial's own folder (its result.json, artifacts)


@attrs.frozen
class Arm:
    """One configuration: ``file`` loaded with ``overrides`` (the shared ``--set`` and the arm's ``values``)."""

    label: str  #: how rows and the report name it: ``decode=2``, a file's stem, ``tp=1``
    file: str
    values: Mapping[str, str] = attrs.field(factory=dict)  #: what tells it from the other arms
    sets: Mapping[str, str] = attrs.field(factory=dict)  #: the ``--set`` every arm has
    tags: Mapping[str, str] = attrs.field(factory=dict)  #: columns only, set nothing: an arm's ``file``

    @property
    def columns(self) -> dict[str, str]:
        """What the rows say of the arm beside its label: its values (and its file when arms are files)."""
        return {**self.tags, **self.values}

    @property
    def overrides(self) -> dict[str, str]:
        return {**self.sets, **self.values}

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label, "file": self.file, "values": dict(self.values), "sets": dict(self.sets),
            "tags": dict(self.tags),
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Arm:
        return cls(
            str(data["label"]), str(data["file"]), dict(data.get("values", {})), dict(data.get("sets", {})),
            dict(data.get("tags", {})),
        )  # fmt: skip


def parse_vary(pairs: Sequence[str]) -> dict[str, list[str]]:
    """``--vary decode=1,2`` pairs, each KEY once; ``decode=`` is kept as an empty list, for the sweep to
    report with the problems of the other arms."""
    problems: list[str] = []
    varied: dict[str, list[str]] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        values = [v.strip() for v in text.split(",")] if text.strip() else []
        if not sep or not key:
            problems.append(f"--vary {pair!r}: expected KEY=VALUE1,VALUE2")
        elif any(not v for v in values):
            problems.append(f"--vary {pair!r}: an empty value (expected {key}=VALUE1,VALUE2)")
        elif key in varied:
            problems.append(f"--vary {key}: given twice")
        else:
            varied[key] = values
    if problems:
        raise ConfigError(problems)
    return varied


def arms_from_vary(file: str, vary: Mapping[str, Sequence[object]], sets: Mapping[str, str]) -> list[Arm]:
    """The cartesian product of the varied values, the first var slowest: ``decode=1,2`` x ``seqs=64,128``.
    A var without values is left out here (the sweep reports it: ``empty_vary``)."""
    keys = [key for key, values in vary.items() if list(values)]
    arms = []
    for combination in itertools.product(*(vary[key] for key in keys)):
        values = {key: str(value) for key, value in zip(keys, combination, strict=True)}
        arms.append(Arm(" ".join(f"{k}={v}" for k, v in values.items()), file, values, dict(sets)))
    return arms if keys else []


def empty_vary(vary: Mapping[str, Sequence[object]]) -> list[str]:
    if not vary:
        return ["--vary: nothing to vary (expected --vary KEY=VALUE1,VALUE2)"]
    return [f"--vary {key}=: no value to vary over" for key, values in vary.items() if not list(values)]


def arms_from_files(files: Sequence[str], sets: Mapping[str, str]) -> list[Arm]:
    """One arm per file, named by its stem (by its path where two stems are the same)."""
    stems = [Path(f).stem for f in files]
    labels = stems if len(set(stems)) == len(stems) else [str(f) for f in files]
    return [Arm(label, str(f), {}, dict(sets), {"file": str(f)}) for label, f in zip(labels, files, strict=True)]


def arms_from_sets(file: str, each: Sequence[Mapping[str, str]], sets: Mapping[str, str]) -> list[Arm]:
    """``--a tp=1 --b tp=2``: one arm per group of sets, named by them (``A``, ``B`` when a group is empty)."""
    arms = []
    for index, values in enumerate(each):
        label = " ".join(f"{k}={v}" for k, v in values.items()) or chr(ord("A") + index)
        arms.append(Arm(label, file, dict(values), dict(sets)))
    if len({a.label for a in arms}) != len(arms):
        raise ConfigError("--a and --b: the two arms are the same configuration")
    return arms


def parse_warmup(text: str | None) -> list[str]:
    """``--warmup 'CMD ARGS'``: split as a shell would (quotes kept together), but never run by one."""
    if text is None:
        return []
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise ConfigError(f"--warmup {text!r}: {exc}") from None
    if not argv:
        raise ConfigError("--warmup: an empty command (expected --warmup 'CMD ARGS')")
    return argv


def fill_trial_dir(argv: Sequence[str], trial_dir: Path) -> list[str]:
    return [arg.replace(TRIAL_DIR_TEMPLATE, str(trial_dir)) for arg in argv]


def load_arm(arm: Arm, *, slurm: bool = False) -> Topology:
    """The arm's topology; ``slurm`` (a sweep on Slurm): with ``cluster: {slurm: {}}`` where its file has
    none, as ``run --slurm`` does."""
    from .._spec.cluster import with_slurm
    from .._spec.load import load

    topology = load(arm.file, overrides=arm.overrides)
    return with_slurm(topology) if slurm else topology


def check_arms(
    arms: Sequence[Arm],
    command: Sequence[str],
    runs_dir: str | None,
    *,
    warmup: Sequence[str] = (),
    gpus: GpuInventory | None = None,
    slurm: bool = False,
    check_executables: bool = True,
) -> list[Plan]:
    """Load and plan every arm, and fill the client's (and warm-up's) templates against each plan: every
    problem of every arm in one ``ConfigError``, before anything starts. Returns the arms' plans.

    On Slurm (``slurm``, or an arm's file has ``cluster: {slurm: ...}``) every arm is, and each is planned
    on placeholder nodes, as ``validate --slurm`` does: the allocation is taken only once all arms passed.
    ``check_executables`` False: the engines may exist only on the compute nodes (``sbatch``)."""
    from .._plan.placement import planning_nodes
    from .._plan.plan import fill_command, make_plan
    from .._spec.cluster import with_slurm
    from .._spec.load import load

    problems: list[str] = []
    loaded: list[tuple[Arm, Topology]] = []
    for arm in arms:
        try:
            loaded.append((arm, load(arm.file, overrides=arm.overrides)))
        except ConfigError as exc:
            problems.extend(f"arm {arm.label}: {p}" for p in exc.problems)
    slurm = slurm or any(t.cluster is not None and t.cluster.slurm is not None for _, t in loaded)
    plans: list[Plan] = []
    for arm, topology in loaded:
        try:
            if slurm:
                topology = with_slurm(topology)
            plan = make_plan(
                topology, runs_dir=runs_dir, gpus=gpus, nodes=planning_nodes(topology),
                check_executables=check_executables,
            )  # fmt: skip
            fill_command(fill_trial_dir(command, plan.run_dir / "trial"), plan)
            plan.client_env()
            plans.append(plan)
        except ConfigError as exc:
            problems.extend(f"arm {arm.label}: {p}" for p in exc.problems)
            continue
        if warmup:
            try:
                fill_command(fill_trial_dir(warmup, plan.run_dir / "trial"), plan)
            except ConfigError as exc:
                problems.extend(f"arm {arm.label}: --warmup {p.removeprefix('-- ')}" for p in exc.problems)
    if problems or not plans:
        raise ConfigError(problems or ["no arm to run"])
    return plans
