"""``supervisor.sweep`` and ``supervisor.ab``: every arm checked before the first trial, the trials run in
the asked order, each row recorded once its trial ended, and the report of what was recorded."""

from __future__ import annotations

import contextlib
import hashlib
import random
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from .._errors import ConfigError
from .arms import Arm, arms_from_files, arms_from_sets, arms_from_vary, check_arms, empty_vary
from .gpus_free import clear_gpus
from .live import SweepProgress, format_left
from .on_slurm import sweep_allocation, sweep_cluster
from .order import trial_order
from .report import report_data, report_text
from .results import SweepDir, find_sweep, new_sweep_id
from .trial import run_trial

if TYPE_CHECKING:
    from .._host.gpu_inventory import GpuInventory
    from .._host.slurm_alloc import SlurmAllocation
    from .._spec.model import SlurmCluster

__all__ = ["SweepResult", "ab", "read_sweep", "sweep"]

Say = Callable[[str], None]


@attrs.frozen
class SweepResult:
    """A sweep's record: its rows (one per trial done, in trial order) and the report made of them."""

    sweep_id: str
    path: Path  #: ``<runs dir>/sweeps/<id>/``: sweep.json, results.jsonl, results.csv, trials/
    arms: list[str]  #: labels, the first the baseline
    rows: list[dict[str, Any]]
    planned: int  #: trials in the order (rows fewer: not all done yet)
    report: dict[str, Any]  #: per figure and arm: median, min, max, ratio, overlaps
    axis: tuple[str, list[float]] | None = None  #: the one numeric key varied, and each arm's value of it

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row.get("status") != "ok"]

    def report_text(self) -> str:
        return report_text(self.sweep_id, self.report)

    def write_plot(self, path: str | Path, figures: Sequence[str] = ()) -> list[str]:
        """Charts of ``figures`` (default all) per arm, and a throughput/latency scatter, as PNG or SVG
        by ``path``'s suffix; returns the charts' titles. Needs matplotlib (``topovisor[plot]``)."""
        from .plot import write_plot

        return write_plot(
            Path(path), self.report, self.rows, title=f"sweep {self.sweep_id}", chosen=figures, axis=self.axis
        )


async def sweep(
    file: str | Path | None = None,
    *,
    command: Sequence[str] = (),
    vary: Mapping[str, Sequence[object]] | None = None,
    sets: Mapping[str, object] | None = None,
    trials: int = 1,
    order: str = "ABBA",
    seed: int | None = None,
    runs_dir: str | Path | None = None,
    fail_fast: bool = False,
    resume: str | None = None,
    warmup: Sequence[str] = (),
    gpus: GpuInventory | str | None = None,
    stop_stale: bool = False,
    slurm: bool = False,
    say: Say | None = None,
    on_start: Callable[[str], None] | None = None,
    _arms: Sequence[Arm] | None = None,
) -> SweepResult:
    """Run ``command`` (with ``{svc.url}``, ``{trial_dir}`` templates) against every combination of the
    ``vary`` values of ``file``, ``trials`` times each, every trial on a fresh launch, in ``order``.

    ``warmup``: a command (an argv with the same templates) run once all are ready, before the measured
    window. ``gpus``: the inventory (or a simulated node's spec, ``8x80GB``) trials are planned against.
    ``resume``: a sweep's id (or folder): run only its trials not yet done. Bad input, or a GPU the arms
    plan on held by a process (``stop_stale``: stop those of runs whose supervisor died), raises
    ``ConfigError`` before anything starts; a trial that failed is a row with ``status`` failed.
    ``say`` hears each trial begin and end, ``on_start`` the sweep's id before the first trial.
    ``slurm`` (also when an arm's file has ``cluster: {slurm: ...}``): every trial in one Slurm allocation,
    taken before the first trial and cancelled after the last (``_experiment.on_slurm``)."""
    node = _inventory(gpus)
    if resume is not None:
        return await _resume(resume, runs_dir, fail_fast, node, stop_stale, say, on_start)
    if command == ():
        raise ConfigError("no client command: sweep(..., command=[...]) (the CLI: -- CMD ARGS)")
    overrides = {str(k): str(v) for k, v in (sets or {}).items()}
    problems: list[str] = []
    if _arms is None:
        if file is None:
            raise ConfigError("sweep(): a topology file is needed")
        problems += empty_vary(vary or {})
        _arms = arms_from_vary(str(file), vary or {}, overrides)
    arms = list(_arms)
    seed = seed if seed is not None or order != "random" else random.SystemRandom().randrange(2**31)
    sequence: list[int] = []
    plans = []
    if arms:  # none: every --vary was empty, said above
        try:
            sequence = trial_order(len(arms), trials, order, seed)
        except ConfigError as exc:
            problems += exc.problems
        try:
            runs = None if runs_dir is None else str(runs_dir)
            plans = check_arms(arms, command, runs, warmup=warmup, gpus=node, slurm=slurm)
        except ConfigError as exc:
            problems += exc.problems
    if problems or not plans:
        raise ConfigError(problems or ["no arm to run"])
    await clear_gpus(plans, node, stop_stale=stop_stale, say=say)
    cluster = sweep_cluster(plans)
    folder = SweepDir(plans[0].run_dir.parent / "sweeps" / new_sweep_id())
    folder.write_spec(
        {
            "sweep_id": folder.sweep_id, "arms": [a.to_json() for a in arms],
            "varied": sorted({k for a in arms for k in a.columns}),
            "trials": trials, "order": order, "seed": seed, "sequence": sequence, "command": list(command),
            "warmup": list(warmup), "gpus": gpus if isinstance(gpus, str) else None,
            "runs_dir": None if runs_dir is None else str(Path(runs_dir).absolute()),
            "options": {"fail_fast": fail_fast}, "provenance": _provenance(arms), "slurm": cluster is not None,
        }
    )  # fmt: skip
    return await _run(folder, fail_fast, node, say, on_start, cluster)


async def ab(
    a: str | Path,
    b: str | Path | None = None,
    *,
    command: Sequence[str] = (),
    a_sets: Mapping[str, object] | None = None,
    b_sets: Mapping[str, object] | None = None,
    sets: Mapping[str, object] | None = None,
    trials: int = 1,
    order: str = "ABBA",
    seed: int | None = None,
    runs_dir: str | Path | None = None,
    fail_fast: bool = False,
    warmup: Sequence[str] = (),
    gpus: GpuInventory | str | None = None,
    stop_stale: bool = False,
    slurm: bool = False,
    say: Say | None = None,
    on_start: Callable[[str], None] | None = None,
) -> SweepResult:
    """A sweep of two arms: two files (``ab("A.yaml", "B.yaml")``), or one file with two groups of sets
    (``ab("f.yaml", a_sets={"tp": 1}, b_sets={"tp": 2})``); ``a`` is the baseline."""
    shared = {str(k): str(v) for k, v in (sets or {}).items()}
    if b is not None:
        if a_sets or b_sets:
            raise ConfigError("ab(): two files, or one file with a_sets and b_sets, not both")
        arms = arms_from_files([str(a), str(b)], shared)
    else:
        groups = [{str(k): str(v) for k, v in (g or {}).items()} for g in (a_sets, b_sets)]
        arms = arms_from_sets(str(a), groups, shared)
    return await sweep(
        command=command, trials=trials, order=order, seed=seed, runs_dir=runs_dir, fail_fast=fail_fast, warmup=warmup,
        gpus=gpus, stop_stale=stop_stale, slurm=slurm, say=say, on_start=on_start, _arms=arms,
    )  # fmt: skip


def read_sweep(sweep_id: str, runs_dir: str | Path | None = None) -> SweepResult:
    """A recorded sweep (finished or not), by id or folder: its rows and report."""
    return _result(SweepDir(find_sweep(sweep_id, _runs_base(runs_dir))))


async def _resume(
    sweep_id: str,
    runs_dir: str | Path | None,
    fail_fast: bool,
    node: GpuInventory | None,
    stop_stale: bool,
    say: Say | None,
    on_start: Callable[[str], None] | None,
) -> SweepResult:
    folder = SweepDir(find_sweep(sweep_id, _runs_base(runs_dir)))
    spec = folder.read_spec()
    if node is None and spec.get("gpus"):  # the simulated node it was planned on
        node = _inventory(spec["gpus"])
    arms = [Arm.from_json(a) for a in spec["arms"]]
    plans = check_arms(
        arms, spec["command"], spec["runs_dir"], warmup=spec.get("warmup", []), gpus=node,
        slurm=bool(spec.get("slurm")),
    )  # fmt: skip
    await clear_gpus(plans, node, stop_stale=stop_stale, say=say)
    fail_fast = fail_fast or bool(spec["options"].get("fail_fast"))
    return await _run(folder, fail_fast, node, say, on_start, sweep_cluster(plans))


async def _run(
    folder: SweepDir,
    fail_fast: bool,
    node: GpuInventory | None,
    say: Say | None,
    on_start: Callable[[str], None] | None,
    cluster: SlurmCluster | None = None,
) -> SweepResult:
    spec = folder.read_spec()
    if on_start is not None:
        on_start(folder.sweep_id)
    arms = [Arm.from_json(a) for a in spec["arms"]]
    sequence: list[int] = spec["sequence"]
    done = folder.done()
    progress = SweepProgress(folder.sweep_id, folder.path, len(sequence), len(done))
    if len(done) >= len(sequence):
        cluster = None  # nothing left to run: no allocation to wait for
    try:
        async with sweep_allocation(cluster, folder.sweep_id, folder.path) as allocation:
            if allocation is not None and say is not None:  # only one we took has a name
                whose = "ours, cancelled after the last trial" if allocation.name else "the caller's, left as it is"
                on = ",".join(member.name for member in allocation.nodes)
                say(f"Slurm job {allocation.job_id} ({whose}) on {on}: every trial runs in it")
            for position, index in enumerate(sequence, start=1):
                if position in done:
                    continue
                row = await _trial(folder, spec, arms[index], position, progress, node, say, allocation)
                if fail_fast and row["status"] != "ok":
                    break
    finally:
        progress.close()
    return _result(folder)


async def _trial(
    folder: SweepDir,
    spec: dict[str, Any],
    arm: Arm,
    position: int,
    progress: SweepProgress,
    node: GpuInventory | None,
    say: Say | None,
    allocation: SlurmAllocation | None,
) -> dict[str, Any]:
    """One trial of the sweep, its row recorded as soon as it ended."""
    planned = len(spec["sequence"])
    which = f"trial {position} of {planned} (arm {arm.label})"
    progress.begin(position, arm.label)
    if say is not None:
        left = progress.seconds_left()
        say(which + ("" if left is None else f", {format_left(left)}"))
    row = await run_trial(
        arm, position, spec["command"], folder.trial_dir(position), spec["runs_dir"], f"sweep {folder.sweep_id}",
        warmup=spec.get("warmup", []), gpus=node, allocation=allocation,
    )  # fmt: skip
    row.update(spec["provenance"].get(arm.label, {}))
    folder.add_row(row)
    progress.end()
    if say is not None:
        ending = "ok" if row["status"] == "ok" else f"failed: {row['error']}"
        say(f"{which}: run {row['run_id']} {ending}")
    return row


def _result(folder: SweepDir) -> SweepResult:
    spec = folder.read_spec()
    labels = [str(a["label"]) for a in spec["arms"]]
    rows = folder.rows()
    report = report_data(labels, rows, spec["varied"])
    return SweepResult(folder.sweep_id, folder.path, labels, rows, len(spec["sequence"]), report, _axis(spec))


def _axis(spec: dict[str, Any]) -> tuple[str, list[float]] | None:
    """The varied key and each arm's value, when one key was varied and all its values are numbers."""
    if len(spec["varied"]) != 1:
        return None
    key = spec["varied"][0]
    try:
        return key, [float(arm["values"][key]) for arm in spec["arms"]]
    except (KeyError, ValueError):
        return None


def _inventory(gpus: GpuInventory | str | None) -> GpuInventory | None:
    """A simulated node's spec (``8x80GB``) opened once, so every trial and check sees the same node."""
    if not isinstance(gpus, str):
        return gpus
    from .._host.gpu_visible import open_inventory

    return open_inventory(gpus)


def _runs_base(runs_dir: str | Path | None) -> Path:
    from .._records.paths import default_runs_dir

    return Path(runs_dir).expanduser().absolute() if runs_dir is not None else default_runs_dir()


def _provenance(arms: Sequence[Arm]) -> dict[str, dict[str, Any]]:
    """Per arm: topovisor's version, the topology file's sha256 (none for a preset), the cwd's git commit."""
    from .. import __version__

    commit = _git_commit()
    found = {}
    for arm in arms:
        digest = None
        with contextlib.suppress(OSError):
            digest = hashlib.sha256(Path(arm.file).read_bytes()).hexdigest()
        found[arm.label] = {"topovisor_version": __version__, "topology_sha256": digest, "git_commit": commit}
    return found


def _git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None
