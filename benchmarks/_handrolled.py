"""The baseline of ``bench_engines.py``: what a seed user writes by hand to run a topology, done as well as
possible. A small asyncio launcher that starts exactly the processes of the plan (same argv, env, cwd and
ports, from ``make_plan``) in the same dependency order, each in its own process group with its output to a
file, polls each readiness URL every 5 ms, and tears down by SIGTERM to each process group (a service once
every service that depends on it is down), SIGKILL after the grace, until every pid is gone. No supervision,
no logs rotation, no probes beyond one GET: the floor the supervisor is compared with.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from supervisor._plan.plan import Plan, ReplicaPlan
from supervisor._spec.model import HttpCheck

POLL_SECONDS = 0.005
LIMIT_SECONDS = 120.0  #: no start may take longer


class Started:
    """One replica started by hand: its process (leader of its own group) and its output file."""

    def __init__(self, replica: ReplicaPlan, proc: asyncio.subprocess.Process) -> None:
        self.replica = replica
        self.proc = proc


async def _spawn(replica: ReplicaPlan, base_env: Mapping[str, str], logs: Path) -> Started:
    with open(logs / f"{replica.name}.log", "wb") as out:  # the child keeps its own copy of the fd
        proc = await asyncio.create_subprocess_exec(
            *replica.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            cwd=replica.cwd,
            env={**base_env, **replica.env},
            start_new_session=True,
        )
    return Started(replica, proc)


def _passes(check: HttpCheck, response: httpx.Response) -> bool:
    ok = response.status_code == check.status if check.status is not None else 200 <= response.status_code < 300
    if ok and check.json:
        try:
            body: Any = response.json()
        except ValueError:
            return False
        return isinstance(body, dict) and all(body.get(k) == v for k, v in check.json.items())
    return ok


async def _wait_ready(started: Started, client: httpx.AsyncClient, deadline: float) -> None:
    """GET the replica's readiness URL every 5 ms until it passes; fail if the process exits first."""
    probe = started.replica.ready
    if probe is None:
        return
    check = probe.check
    if not isinstance(check, HttpCheck):
        raise TypeError(f"{started.replica.name}: the baseline polls HTTP checks only, not {check!r}")
    while time.monotonic() < deadline:
        if started.proc.returncode is not None:
            raise RuntimeError(f"{started.replica.name} exited with {started.proc.returncode} before ready")
        with contextlib.suppress(httpx.HTTPError):
            if _passes(check, await client.get(check.url, timeout=2.0)):
                return
        await asyncio.sleep(POLL_SECONDS)
    raise TimeoutError(f"{started.replica.name}: not ready within {LIMIT_SECONDS:g} s")


async def start(plan: Plan) -> list[Started]:
    """Start every replica, each service once the services it depends on are ready; return once all are.
    The polling client is closed on return: a keep-alive connection left open delays a server's exit."""
    async with httpx.AsyncClient() as client:
        return await _start(plan, client)


async def _start(plan: Plan, client: httpx.AsyncClient) -> list[Started]:
    logs = plan.run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    base_env = {"PYTHONUNBUFFERED": "1", **os.environ}
    deadline = time.monotonic() + LIMIT_SECONDS
    ready = {s.name: asyncio.Event() for s in plan.services}
    everything: list[Started] = []

    async def run_service(name: str) -> None:
        service = plan.service(name)
        for dependency in service.depends_on:
            await ready[dependency.service].wait()
        started = [await _spawn(replica, base_env, logs) for replica in service.replicas]
        everything.extend(started)
        await asyncio.gather(*(_wait_ready(s, client, deadline) for s in started))
        ready[name].set()

    tasks = [asyncio.ensure_future(run_service(s.name)) for s in plan.services]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await stop(plan, everything)
        raise
    return everything


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _stop_one(started: Started) -> None:
    """SIGTERM (the plan's stop signal) to the group, SIGKILL after the grace; return once the group is empty."""
    pgid, stop = started.proc.pid, started.replica.stop
    if started.proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.Signals[stop.signal])
    try:
        await asyncio.wait_for(started.proc.wait(), stop.grace_seconds)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        await started.proc.wait()
    deadline = time.monotonic() + stop.grace_seconds
    while _group_alive(pgid) and time.monotonic() < deadline:  # descendants outliving the leader
        await asyncio.sleep(POLL_SECONDS)
    if _group_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        for _ in range(1000):
            if not _group_alive(pgid):
                break
            await asyncio.sleep(POLL_SECONDS)


async def stop(plan: Plan, everything: list[Started]) -> None:
    """Stop each service once every service that depends on it has stopped (dependents first)."""
    down = {s.name: asyncio.Event() for s in plan.services}

    async def stop_service(name: str) -> None:
        for dependent in plan.dependents(name):
            await down[dependent].wait()
        await asyncio.gather(*(_stop_one(s) for s in everything if s.replica.service == name))
        down[name].set()

    await asyncio.gather(*(stop_service(s.name) for s in plan.services))
