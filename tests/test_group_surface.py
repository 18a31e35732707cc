"""The running group's typed lookups and the replica's state rules."""

from __future__ import annotations

from pathlib import Path

import pytest

import supervisor as sv
from supervisor.replica import ACTIVE_STATES, ReplicaState

from .conftest import PYTHON

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
