"""Regressions found in review: liveness all/any, attempt and readiness deadlines, a second signal during
startup, signal exit codes, stop during a pending restart, spawns after teardown began, escaped pipe holders."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import anyio
import pytest

import supervisor as sv

from .conftest import PYTHON

SLEEPER = [PYTHON, "-c", "import time; print('service ready', flush=True); time.sleep(60)"]


async def wait_for(group: sv.RunningTopology, predicate, timeout: float = 8) -> None:
    with anyio.fail_after(timeout):
        if predicate(group.event_history):
            return
        async for _ in group.events():
            if predicate(group.event_history):
                return


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


STUBBORN = [
    PYTHON, "-c",
    "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\ntime.sleep(60)",
]  # fmt: skip


def test_second_signal_during_startup_kills_at_once(runs_dir: Path) -> None:
    """A first Ctrl-C while services are still starting, then a second: everything must die at once.
    ``_on_signals`` only kills when ``group_box`` holds the group, which happens after launch yields."""
    sent: list[str] = []

    def on_event(event: sv.Event) -> None:
        if isinstance(event, sv.Ready) and event.replica == "stubborn" and not sent:
            sent.append("first")
            os.kill(os.getpid(), signal.SIGINT)  # "slow" is not ready yet: the start is in progress
        elif isinstance(event, sv.Stopping) and event.replica == "stubborn" and sent == ["first"]:
            sent.append("second")
            os.kill(os.getpid(), signal.SIGINT)

    topo = sv.Topology(
        name="sig",
        services=[
            sv.Service(name="stubborn", command=STUBBORN, ready=sv.LogCheck("up"), stop=sv.StopPolicy(grace_seconds=6)),
            sv.Service(name="slow", command=SLEEPER, ready=sv.Probe(sv.LogCheck("never"), timeout_seconds=30)),
        ],
    )
    began = time.monotonic()
    received = anyio.run(lambda: sv.run(topo, runs_dir=runs_dir, on_event=on_event))
    elapsed = time.monotonic() - began
    assert sent == ["first", "second"] and received == signal.SIGINT
    assert elapsed < 4, f"the second signal did not kill at once: teardown took {elapsed:.1f}s (grace 6s)"


def test_cli_command_killed_by_a_signal_exits_128_plus_n(tmp_path: Path, runs_dir: Path) -> None:
    """``run FILE -- CMD``: CMD killed by SIGTERM must give 143 like a shell, not ``sys.exit(-15)`` (= 241)."""
    from supervisor._cli import main

    path = tmp_path / "t.yaml"
    path.write_text(f"name: t\nservices:\n  a: {{command: [{PYTHON!r}, -c, 'import time; time.sleep(60)']}}\n")
    code = main(["run", str(path), "--runs-dir", str(runs_dir), "-q", "--", "sh", "-c", "kill -TERM $$"])
    assert code == 128 + signal.SIGTERM, f"main() returned {code}; the process exit status would be {code & 0xFF}"


@pytest.mark.anyio
async def test_stop_during_a_pending_strategy_restart_keeps_the_service_stopped(runs_dir: Path, tmp_path: Path) -> None:
    """rest_for_one: A crashed, A and B are being restarted, B waits for A. ``group.stop("B")`` now must
    keep B stopped; the pending start of B (a task waiting for A's readiness) spawns it anyway."""
    once, go = tmp_path / "once", tmp_path / "go"
    code = (
        "import os, sys, time\n"
        f"once, go = {str(once)!r}, {str(go)!r}\n"
        "if not os.path.exists(once):\n"
        "    open(once, 'w').close(); print('service ready', flush=True); time.sleep(0.2); sys.exit(1)\n"
        "while not os.path.exists(go): time.sleep(0.01)\n"
        "print('service ready', flush=True); time.sleep(60)\n"
    )
    quick = sv.RestartPolicy(policy="on-failure", backoff=sv.Backoff(initial_seconds=0, jitter=0))
    topo = sv.Topology(
        name="r41",
        strategy="rest_for_one",
        services=[
            sv.Service(name="a", command=[PYTHON, "-c", code], ready=sv.LogCheck("service ready"), restart=quick),
            sv.Service(name="b", command=SLEEPER, ready=sv.LogCheck("service ready"), depends_on=["a"]),
        ],
    )

    def spawns(history: list[sv.Event], name: str) -> int:
        return sum(isinstance(e, sv.Spawned) and e.replica == name for e in history)

    async with sv.launch(topo, runs_dir=runs_dir) as group:
        await wait_for(group, lambda h: spawns(h, "a") == 2)  # A restarted; B was stopped and waits for A
        assert spawns(group.event_history, "b") == 1
        await group.stop("b")
        assert group["b"].replicas[0].state is sv.ReplicaState.STOPPED
        go.touch()
        await wait_for(group, lambda h: sum(isinstance(e, sv.Ready) and e.replica == "a" for e in h) == 2)
        with anyio.move_on_after(1.5):
            await wait_for(group, lambda h: spawns(h, "b") == 2)
        assert spawns(group.event_history, "b") == 1, "b was spawned again after group.stop('b')"
        assert group["b"].replicas[0].state is sv.ReplicaState.STOPPED


@pytest.mark.anyio
async def test_teardown_does_not_crash_when_an_unmarked_process_keeps_the_pipe(runs_dir: Path, tmp_path: Path) -> None:
    """A grandchild that left the process group and dropped the environment (``setsid env -i``) is out of
    reach, and keeps writing to the replica's pipe. Teardown closes the stream (and its log fd) after
    0.5 s but the pump is cancelled only later: its next write goes to fd -1 and the run ends in
    ``OSError: [Errno 9] Bad file descriptor`` instead of returning."""
    pidfile = tmp_path / "escapee.pid"
    escapee = (
        "import os, time\n"
        f"open({str(pidfile)!r}, 'w').write(str(os.getpid()))\n"
        "while True:\n    print('x' * 100, flush=True); time.sleep(0.001)\n"
    )
    code = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen(['setsid', 'env', '-i', sys.executable, '-c', {escapee!r}])\n"
        "print('service ready', flush=True); time.sleep(60)\n"
    )
    service = sv.Service(name="w", command=[PYTHON, "-c", code], ready=sv.LogCheck("service ready"))
    try:
        async with sv.launch(sv.Topology(name="esc", services=[service]), runs_dir=runs_dir):
            with anyio.fail_after(5):
                while not pidfile.exists() or not pidfile.read_text():
                    await anyio.sleep(0.01)
    finally:
        if pidfile.exists() and pidfile.read_text():
            pid = int(pidfile.read_text())
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


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


@pytest.mark.anyio
async def test_readiness_timeout_is_kept_when_an_attempt_hangs(runs_dir: Path) -> None:
    """``ready: {http: ..., timeout: 0.5s}`` against a server that accepts but never answers: the deadline
    is only checked between attempts, so the launch fails after the 2 s attempt timeout, not 0.5 s."""
    code = (
        "import socket, sys, time\n"
        "s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(16)\n"
        "print('listening', flush=True); time.sleep(60)\n"
    )
    service = sv.Service(
        name="w",
        command=[PYTHON, "-c", code, "{port}"],
        ports=["port"],
        ready=sv.Probe(sv.HttpCheck("http://127.0.0.1:{port}/health"), timeout_seconds=0.5),
        stop=sv.StopPolicy(grace_seconds=1),
    )
    began = time.monotonic()
    with pytest.raises(sv.ServiceFailed) as info:
        async with sv.launch(sv.Topology(name="rt", services=[service]), runs_dir=runs_dir):
            pytest.fail("must not be ready")
    elapsed = time.monotonic() - began
    assert elapsed < 1.5, f"readiness timeout 0.5s, gave up after {elapsed:.1f}s: {info.value}"


@pytest.mark.anyio
async def test_nothing_is_spawned_once_teardown_began(runs_dir: Path) -> None:
    """A failure while a replicated service is still spawning its replicas: the initial start tasks live
    in the outer task group, not in the cancelled body, and their spawn loop never re-checks ``_stopping``
    between replicas, so replicas keep being spawned during (and after parts of) the teardown."""
    topo = sv.Topology(
        name="burst",
        services=[
            sv.Service(name="bad", command=["false"]),
            sv.Service(name="many", command=["sleep", "60"], replicas=150, stop=sv.StopPolicy(grace_seconds=1)),
        ],
    )
    history: list[sv.Event] = []
    with pytest.raises(sv.ServiceFailed):
        async with sv.launch(topo, runs_dir=runs_dir, on_event=history.append):
            pytest.fail("must not be ready")
    first_stop = next(i for i, e in enumerate(history) if isinstance(e, sv.Stopping))
    late = [e.replica for e in history[first_stop:] if isinstance(e, sv.Spawned)]
    assert not late, f"{len(late)} replicas spawned after the teardown began: {late[:5]}..."
