"""A replica past its memory_max is killed by the kernel's OOM killer, reported as such (not a bare SIGKILL)
in its exit event, its failure and the summary, and restarted per its policy as any crash is."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

import supervisor as sv
from supervisor._records.summary import read_summary

from .test_limits import needs_limits

PYTHON = sys.executable
#: ready at once; allocates 200 MB (touched) when its file says so, on the first incarnation only
_HOG = (
    "import os, sys, time\n"
    "print('up', flush=True)\n"
    "flag = sys.argv[1]\n"
    "while not os.path.exists(flag): time.sleep(0.01)\n"
    "os.unlink(flag)\n"
    "held = b'x' * (200 * 10**6)\n"
    "while True: time.sleep(1)\n"
)


@needs_limits
@pytest.mark.anyio
async def test_a_replica_past_memory_max_is_reported_oom_killed_and_restarted(runs_dir: Path, tmp_path: Path) -> None:
    flag = tmp_path / "allocate"
    service = sv.Service(
        name="hog",
        command=[PYTHON, "-c", _HOG, str(flag)],
        ready=sv.LogCheck("up"),
        resources={"memory_max": "64MiB"},
        restart=sv.RestartPolicy(policy="on-failure", backoff=sv.Backoff(initial_seconds=0.01)),
    )
    history: list[sv.Event] = []
    async with sv.launch(
        sv.Topology(name="oom", services=[service]), runs_dir=runs_dir, on_event=history.append
    ) as group:
        replica = group["hog"].replicas[0]
        first = replica.pid
        flag.touch()
        await _until(lambda: replica.restarts == 1 and replica.state is sv.ReplicaState.READY)
        assert replica.pid != first
    exited = next(e for e in history if isinstance(e, sv.Exited) and e.pid == first)
    assert exited.signal == "SIGKILL" and exited.reason == "killed by the OOM killer (memory_max 64MiB)"
    restarting = next(e for e in history if isinstance(e, sv.Restarting))
    assert restarting.reason.startswith("killed by the OOM killer (memory_max 64MiB) while running"), restarting.reason
    exits = read_summary(group.run_dir).replicas["hog"].exits
    assert exits[0].reason == "killed by the OOM killer (memory_max 64MiB)" and not exits[0].expected


async def _until(done: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``done`` (bounded)."""
    with anyio.fail_after(timeout):
        while not done():
            await anyio.sleep(0.01)
