"""A sweep on Slurm, without a cluster: every arm planned on Slurm, one allocation sized for the largest arm,
taken once and lent to each trial (which leaves it), cancelled after the last trial or on cancellation,
and cancelled by the sweep's watchdog when the sweep is SIGKILLed. The real cluster's test is
``tests/cluster/test_slurm_sweep.py``."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import anyio
import psutil
import pytest

import supervisor._host.slurm_alloc as slurm_alloc
from supervisor._experiment.arms import arms_from_files, arms_from_vary, check_arms
from supervisor._experiment.on_slurm import ALLOCATION_DIR, sweep_allocation, sweep_cluster
from supervisor._experiment.sweep import sweep
from supervisor._host.slurm_alloc import SlurmAllocation
from supervisor._plan.placement import placeholder_nodes
from supervisor._records.record import read_manifest
from supervisor._spec.model import SlurmCluster

from ..helpers import PYTHON, ROOT, wait_until

SPREAD = """
name: spread
vars: {span: 1}
services:
  web: {command: [sleep, "100"], replicas: 2, placement: {nodes: "${span}"}}
"""

#: on Slurm, but every replica runs here: the trials need no cluster, only the allocation's bookkeeping
HERE = """
name: here
vars: {n: 1}
cluster: {slurm: {nodes: 2, partition: debug}}
services:
  web: {command: [sleep, "100"], replicas: "${n}", placement: local}
"""


class FakeSlurm:
    """``salloc`` and ``scancel`` as the sweep calls them: what was asked, and when."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.acquired: list[tuple[SlurmCluster, str]] = []
        self.cancelled: list[tuple[str, str | None, float]] = []
        for name in ("SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SLURM_NODELIST"):
            monkeypatch.delenv(name, raising=False)
        fake = self

        def acquire(cls: type[SlurmAllocation], spec: SlurmCluster, name: str, env: object = None) -> SlurmAllocation:
            fake.acquired.append((spec, name))
            return SlurmAllocation("4242", placeholder_nodes(spec.nodes), owned=True, name=name)

        def cancel_job(job_id: str, env: Mapping[str, str] | None = None, *, name: str | None = None) -> bool:
            fake.cancelled.append((job_id, name, time.time()))
            return True

        monkeypatch.setattr(SlurmAllocation, "acquire", classmethod(acquire))
        monkeypatch.setattr(slurm_alloc, "cancel_job", cancel_job)


def test_every_arm_is_planned_on_slurm_and_the_allocation_fits_the_largest(tmp_path: Path) -> None:
    """--slurm: each arm planned on placeholder nodes, as many as it needs (2 replicas of 1 node share one;
    of 2 nodes each, they need 4); the allocation asks for the most nodes any arm needs. Without it, and no file on Slurm, no allocation."""
    path = tmp_path / "spread.yaml"
    path.write_text(SPREAD)
    arms = arms_from_vary(str(path), {"span": ["1", "2"]}, {})
    plans = check_arms(arms, ["true"], str(tmp_path / "runs"), slurm=True)
    assert [len(p.nodes) for p in plans] == [1, 4]
    placed = [[len(r.placement.nodes) for r in p.services[0].replicas if r.placement] for p in plans]
    assert placed == [[1, 1], [2, 2]]
    spec = sweep_cluster(plans)
    assert spec is not None and spec.nodes == 4
    here = check_arms(arms, ["true"], str(tmp_path / "runs"))
    assert sweep_cluster(here) is None
    assert all(r.placement is None for p in here for r in p.services[0].replicas)


def test_one_arms_file_on_slurm_puts_every_arm_there_with_the_first_arms_settings(tmp_path: Path) -> None:
    """A file with cluster: {slurm: ...} makes the sweep a Slurm one without --slurm, as it makes a run
    one: the other arm gets cluster: {slurm: {}} too, and the allocation the first's partition."""
    (tmp_path / "a.yaml").write_text(HERE.replace('"${n}"', "1").replace("vars: {n: 1}\n", ""))
    (tmp_path / "b.yaml").write_text(SPREAD.replace('"${span}"', "3").replace("vars: {span: 1}\n", ""))
    arms = arms_from_files([str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")], {})
    plans = check_arms(arms, ["true"], str(tmp_path / "runs"))
    spec = sweep_cluster(plans)
    assert spec is not None and (spec.nodes, spec.partition) == (6, "debug")  # b: 2 replicas x 3 nodes


@pytest.mark.anyio
async def test_the_trials_borrow_one_allocation_that_is_cancelled_after_the_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2 arms x 1 trial: one salloc (named after the sweep, the file's 2 nodes), each trial's run in that
    job but not its owner (so no trial cancels it), and one scancel, after the last trial ended."""
    fake = FakeSlurm(monkeypatch)
    path = tmp_path / "here.yaml"
    path.write_text(HERE)
    runs = tmp_path / "runs"
    said: list[str] = []
    result = await sweep(
        path, command=[PYTHON, "-c", "pass"], vary={"n": [1, 2]}, runs_dir=runs, slurm=True, say=said.append
    )
    assert [row["status"] for row in result.rows] == ["ok", "ok"], result.rows
    assert [(spec.nodes, spec.partition, name) for spec, name in fake.acquired] == [
        (2, "debug", f"topovisor-{result.sweep_id}")
    ]
    manifests = [read_manifest(runs / row["run_id"]) for row in result.rows]
    assert [(m.slurm_job, m.slurm_job_owned) for m in manifests if m is not None] == [("4242", False)] * 2
    assert [(job, name) for job, name, _ in fake.cancelled] == [("4242", f"topovisor-{result.sweep_id}")]
    last = max(row_summary_end(runs / row["run_id"]) for row in result.rows)
    assert fake.cancelled[0][2] >= last
    assert any(line.startswith("Slurm job 4242 (ours, cancelled after the last trial) on node0,node1") for line in said)
    assert (result.path / ALLOCATION_DIR / "watchdog.log").is_file()
    assert not sweep_watchdogs(result.sweep_id)  # it said bye and left


def row_summary_end(run_dir: Path) -> float:
    from supervisor._records.summary import read_summary

    ended = read_summary(run_dir).ended_wall_time
    assert ended is not None
    return ended


def sweep_watchdogs(sweep_id: str) -> list[int]:
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "supervisor._host.watchdog" in cmdline and sweep_id in cmdline:
            found.append(process.info["pid"])
    return found


@pytest.mark.anyio
async def test_a_cancelled_sweep_cancels_its_allocation_and_one_it_runs_inside_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled mid-sweep (Ctrl-C cancels the main task): the allocation we took is cancelled. Inside an
    allocation (under sbatch) the trials borrow that one, and nothing takes or cancels any."""
    fake = FakeSlurm(monkeypatch)
    with anyio.CancelScope() as scope:
        async with sweep_allocation(SlurmCluster(nodes=1), "s-1", tmp_path) as lent:
            assert lent is not None and not lent.owned and lent.job_id == "4242"
            scope.cancel()
            await anyio.sleep_forever()
    assert [(job, name) for job, name, _ in fake.cancelled] == [("4242", "topovisor-s-1")]
    outer = SlurmAllocation("77", placeholder_nodes(1), owned=False)
    monkeypatch.setattr(SlurmAllocation, "current", classmethod(lambda cls, env=None: outer))
    async with sweep_allocation(SlurmCluster(nodes=1), "s-2", tmp_path) as lent:
        assert lent is outer
    assert len(fake.acquired) == 1 and len(fake.cancelled) == 1


HOLDER = """
import sys
from pathlib import Path

import anyio

from supervisor._experiment.on_slurm import sweep_allocation
from supervisor._host.slurm_alloc import SlurmAllocation
from supervisor._plan.placement import placeholder_nodes
from supervisor._spec.model import SlurmCluster


def acquire(cls, spec, name, env=None):
    return SlurmAllocation("4242", placeholder_nodes(spec.nodes), owned=True, name=name)


SlurmAllocation.acquire = classmethod(acquire)


async def hold() -> None:
    async with sweep_allocation(SlurmCluster(nodes=1), "s-dead", Path(sys.argv[1])):
        print("held", flush=True)
        await anyio.sleep_forever()


anyio.run(hold)
"""


def test_a_sweep_killed_with_sigkill_leaves_no_allocation(tmp_path: Path) -> None:
    """kill -9 of the sweep while it holds the allocation (a trial or the moment between two): its watchdog
    runs scancel for the job, by its name; a sweep that ran to its end left it to the release."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "scancel.log"
    scancel = bin_dir / "scancel"
    scancel.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    scancel.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    env = {k: v for k, v in env.items() if not k.startswith("SLURM_")}
    holder = subprocess.Popen(
        [PYTHON, "-c", HOLDER, str(tmp_path / "sweep")], env=env, stdout=subprocess.PIPE, text=True
    )
    with holder:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        assert not log.exists()
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    wait_until(lambda: log.exists() and log.read_text(), what="the watchdog's scancel")
    assert log.read_text() == "--name topovisor-s-dead 4242\n"
    wait_until(lambda: not sweep_watchdogs("s-dead"), what="the watchdog's exit")
