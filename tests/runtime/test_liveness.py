"""Liveness probes once ready: all/any judged afresh each time, each attempt bounded by its timeout."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

import supervisor as sv

from ..helpers import SLEEPER


@pytest.mark.anyio
async def test_liveness_all_of_detects_a_failure_after_the_first_pass(runs_dir: Path) -> None:
    """``alive: {all: [...]}``: once every part passed once, _Combined never checks anything again."""
    state = {"healthy": True, "calls": 0}
    passed_once = anyio.Event()

    async def healthy(target: object) -> bool:
        state["calls"] += 1
        if state["calls"] >= 2:
            passed_once.set()
        return state["healthy"]

    service = sv.Service(
        name="w",
        command=SLEEPER,
        ready=sv.LogCheck("service ready"),
        alive=sv.Probe(sv.AllOf([healthy, healthy]), period_seconds=0.02, failures=1),
        stop=sv.StopPolicy(grace_seconds=1),
    )
    with pytest.raises(sv.ServiceFailed, match="liveness"):
        async with sv.launch(sv.Topology(name="live", services=[service]), runs_dir=runs_dir):
            await passed_once.wait()  # liveness passed: both parts were called and said yes
            state["healthy"] = False  # from now on the service is unhealthy: liveness must replace it
            calls = state["calls"]
            with anyio.fail_after(3):
                await anyio.sleep_forever()
    assert state["calls"] > calls


@pytest.mark.anyio
async def test_liveness_timeout_bounds_one_attempt(runs_dir: Path) -> None:
    """Probe docs: "For liveness ``timeout`` bounds one attempt". With ``timeout: 5s`` a health check that
    answers in 2.3 s must pass; the inner check is built with the *readiness* attempt timeout (2 s default)
    and fails with "timed out after 2s"."""
    answered = anyio.Event()

    async def slow_health(target: object) -> bool:
        await anyio.sleep(2.3)
        answered.set()
        return True

    service = sv.Service(
        name="w",
        command=SLEEPER,
        ready=sv.LogCheck("service ready"),
        alive=sv.Probe(slow_health, period_seconds=0.01, timeout_seconds=5, failures=1),
        stop=sv.StopPolicy(grace_seconds=1),
    )
    async with sv.launch(sv.Topology(name="lt", services=[service]), runs_dir=runs_dir) as group:
        with anyio.fail_after(5):
            await answered.wait()
        assert not any(isinstance(e, (sv.Unready, sv.Failed)) for e in group.event_history), group.event_history
