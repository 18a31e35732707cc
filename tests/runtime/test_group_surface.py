"""The running group's typed lookups and the replica's state rules."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

import supervisor as sv
from supervisor._runtime.replica import ACTIVE_STATES, ReplicaState

from ..helpers import PYTHON

pytestmark = pytest.mark.anyio


async def test_typed_lookups_name_services_and_replicas(runs_dir: Path) -> None:
    """``service()`` and ``replica()`` return what they say and refuse the other kind; ``[]`` takes both."""
    code = "print('up', flush=True); import time; time.sleep(3600)"
    web = sv.Service(name="web", command=[PYTHON, "-c", code], replicas=2, ready=sv.LogCheck("up"))
    async with sv.launch(sv.Topology(name="lookups", services=[web]), runs_dir=runs_dir) as group:
        service = group.service("web")
        assert isinstance(service, sv.ServiceHandle) and len(service.replicas) == 2
        assert group.replica("web.1") is service.replicas[1] is group["web.1"]
        assert group["web"] is service
        with pytest.raises(KeyError, match=r"no service named 'web\.1'"):
            group.service("web.1")
        with pytest.raises(KeyError, match="no replica named 'nope'"):
            group.replica("nope")
        assert group.replica("web.0").port is None and group.replica("web.0").index == 0


def test_the_active_states_are_those_that_keep_a_run_alive() -> None:
    """One set: finished states are not active, every other one is."""
    finished = {ReplicaState.COMPLETED, ReplicaState.FAILED, ReplicaState.STOPPED}
    assert {s for s in ReplicaState if s.active} == set(ReplicaState) - finished == ACTIVE_STATES


def test_a_replica_changes_state_only_as_its_life_cycle_allows(runs_dir: Path) -> None:
    """A finished replica cannot jump to ready, nothing returns to pending; each change carries its event."""
    from supervisor._plan.plan import make_plan
    from supervisor._runtime.replica import Replica

    service = sv.Service(name="web", command=[PYTHON, "-c", "pass"])
    plan = make_plan(sv.Topology(name="states", services=[service]), runs_dir=runs_dir)
    replica = Replica(plan.services[0].replicas[0], service, runs_dir / "web.log")
    seen: list[sv.Event] = []
    replica.transition(ReplicaState.STARTING, sv.Spawned(replica="web", service="web", pid=1), seen.append)
    replica.transition(ReplicaState.COMPLETED)
    assert replica.state is ReplicaState.COMPLETED and [type(e) for e in seen] == [sv.Spawned]
    with pytest.raises(RuntimeError, match="no transition from completed to ready"):
        replica.transition(ReplicaState.READY)
    with pytest.raises(RuntimeError, match="to pending"):
        replica.transition(ReplicaState.PENDING)
    replica.transition(ReplicaState.RESTARTING)
    replica.transition(ReplicaState.STARTING)
    assert replica.state is ReplicaState.STARTING


async def test_a_launcher_starts_every_process_of_the_run(runs_dir: Path) -> None:
    """The seam where a replica's process is started: every spawn goes through the group's launcher."""
    from collections.abc import Mapping, Sequence

    from supervisor._host.launcher import LaunchedProcess, LocalLauncher
    from supervisor._plan.plan import make_plan
    from supervisor._runtime.group import RunningTopology
    from supervisor._runtime.state import RunState

    launched: list[list[str]] = []

    class Recording(LocalLauncher):
        def launch(self, argv: Sequence[str], env: Mapping[str, str], cwd: str | None) -> LaunchedProcess:
            launched.append(list(argv))
            return super().launch(argv, env, cwd)

    code = "print('up', flush=True); import time; time.sleep(3600)"
    web = sv.Service(name="web", command=[PYTHON, "-c", code], replicas=2, ready=sv.LogCheck("up"))
    plan = make_plan(sv.Topology(name="launcher", services=[web]), runs_dir=runs_dir)
    async with RunningTopology.open(RunState(plan, launcher=Recording())) as group:
        assert len(group.service("web").pids) == 2
    assert launched == [[PYTHON, "-c", code]] * 2


async def test_events_yields_only_new_ones_and_history_the_past_first(runs_dir: Path) -> None:
    """After ``launch`` the start is over: ``events()`` yields what comes after the call (a mark), not the
    past ``Spawned``/``Ready`` (a first loop waited for nothing that would come); ``events(history=True)``
    yields those first. Every handle's docstring says so, naming ``history=True``, and so do the docs
    where it shows ``events()`` (it did not: the user's loop blocked for 120 s)."""
    code = "print('up', flush=True); import time; time.sleep(3600)"
    web = sv.Service(name="web", command=[PYTHON, "-c", code], ready=sv.LogCheck("up"))
    async with sv.launch(sv.Topology(name="events", services=[web]), runs_dir=runs_dir) as group:
        fresh, replayed = group.events(), group.events(history=True)
        group.mark("after the call")
        with anyio.fail_after(30):
            first = await fresh.__anext__()
            past = [type(await replayed.__anext__()) for _ in range(2)]
        assert isinstance(first, sv.Marked) and first.label == "after the call"
        assert past == [sv.Spawned, sv.Ready]
    for handle in (sv.RunningTopology, sv.SyncTopology, sv.AttachedTopology):
        doc = " ".join((handle.events.__doc__ or "").split())
        assert "from this call on, and only those" in doc and "``history=True`` yields the past ones first" in doc
    supervision = " ".join((Path(__file__).parents[2] / "docs" / "how-to" / "supervision.md").read_text().split())
    assert "`group.events()` yields only the events from the call on" in supervision
    assert "`group.events(history=True)` yields the past ones first" in supervision
