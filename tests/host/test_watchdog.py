"""The run watchdog: a SIGKILLed supervisor leaves nothing behind; a clean goodbye sweeps nothing; a reused
pid is never touched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from supervisor._host.process import RUN_ID_ENV
from supervisor._host.watchdog import SWEEP_EVENT, Watchdog

from ..fakerun import POLITE, Reaper, all_gone, read_events
from ..helpers import PROGRAMS, PYTHON, alive, wait_until


def fake_supervisor(reaper: Reaper, run_dir: Path, pids_file: Path, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    """tests/programs/fake_supervisor.py: a replica tree plus the watchdog; returns it and the watchdog pid."""
    reaper.watch_run(run_dir.name)
    argv = [PYTHON, str(PROGRAMS / "fake_supervisor.py"), "--run-id", run_dir.name, "--run-dir", str(run_dir),
            "--pids", str(pids_file), *extra]  # fmt: skip
    popen = subprocess.Popen(argv, stdout=subprocess.PIPE, cwd=Path(__file__).parents[2])
    reaper.popens.append(popen)
    assert popen.stdout is not None
    line = popen.stdout.readline().decode()
    assert line.startswith("supervising "), line
    return popen, int(line.split()[1])


def test_sigkilled_supervisor_leaves_no_survivors(reaper: Reaper, runs_dir: Path, tmp_path: Path) -> None:
    """SIGKILL of the supervisor: leader, children, setsid grandchildren and a daemon (all ignoring
    SIGTERM) are gone within 5 s, and the sweep is recorded."""
    run_dir = runs_dir / "run-killed"
    pids_file = tmp_path / "pids"
    popen, watchdog_pid = fake_supervisor(reaper, run_dir, pids_file, "--grace", "0.2")
    pids = [int(line) for line in pids_file.read_text().split()]
    assert len(pids) == 6 and all(alive(pid) for pid in pids)
    popen.kill()
    popen.wait(10)
    all_gone(pids, timeout=5.0)
    wait_until(lambda: not alive(watchdog_pid), timeout=5.0)
    sweeps = [e for e in read_events(run_dir) if e["event"] == SWEEP_EVENT]
    assert len(sweeps) == 1
    assert set(pids) <= set(sweeps[0]["killed"]) and sweeps[0]["survivors"] == []
    assert sweeps[0]["groups"] == [pids[0]]
    summary = json.loads((run_dir / "summary.json").read_text())  # written after the sweep's event
    assert summary["outcome"] == "supervisor-died" and summary["ended_by"] == "watchdog"
    assert set(pids) <= set(summary["killed"]) and summary["verified_no_leftovers"]


def test_goodbye_then_exit_sweeps_nothing(reaper: Reaper, runs_dir: Path, tmp_path: Path) -> None:
    """A supervisor that says ``bye`` (its own teardown was verified) and exits: the watchdog leaves quietly."""
    run_dir = runs_dir / "run-bye"
    pids_file = tmp_path / "pids"
    popen, watchdog_pid = fake_supervisor(reaper, run_dir, pids_file, "--bye")
    assert popen.wait(10) == 0  # = the watchdog's exit code, which close() returns
    assert not alive(watchdog_pid)
    pids = [int(line) for line in pids_file.read_text().split()]
    assert all(alive(pid) for pid in pids)  # left for the reaper: nobody swept them
    assert [e for e in read_events(run_dir) if e["event"] == SWEEP_EVENT] == []


def test_unclean_close_sweeps_but_never_touches_a_reused_pid(reaper: Reaper, runs_dir: Path) -> None:
    """A leader tracked with the wrong create time stands for a reused pid: it and its group survive."""
    run_dir = runs_dir / "run-reused"
    leader = reaper.start_replica(run_dir.name, "engine", POLITE, extra_env={"STOP_LOG": os.devnull})
    bystander = reaper.start([PYTHON, "-c", "import time\nprint('up', flush=True)\nwhile True: time.sleep(1)"])
    watchdog = Watchdog.spawn(run_dir.name, run_dir)
    watchdog.track(leader.pid, psutil.Process(leader.pid).create_time(), leader.pid, "SIGTERM", 5.0, "engine")
    stale_time = psutil.Process(bystander.pid).create_time() - 1000.0
    watchdog.track(bystander.pid, stale_time, bystander.pid, "SIGKILL", 0.0, "old")
    assert watchdog.alive
    assert watchdog.close(clean=False) == 0
    assert not watchdog.alive
    assert leader.wait(5) == 0  # it got SIGTERM (and exited politely), not SIGKILL
    assert not (run_dir / "summary.json").exists()  # the supervisor lives: it writes its own summary
    assert alive(bystander.pid)
    (sweep,) = [e for e in read_events(run_dir) if e["event"] == SWEEP_EVENT]
    assert leader.pid in sweep["killed"] and bystander.pid not in sweep["killed"]


def test_watchdog_has_no_mark_own_session_and_ignores_ctrl_c(
    reaper: Reaper, runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A supervisor that itself carries a mark (nested run) does not pass it on; SIGINT/SIGHUP are ignored."""
    monkeypatch.setenv(RUN_ID_ENV, "outer-run")
    run_dir = runs_dir / "run-quiet"
    watchdog = Watchdog.spawn(run_dir.name, run_dir)
    try:
        process = psutil.Process(watchdog.pid)
        wait_until(lambda: "supervisor._host.watchdog" in " ".join(process.cmdline()))
        assert RUN_ID_ENV not in process.environ()
        assert os.getsid(watchdog.pid) == watchdog.pid
        wait_until(lambda: _ignores(watchdog.pid, signal.SIGINT) and _ignores(watchdog.pid, signal.SIGHUP))
        os.kill(watchdog.pid, signal.SIGINT)
        os.kill(watchdog.pid, signal.SIGHUP)
        watchdog.track(os.getpid(), 0.0, os.getpid(), "TERM", 1.0)  # a wrong create time: never us
        assert watchdog.alive
    finally:
        assert watchdog.close(clean=True) == 0
    assert not (run_dir / "events.jsonl").exists()


def _ignores(pid: int, signum: int) -> bool:
    """From /proc/<pid>/status: is ``signum`` in the ignored-signals mask?"""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signum - 1)))
    return False


CHILD_CHECK = """
import json, os, subprocess, sys
from pathlib import Path
from supervisor._host.watchdog import Watchdog
watchdog = Watchdog.spawn("run-fds", Path(sys.argv[1]))
pipe = os.readlink(f"/proc/{watchdog.pid}/fd/0")
def holders(pid):
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == pipe:
                found.append(fd)
        except OSError:  # the directory listing's own descriptor, already closed
            pass
    return found
child = subprocess.Popen(["sleep", "30"], close_fds=False)
exec_holders = holders(child.pid)
child.kill(); child.wait()
read_fd, write_fd = os.pipe()
pid = os.fork()
if pid == 0:
    try:
        os.write(write_fd, json.dumps(holders(os.getpid())).encode())
    finally:
        os._exit(0)
os.close(write_fd)
os.waitpid(pid, 0)
fork_holders = json.loads(os.read(read_fd, 4096))
print(json.dumps({"parent": len(holders(os.getpid())), "exec": exec_holders, "fork": fork_holders,
                  "code": watchdog.close(clean=True)}))
"""


def test_children_of_the_supervisor_never_hold_the_pipe(runs_dir: Path) -> None:
    """The write end is close-on-exec and closed in forked children: only the supervisor can delay EOF."""
    result = subprocess.run([PYTHON, "-c", CHILD_CHECK, str(runs_dir / "run-fds")], capture_output=True, text=True,
                            timeout=60, cwd=Path(__file__).parents[2])  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report == {"parent": 1, "exec": [], "fork": [], "code": 0}


def test_sweep_time_after_supervisor_sigkill_is_grace_plus_milliseconds(
    reaper: Reaper, runs_dir: Path, tmp_path: Path
) -> None:
    """With a zero grace the whole tree is gone within a second of the supervisor's death."""
    run_dir = runs_dir / "run-fast"
    pids_file = tmp_path / "pids"
    popen, watchdog_pid = fake_supervisor(reaper, run_dir, pids_file, "--grace", "0")
    pids = [int(line) for line in pids_file.read_text().split()]
    wait_until(lambda: "supervisor._host.watchdog" in " ".join(psutil.Process(watchdog_pid).cmdline()))
    began = time.monotonic()
    popen.kill()
    popen.wait(10)
    all_gone(pids, timeout=5.0)
    assert time.monotonic() - began < 1.0
