"""One trial: a fresh launch of the arm's topology (its own run dir and ports), the warm-up command once
all are ready, then the client between two marks and two metrics snapshots (the measured window), the
teardown, and the check that nothing of the trial is left."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import ServiceFailed, SupervisorError
from .._marks import RUN_ID_ENV
from .arms import Arm, fill_trial_dir, load_arm
from .client import run_client, tail
from .client_figures import client_figures
from .provenance import trial_provenance
from .results import FIRST_COLUMNS
from .server_counters import EndpointFile, counter_deltas

if TYPE_CHECKING:
    from .._host.gpu_inventory import GpuInventory
    from .._host.slurm_alloc import SlurmAllocation
    from .._runtime.group import RunningTopology

__all__ = ["TRIAL_DIR_ENV", "LeftBehind", "run_trial"]

TRIAL_DIR_ENV = "TOPOVISOR_TRIAL_DIR"  #: the client's ``{trial_dir}``, also in its environment


class LeftBehind(SupervisorError):
    """A trial's processes survived its teardown: the next trial would not start on a clean machine."""


async def run_trial(
    arm: Arm,
    trial: int,
    command: Sequence[str],
    trial_dir: Path,
    runs_dir: str | None,
    marks: str,
    *,
    warmup: Sequence[str] = (),
    gpus: GpuInventory | None = None,
    allocation: SlurmAllocation | None = None,
) -> dict[str, Any]:
    """The trial's row: ``status`` ok or failed (``error`` says why); raises ``LeftBehind`` when the
    run's summary does not verify that nothing is left. ``warmup`` (an argv with the client's templates)
    runs to its end before the window; its exit other than 0 fails the trial and the client never runs.
    ``gpus``: the inventory the trial is planned and checked against (None: NVML where the plan has GPUs).
    ``allocation``: the sweep's Slurm allocation, lent (the trial is planned on its nodes, as a run inside
    it would be, and leaves it as it found it)."""
    from .._plan.plan import fill_command, plan_in
    from .._records.summary import read_summary
    from .._runtime.runner import launch_prepared

    if trial_dir.exists():  # a trial redone after a kill: none of the half-done one's files may be read
        shutil.rmtree(trial_dir)  # (its run dir stays, where the runs are: only the link to it goes)
    trial_dir.mkdir(parents=True)
    plan = plan_in(load_arm(arm, slurm=allocation is not None), allocation, runs_dir=runs_dir, gpus=gpus)
    argv = fill_command(fill_trial_dir(command, trial_dir), plan)
    warmup_argv = fill_command(fill_trial_dir(warmup, trial_dir), plan) if warmup else []
    env = {**os.environ, **plan.client_env(), RUN_ID_ENV: plan.run_id, TRIAL_DIR_ENV: str(trial_dir)}
    with contextlib.suppress(OSError):  # the trial's folder leads to its run's logs and records
        (trial_dir / "run").unlink(missing_ok=True)
        (trial_dir / "run").symlink_to(plan.run_dir, target_is_directory=True)
    row: dict[str, Any] = {"arm": arm.label, "trial": trial, "status": "ok", "run_id": plan.run_id}
    node = gpus
    provenance = trial_provenance(plan, None if node is None else lambda: node)
    code: int | None = None
    counters: dict[str, float] = {}
    seconds: float | None = None
    error: str | None = None
    warmed: dict[str, Any] = {}
    try:
        async with launch_prepared(plan, gpus=gpus, allocation=allocation) as group:
            if warmup_argv:
                warmup_code, warmup_seconds = await run_client(warmup_argv, env, trial_dir, "warmup")
                warmed = {"warmup_exit": warmup_code, "warmup_seconds": warmup_seconds}
                if warmup_code != 0:
                    output = tail(trial_dir / "warmup.stderr") or tail(trial_dir / "warmup.stdout")
                    error = f"warm-up exited {warmup_code}" + (f": {output}" if output else "")
            if error is None:
                before = await _snapshot(group, "before", trial_dir)
                group.mark(f"{marks} trial {trial} start")
                code, seconds = await run_client(argv, env, trial_dir)
                group.mark(f"{marks} trial {trial} end")
                after = await _snapshot(group, "after", trial_dir)
                counters = counter_deltas(before, after, [s.name for s in group.services])
    except ServiceFailed as exc:
        error = str(exc)
    summary = read_summary(plan.run_dir)
    if not summary.verified_no_leftovers:
        raise LeftBehind(f"trial {trial} ({arm.label}): run {plan.run_id} left processes {summary.leftovers}")
    if error is None and code != 0:
        output = tail(trial_dir / "client.stderr") or tail(trial_dir / "client.stdout")
        error = f"client exited {code}" + (f": {output}" if output else "")
    row.update(
        ready_seconds=summary.ready_seconds, client_exit=code, client_seconds=seconds, error=error,
        status="ok" if error is None else "failed", **warmed, **arm.columns, **counters,
        **client_figures(trial_dir, FIRST_COLUMNS), **provenance,
    )  # fmt: skip
    return row


async def _snapshot(group: RunningTopology, label: str, trial_dir: Path) -> list[EndpointFile]:
    """The run's metrics snapshot ``label`` (``<run_dir>/metrics/<label>/``), copied to the trial's
    ``metrics/<label>/`` so the trial's folder holds it after the run's records are pruned; none without
    a ``metrics:`` endpoint. An endpoint that failed is in the index and adds nothing."""
    if not any(r.plan.metrics for r in group.replicas):
        return []
    snapshot = await group.snapshot_metrics(label)
    copy = trial_dir / "metrics" / label
    shutil.copytree(snapshot.directory, copy)
    return [EndpointFile(e.replica, e.service, copy / e.path.name) for e in snapshot.endpoints if e.path is not None]
