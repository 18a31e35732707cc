"""The group's phase changes through one guarded transition, as a replica's state does."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

import supervisor as sv
from supervisor._runtime.run_phase import RunPhase, check_phase_change

from ..helpers import SLEEPER


@pytest.mark.parametrize(
    "current, new",
    [
        (RunPhase.STOPPED, RunPhase.RUNNING),
        (RunPhase.STOPPING, RunPhase.RUNNING),
        (RunPhase.RUNNING, RunPhase.STARTING),
        (RunPhase.PENDING, RunPhase.RUNNING),
        (RunPhase.RUNNING, RunPhase.RUNNING),
    ],
)
def test_a_phase_change_the_life_cycle_does_not_allow_is_refused(current: RunPhase, new: RunPhase) -> None:
    with pytest.raises(RuntimeError, match=f"run r: no phase change from {current.value} to {new.value}"):
        check_phase_change("r", current, new)


def test_the_life_cycle_and_a_teardown_from_each_early_phase_are_allowed() -> None:
    order = [RunPhase.PENDING, RunPhase.STARTING, RunPhase.RUNNING, RunPhase.STOPPING, RunPhase.STOPPED]
    for current, new in itertools.pairwise(order):
        assert check_phase_change("r", current, new) is new
    for early in order[:3]:
        assert check_phase_change("r", early, RunPhase.STOPPING) is RunPhase.STOPPING


def test_a_phase_reads_as_its_name_in_text_and_json() -> None:
    assert str(RunPhase.RUNNING) == f"{RunPhase.RUNNING}" == "running" and RunPhase.RUNNING == "running"


@pytest.mark.anyio
async def test_a_run_goes_through_its_phases_and_a_stopped_one_cannot_run_again(runs_dir: Path) -> None:
    topology = sv.Topology(name="p", services=[sv.Service(name="s", command=SLEEPER, ready=sv.LogCheck("ready"))])
    async with sv.launch(topology, runs_dir=runs_dir) as group:
        assert group.phase is RunPhase.RUNNING
    assert group.phase is RunPhase.STOPPED
    with pytest.raises(RuntimeError, match="no phase change from stopped to running"):
        group._run.enter_phase(RunPhase.RUNNING)
    assert sv.read_summary(group.run_dir).outcome == "stopped"
