"""``launch_sync``: the group from plain code, with ``launch``'s guarantees (real processes throughout)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

import supervisor as sv

from ..helpers import PYTHON, alive, wait_until

BACKEND = os.environ.get("TOPOVISOR_TEST_BACKEND", "asyncio")
UP = "import time; print('up', flush=True); time.sleep(3600)"


def _topology(name: str = "sync", *, replicas: int = 2) -> sv.Topology:
    return sv.Topology(
        name=name,
        services=[
            sv.Service(name="kv", command=[PYTHON, "-c", UP], ports=["port"], ready=sv.LogCheck("up")),
            sv.Service(
                name="web",
                command=[PYTHON, "-c", UP],
                ports=["port"],
                replicas=replicas,
                ready=sv.LogCheck("up"),
                depends_on=["kv"],
            ),
        ],
    )


def test_the_sync_group_has_the_group_interface_and_tears_down_on_exit(runs_dir: Path) -> None:
    """Addresses, pids, run dir, events, mark, restart and stop of one replica, all synchronous; after the
    block nothing of the run is alive and the run dir says it stopped."""
    with sv.launch_sync(_topology(), runs_dir=runs_dir, backend=BACKEND) as group:
        assert isinstance(group, sv.SyncTopology)
        assert group["web"].url == group["web.0"].url and len(group["web"].urls) == 2
        assert group.run_dir.parent == runs_dir and group.run_id == group.run_dir.name
        assert group.environment()["TOPOVISOR_KV_URL"] == group["kv"].url
        pids = [p for s in group for p in s.pids]
        assert len(pids) == 3 and all(alive(p) for p in pids)
        mark = group.mark("before restart")
        old = group["web.1"].pids
        group.restart("web.1")
        assert group["web.1"].pids != old and group.replica("web.1").state is sv.ReplicaState.READY
        group.stop("web.0")
        assert group.replica("web.0").state is sv.ReplicaState.STOPPED
        since_mark: list[type[sv.Event]] = []
        for event in group.events(history=True):  # blocks for the next event once the history is read
            if event.monotonic >= mark.monotonic:
                since_mark.append(type(event))
            if isinstance(event, sv.Stopped) and event.replica == "web.0":
                break
        assert since_mark[0] is sv.Marked and sv.Spawned in since_mark and sv.Ready in since_mark, since_mark
        pids += group["web.1"].pids
    assert not any(alive(p) for p in pids)
    assert json.loads((group.run_dir / "summary.json").read_text())["leftovers"] == []


def test_an_exception_in_the_block_tears_down_and_propagates(runs_dir: Path) -> None:
    """The caller's own error leaves the block as itself, after the teardown."""
    with pytest.raises(LookupError, match="benchmark broke"), sv.launch_sync(_topology(replicas=1), runs_dir=runs_dir, backend=BACKEND) as group:  # fmt: skip
        pids = group["kv"].pids + group["web"].pids
        raise LookupError("benchmark broke")
    assert pids and not any(alive(p) for p in pids)


def test_a_failure_while_starting_raises_service_failed_from_with(runs_dir: Path) -> None:
    """The same ``ServiceFailed`` as ``launch``, naming the replica; what had started is down."""
    started: list[int] = []
    topology = sv.Topology(
        name="bad",
        services=[
            sv.Service(name="kv", command=[PYTHON, "-c", UP], ready=sv.LogCheck("up")),
            sv.Service(
                name="web", command=[PYTHON, "-c", "raise SystemExit(3)"], ready=sv.LogCheck("never"), depends_on=["kv"]
            ),
        ],
    )

    def on_event(event: sv.Event) -> None:
        if isinstance(event, sv.Spawned):
            started.append(event.pid)

    with pytest.raises(sv.ServiceFailed) as caught, sv.launch_sync(topology, runs_dir=runs_dir, on_event=on_event, backend=BACKEND):  # fmt: skip
        raise AssertionError("the block must not run")
    assert caught.value.replica == "web"
    assert len(started) == 2 and not any(alive(p) for p in started)


def test_bad_input_is_a_config_error_from_with_and_nothing_starts(runs_dir: Path) -> None:
    """Planning happens on the loop's thread; its ``ConfigError`` still reaches the caller, as itself."""
    bad = sv.Topology(name="bad", services=[sv.Service(name="web", command=[PYTHON, "-c", UP], depends_on=["nope"])])
    with pytest.raises(sv.ConfigError, match="nope"), sv.launch_sync(bad, runs_dir=runs_dir, backend=BACKEND):
        raise AssertionError("the block must not run")
    assert not runs_dir.exists() or not list(runs_dir.iterdir())


def test_a_service_that_dies_later_is_raised_by_the_next_call_and_by_with(runs_dir: Path) -> None:
    """The run is torn down at once without waiting for the caller; the next call and the end of the block
    raise the same ``ServiceFailed`` (a thread cannot be cancelled as an async body is)."""
    with pytest.raises(sv.ServiceFailed) as at_exit, sv.launch_sync(_topology(replicas=1), runs_dir=runs_dir, backend=BACKEND) as group:  # fmt: skip
        kv_pid = group["kv"].pids[0]
        other = group["web"].pids[0]
        os.kill(kv_pid, signal.SIGKILL)  # no restart policy: a failure
        wait_until(lambda: group.failure is not None and not alive(other), timeout=30)
        with pytest.raises(sv.ServiceFailed) as at_call:
            group.mark("too late")
        assert at_call.value.replica == "kv"
    assert at_exit.value is at_call.value


def test_wait_returns_when_every_job_completed(runs_dir: Path) -> None:
    """``wait`` blocks until the run's jobs are done; with a bound, ``TimeoutError`` first."""
    topology = sv.Topology(
        name="jobs", services=[sv.Service(name="job", command=[PYTHON, "-c", "import time; time.sleep(0.3)"])]
    )
    with sv.launch_sync(topology, runs_dir=runs_dir, backend=BACKEND) as group:
        with pytest.raises(TimeoutError):
            group.wait(timeout_seconds=0.01)
        group.wait(timeout_seconds=30)
        assert group.replica("job").state is sv.ReplicaState.COMPLETED


def test_wait_on_servers_times_out_saying_what_it_waited_for_and_how_long(runs_dir: Path) -> None:
    """Servers run until stopped: ``wait(timeout_seconds=1)`` raises a ``TimeoutError`` whose message says
    it waited for every replica to finish, for 1s, and which still run (it was empty)."""
    with sv.launch_sync(_topology(), runs_dir=runs_dir, backend=BACKEND) as group:
        with pytest.raises(TimeoutError) as caught:
            group.wait(timeout_seconds=1)
        assert str(caught.value).startswith("wait(timeout_seconds=1): not every replica finished within 1s; ")
        assert "3 still running: kv (ready), web.0 (ready), web.1 (ready) (a server runs until stopped" in str(
            caught.value
        )


def test_wait_returns_after_a_full_stop_and_raises_a_failure(runs_dir: Path) -> None:
    """``stop()`` then ``wait()`` returns (it used to wait forever: teardown never said all was done); a
    service that dies makes ``wait`` raise its ``ServiceFailed``."""
    with sv.launch_sync(_topology(replicas=1), runs_dir=runs_dir, backend=BACKEND) as group:
        group.stop()
        group.wait(timeout_seconds=30)
        assert {r.state for r in group.replicas} == {sv.ReplicaState.STOPPED}
    with pytest.raises(sv.ServiceFailed), sv.launch_sync(_topology(replicas=1), runs_dir=runs_dir, backend=BACKEND) as group:  # fmt: skip
        os.kill(group["kv"].pids[0], signal.SIGKILL)
        with pytest.raises(sv.ServiceFailed, match="kv"):
            group.wait(timeout_seconds=30)


def test_a_failure_during_a_blocking_call_ends_the_call_with_it(tmp_path: Path, runs_dir: Path) -> None:
    """A restart waiting for a replica that will never be ready again, when another service dies: the call
    raises that ``ServiceFailed`` at once (as the async body would be cancelled), it does not hang."""
    again = tmp_path / "again"
    web_code = f"import os, time; os.path.exists({str(again)!r}) or print('up', flush=True); open({str(again)!r}, 'w'); time.sleep(3600)"
    kv_pid: list[int] = []

    def on_event(event: sv.Event) -> None:  # on the loop's thread: web's second start kills kv
        if isinstance(event, sv.Spawned) and event.service == "kv":
            kv_pid.append(event.pid)
        elif isinstance(event, sv.Spawned) and event.service == "web" and again.exists():
            os.kill(kv_pid[0], signal.SIGKILL)

    topology = sv.Topology(
        name="hang",
        services=[
            sv.Service(name="kv", command=[PYTHON, "-c", UP], ready=sv.LogCheck("up")),
            sv.Service(
                name="web", command=[PYTHON, "-c", web_code], ready=sv.Probe(sv.LogCheck("up"), timeout_seconds=600)
            ),
        ],
    )
    with (
        pytest.raises(sv.ServiceFailed, match="kv") as at_exit,
        sv.launch_sync(topology, runs_dir=runs_dir, on_event=on_event, backend=BACKEND) as group,
        pytest.raises(sv.ServiceFailed, match="kv") as at_call,
    ):
        group.restart("web")
    assert at_call.value is at_exit.value


@pytest.mark.anyio
async def test_async_wait_returns_after_a_full_stop(runs_dir: Path) -> None:
    """The same for ``launch``: ``await group.stop()`` then ``await group.wait()`` returns."""
    async with sv.launch(_topology(replicas=1), runs_dir=runs_dir) as group:
        await group.stop()
        with anyio.fail_after(30):
            await group.wait()


CTRL_C_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import supervisor as sv
    when = sys.argv[2]
    ready = sv.LogCheck("never" if when == "starting" else "up")
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(3600)"
    if when != "twice":
        code = code.replace("signal.SIG_IGN", "signal.SIG_DFL")
    stop = sv.StopPolicy(grace_seconds=120)  # "twice": SIGTERM is ignored, only a SIGKILL ends them before 2 min
    service = sv.Service(name="s", command=[sys.executable, "-c", code], replicas=2, ready=ready, stop=stop)
    topo = sv.Topology(name="ctrlc", services=[service])

    def report(event):
        if isinstance(event, (sv.Spawned, sv.Stopping)):
            print(json.dumps({"event": event.kind, "pid": getattr(event, "pid", None)}), flush=True)

    started = time.monotonic()
    try:
        with sv.launch_sync(topo, runs_dir=sys.argv[1], on_event=report, backend=sys.argv[3]) as group:
            print(json.dumps({"event": "block"}), flush=True)
            # short sleeps: a SIGINT landing between CPython's signal check and a sleep's syscall would
            # otherwise wait out the whole sleep (CPython's own race, whatever the library does)
            for _ in range(36000):
                time.sleep(0.1)
    except KeyboardInterrupt:
        print(json.dumps({"event": "interrupted", "seconds": time.monotonic() - started}), flush=True)
    """
)


@pytest.mark.parametrize("when", ["starting", "ready", "twice"])
def test_ctrl_c_tears_everything_down(tmp_path: Path, runs_dir: Path, when: str) -> None:
    """A real SIGINT to a script in ``launch_sync`` (while starting, or inside the block): KeyboardInterrupt
    reaches the script after every process of the run is gone. ``twice``: a second SIGINT during that
    teardown (whose services ignore SIGTERM, with a 2-minute grace) SIGKILLs them at once."""
    script = tmp_path / "ctrlc.py"
    script.write_text(CTRL_C_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(sv.__file__).parent.parent)}
    process = subprocess.Popen(
        [sys.executable, str(script), str(runs_dir), when, BACKEND], stdout=subprocess.PIPE, text=True, env=env
    )
    assert process.stdout is not None

    def read_until(kind: str) -> list[dict[str, object]]:
        assert process.stdout is not None
        seen: list[dict[str, object]] = []
        for _ in range(10):
            seen.append(json.loads(process.stdout.readline() or '{"event": "eof"}'))
            if seen[-1]["event"] in (kind, "eof"):
                break
        assert seen[-1]["event"] == kind, seen
        return seen

    try:
        seen = read_until("spawned") + read_until("spawned")
        if when != "starting":
            read_until("block")
        pids = [int(str(record["pid"])) for record in seen]
        process.send_signal(signal.SIGINT)
        if when == "twice":
            read_until("stopping")
            process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
    last = json.loads(out.splitlines()[-1])
    assert last["event"] == "interrupted" and process.returncode == 0, out
    assert not any(alive(p) for p in pids)
    if when == "twice":
        assert float(str(last["seconds"])) < 60


TEARDOWN_CTRL_C_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import supervisor as sv
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(3600)"
    stop = sv.StopPolicy(grace_seconds=600)  # SIGTERM is ignored: the teardown lasts until the Ctrl-C kills it
    service = sv.Service(name="s", command=[sys.executable, "-c", code], ready=sv.LogCheck("up"), stop=stop)

    def report(event):
        if isinstance(event, (sv.Spawned, sv.Stopping)):
            print(json.dumps({"event": event.kind, "pid": getattr(event, "pid", None)}), flush=True)

    try:
        with sv.launch_sync(sv.Topology(name="late", services=[service]), runs_dir=sys.argv[1], on_event=report,
                            backend=sys.argv[2]):
            pass  # the block ends normally: the Ctrl-C comes during the teardown
        print(json.dumps({"event": "after the block"}), flush=True)
    except KeyboardInterrupt:
        print(json.dumps({"event": "interrupted"}), flush=True)
    """
)


def test_a_ctrl_c_during_the_teardown_is_raised_once_the_run_is_down(tmp_path: Path, runs_dir: Path) -> None:
    """The block ended normally and its teardown waits on a service that ignores SIGTERM; a Ctrl-C then
    SIGKILLs the run and, once it is down, raises KeyboardInterrupt. It was swallowed: the program went on
    past the block (11 of 17 interrupted pytest sessions ran all their tests and exited 0)."""
    script = tmp_path / "late.py"
    script.write_text(TEARDOWN_CTRL_C_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(sv.__file__).parent.parent)}
    process = subprocess.Popen(
        [PYTHON, str(script), str(runs_dir), BACKEND], stdout=subprocess.PIPE, text=True, env=env
    )
    assert process.stdout is not None
    seen: list[dict[str, object]] = []
    try:
        for _ in range(10):  # spawned, then stopping: the teardown has begun
            seen.append(json.loads(process.stdout.readline() or '{"event": "eof"}'))
            if seen[-1]["event"] in ("stopping", "eof"):
                break
        assert seen[-1]["event"] == "stopping", seen
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
    assert [json.loads(line)["event"] for line in out.splitlines()] == ["interrupted"], out
    assert not any(alive(int(str(record["pid"]))) for record in seen if record["event"] == "spawned")


LOOP_THREAD_SIGINT_SCRIPT = textwrap.dedent(
    """
    import json, signal, sys, threading, time
    import supervisor as sv
    when = sys.argv[2]
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(3600)"
    if when in ("starting", "waiting"):  # their teardown is a plain SIGTERM
        code = code.replace("signal.SIG_IGN", "signal.SIG_DFL")
    ready = sv.LogCheck("never" if when == "starting" else "up")
    service = sv.Service(name="s", command=[sys.executable, "-c", code], ready=ready, stop=sv.StopPolicy(grace_seconds=600))
    topo = sv.Topology(name="loopsig", services=[service])
    loop_thread = []

    def report(event):
        # on_event runs on the loop thread: the SIGINT is handled there, not in the waiting main thread
        if isinstance(event, sv.Spawned):
            loop_thread.append(threading.get_ident())
            print(json.dumps({"event": "spawned", "pid": event.pid}), flush=True)
            if when == "starting":
                signal.pthread_kill(threading.get_ident(), signal.SIGINT)
        if isinstance(event, sv.Stopping) and when == "stopping":
            signal.pthread_kill(threading.get_ident(), signal.SIGINT)

    started = time.monotonic()
    try:
        with sv.launch_sync(topo, runs_dir=sys.argv[1], on_event=report, backend=sys.argv[3]) as group:
            print(json.dumps({"event": "block"}), flush=True)
            if when == "waiting":  # the main thread blocks in a call on the group; the loop thread takes the Ctrl-C
                threading.Timer(0.5, signal.pthread_kill, (loop_thread[0], signal.SIGINT)).start()
                group.wait(timeout_seconds=600)
            raise KeyboardInterrupt  # the first Ctrl-C, in the main thread; the second lands on the loop thread
    except KeyboardInterrupt:
        print(json.dumps({"event": "interrupted", "seconds": time.monotonic() - started}), flush=True)
    """
)


@pytest.mark.parametrize("when", ["starting", "waiting", "stopping"])
def test_a_ctrl_c_that_the_loop_thread_takes_still_reaches_the_main_thread(
    tmp_path: Path, runs_dir: Path, when: str
) -> None:
    """The kernel may hand a process's SIGINT to any thread; CPython runs the handler in the main thread only
    when a blocking call of it wakes. ``starting``: the main thread waits for ready (which never comes, in
    10 minutes); ``waiting``: it is in ``group.wait()`` on a server; ``stopping``: it waits for a teardown
    whose service ignores SIGTERM (10-minute grace). A SIGINT taken by the loop thread still interrupts the
    start or the call, or SIGKILLs the run at once."""
    script = tmp_path / "loopsig.py"
    script.write_text(LOOP_THREAD_SIGINT_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(sv.__file__).parent.parent)}
    process = subprocess.Popen(
        [sys.executable, str(script), str(runs_dir), when, BACKEND], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        out, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdout is not None
        process.stdout.close()
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[-1]["event"] == "interrupted" and process.returncode == 0, out
    assert float(str(lines[-1]["seconds"])) < 30, out
    pid = next(int(str(line["pid"])) for line in lines if line["event"] == "spawned")
    wait_until(lambda: not alive(pid), timeout=10)
