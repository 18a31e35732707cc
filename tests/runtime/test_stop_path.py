"""The supervisor's own stop path under hostile conditions: reused pids and env-scrubbed children."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

import supervisor as sv

from ..helpers import PYTHON, alive

pytestmark = pytest.mark.anyio

_NS_LAST_PID = Path("/proc/sys/kernel/ns_last_pid")


def _pid_exists(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def _spawn_with_pid(pid: int) -> subprocess.Popen[bytes] | None:
    """A bystander in a process group of its own whose pid is ``pid`` (forced through ``ns_last_pid``),
    or None when the kernel would not hand out that pid (it is still taken)."""
    for _ in range(200):
        if _pid_exists(pid):
            return None
        _NS_LAST_PID.write_text(str(pid - 1))
        process = subprocess.Popen(["sleep", "60"], start_new_session=True)
        if process.pid == pid:
            return process
        process.kill()
        process.wait()
    return None


@contextlib.contextmanager
def _killed_at_end(process: subprocess.Popen[bytes] | None) -> Iterator[None]:
    try:
        yield
    finally:
        if process is not None:
            process.kill()
            process.wait()


@pytest.mark.skipif(not os.access(_NS_LAST_PID, os.W_OK), reason="needs a writable ns_last_pid (root)")
async def test_a_reused_leader_pid_is_never_signalled_during_a_stop(runs_dir: Path) -> None:
    """The leader dies at SIGTERM, a setsid child of the run holds the stop in its grace: meanwhile the
    leader's pid stays ours (not reaped), so no unrelated group can take it and get the SIGKILL."""
    code = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import signal, time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(3600)'], "
        "start_new_session=True, stdout=subprocess.PIPE).stdout.readline(); "
        "print('up', flush=True); time.sleep(3600)"
    )
    service = sv.Service(
        name="svc", command=[PYTHON, "-c", code], ready=sv.LogCheck("up"), stop=sv.StopPolicy(grace_seconds=3.0)
    )
    async with sv.launch(sv.Topology(name="reuse", services=[service]), runs_dir=runs_dir) as group:
        leader = group["svc"].pids[0]
        bystander: subprocess.Popen[bytes] | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(group.stop, "svc")
            deadline = time.monotonic() + 10
            while alive(leader):  # dead (a zombie, or gone if reaped) at the stop signal
                assert time.monotonic() < deadline, "the leader ignored SIGTERM"
                await anyio.sleep(0.005)
            assert _pid_exists(leader), "the leader was reaped while its run's processes were still stopping"
            bystander = await anyio.to_thread.run_sync(_spawn_with_pid, leader)
        with _killed_at_end(bystander):
            assert bystander is None or bystander.poll() is None, "an unrelated process group was killed"
    assert not _pid_exists(leader) or (bystander is not None and bystander.poll() is None)


async def test_an_env_scrubbed_child_in_the_leaders_group_is_stopped(runs_dir: Path) -> None:
    """A job exits and leaves ``env -i sleep`` (no run mark) in its process group: it is ours, so it is
    stopped, and the teardown does not call the run clean while it lives."""
    code = (
        "import subprocess; p = subprocess.Popen(['env', '-i', 'sleep', '3600']); print(f'child {{p.pid}}', flush=True)"
    )
    service = sv.Service(name="job", command=[PYTHON, "-c", code], ready=sv.LogCheck(r"child \d+"))
    child = 0
    try:
        async with sv.launch(sv.Topology(name="scrubbed", services=[service]), runs_dir=runs_dir) as group:
            replica = group["job"].replicas[0]
            match = re.search(r"child (\d+)", "\n".join(replica.log_tail()))
            assert match is not None
            child = int(match.group(1))
            with anyio.fail_after(10):
                await group.wait()  # the job completed
            assert replica.state is sv.ReplicaState.COMPLETED
            assert not alive(child), "the leader's group was not signalled after it exited"
        assert not alive(child)
    finally:
        if child and alive(child):
            os.kill(child, 9)


async def test_an_env_scrubbed_child_is_stopped_by_teardown(runs_dir: Path) -> None:
    """A long-running leader with an unmarked child in its group: teardown stops both."""
    code = (
        "import subprocess, time; p = subprocess.Popen(['env', '-i', 'sleep', '3600']); "
        "print(f'child {{p.pid}}', flush=True); time.sleep(3600)"
    )
    service = sv.Service(name="srv", command=[PYTHON, "-c", code], ready=sv.LogCheck(r"child \d+"))
    child = 0
    try:
        async with sv.launch(sv.Topology(name="scrubbed2", services=[service]), runs_dir=runs_dir) as group:
            match = re.search(r"child (\d+)", "\n".join(group["srv"].replicas[0].log_tail()))
            assert match is not None
            child = int(match.group(1))
        assert not alive(child)
        assert group.leftovers == []
    finally:
        if child and alive(child):
            os.kill(child, 9)
