"""Start, readiness, failure and teardown with real processes."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import anyio
import pytest

import supervisor as sv
from supervisor._host.proctable import marked_processes

from ..helpers import PROGRAMS, PYTHON, alive

pytestmark = pytest.mark.anyio


def sleeper(name: str, *, after: float = 0.0, message: str = "up", **kwargs: object) -> sv.Service:
    """A service that prints ``message`` after ``after`` seconds, then idles until stopped."""
    code = f"import time; time.sleep({after}); print({message!r}, flush=True); time.sleep(3600)"
    kwargs.setdefault("ready", sv.LogCheck(message))
    return sv.Service(name=name, command=[PYTHON, "-c", code], **kwargs)  # type: ignore[arg-type]


def http_server(name: str, *, delay: float = 0.0, **kwargs: object) -> sv.Service:
    """http.server that binds only after ``delay`` seconds."""
    code = (
        "import time, sys, http.server; time.sleep(float(sys.argv[2])); "
        "http.server.test(HandlerClass=http.server.SimpleHTTPRequestHandler, port=int(sys.argv[1]), bind='127.0.0.1')"
    )
    kwargs.setdefault("ports", ["port"])
    kwargs.setdefault("ready", sv.HttpCheck("http://127.0.0.1:{port}/"))
    return sv.Service(name=name, command=[PYTHON, "-c", code, "{port}", str(delay)], **kwargs)  # type: ignore[arg-type]


async def test_three_level_dag_is_ready_on_its_critical_path(runs_dir: Path) -> None:
    """a(0.3s) -> b(0.3s) -> d(0.3s) and c(0.1s) -> d: all ready after ~0.9 s plus start costs, not 1.0+."""
    topo = sv.Topology(
        name="dag",
        services=[
            sleeper("a", after=0.3),
            sleeper("b", after=0.3, depends_on=["a"]),
            sleeper("c", after=0.1, depends_on=["a"]),
            sleeper("d", after=0.3, depends_on=["b", "c"]),
        ],
    )
    began = time.monotonic()
    async with sv.launch(topo, runs_dir=runs_dir) as group:
        elapsed = time.monotonic() - began
        ready = {e.replica: e.monotonic for e in group.event_history if isinstance(e, sv.Ready)}
        spawned = {e.replica: e.monotonic for e in group.event_history if isinstance(e, sv.Spawned)}
    # b and c start together once a is ready; d waits for b (the longer branch) only
    assert abs(spawned["b"] - spawned["c"]) < 0.05
    assert spawned["b"] >= ready["a"] and spawned["d"] >= ready["b"] and spawned["d"] >= ready["c"]
    assert spawned["d"] - ready["b"] < 0.05
    assert elapsed < 0.9 + 1.0, elapsed  # three 0.3 s waits plus interpreter starts, generous for CI


async def test_replicas_get_their_own_ports_and_urls(runs_dir: Path) -> None:
    topo = sv.Topology(name="reps", services=[http_server("web", replicas=3)])
    async with sv.launch(topo, runs_dir=runs_dir) as group:
        web = group["web"]
        ports = [r.port for r in web.replicas]
        assert len(set(ports)) == 3 and all(ports)
        assert group["web.2"].url == f"http://127.0.0.1:{ports[2]}"
        assert web.url == group["web.0"].url and len(web.pids) == 3
        for replica in web.replicas:
            async with await anyio.connect_tcp("127.0.0.1", replica.port):
                pass


async def test_dependency_conditions_started_and_completed(runs_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "downloaded"
    topo = sv.Topology(
        name="conds",
        services=[
            sv.Service(name="download", command=[PYTHON, "-c", f"import time; time.sleep(0.2); open({str(marker)!r}, 'w')"]),
            sleeper("slow", after=2.0),
            sv.Service(
                name="server",
                command=[PYTHON, "-c", f"import os, time; assert os.path.exists({str(marker)!r}); print('up', flush=True); time.sleep(60)"],
                depends_on={"download": "completed", "slow": "started"},
                ready=sv.LogCheck("up"),
            ),
        ],
    )  # fmt: skip
    async with sv.launch(topo, runs_dir=runs_dir) as group:
        assert group["download"].replicas[0].state is sv.ReplicaState.COMPLETED
        assert group["server"].replicas[0].state is sv.ReplicaState.READY
        at = {(e.kind, e.replica): e.monotonic for e in group.event_history}
        # "started" was enough: server ran long before slow was ready
        assert at[("spawned", "server")] < at[("ready", "slow")] - 1
        assert at[("spawned", "server")] > at[("completed", "download")]


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_http_probe_sees_readiness_within_milliseconds(runs_dir: Path) -> None:
    topo = sv.Topology(name="fast", services=[http_server("web", delay=0.4)])
    async with sv.launch(topo, runs_dir=runs_dir) as group:
        ready = next(e for e in group.event_history if isinstance(e, sv.Ready))
        assert group["web"].replicas[0].state is sv.ReplicaState.READY
        assert ready.seconds >= 0.4


async def test_http_probe_status_and_json_predicates(runs_dir: Path) -> None:
    """status 503 then 200 with a JSON body; the probe waits for {"status": "ok"}."""
    topo = sv.Topology(
        name="pred",
        services=[
            sv.Service(
                name="worker",
                command=[
                    PYTHON,
                    "-m",
                    "standins",
                    "worker",
                    "--port",
                    "{port}",
                    "--load-seconds",
                    "0.5",
                ],
                ports=["port"],
                ready=sv.HttpCheck("http://127.0.0.1:{port}/health", status=200, json={"status": "ok"}, body="ok"),
            )
        ],
    )
    async with sv.launch(topo, runs_dir=runs_dir) as group:
        log = group["worker"].replicas[0].log_path.read_text()
        assert "Application startup complete." in log


@pytest.mark.parametrize(
    "check",
    [
        sv.TcpCheck("{port}"),
        sv.ExecCheck([PYTHON, "-c", "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])))", "{port}"]),
        sv.AllOf([sv.LogCheck("Serving HTTP"), sv.TcpCheck("127.0.0.1:{port}")]),
        sv.AnyOf([sv.LogCheck("never printed"), sv.HttpCheck("http://127.0.0.1:{port}/")]),
    ],
    ids=["tcp", "exec", "all", "any"],
)  # fmt: skip
async def test_probe_kinds_pass_once_the_server_listens(runs_dir: Path, check: sv.Check) -> None:
    topo = sv.Topology(name="kinds", services=[http_server("web", delay=0.2, ready=check)])
    async with sv.launch(topo, runs_dir=runs_dir) as group:
        port = group["web"].port
        async with await anyio.connect_tcp("127.0.0.1", port):
            pass


async def test_python_callable_probe_gets_the_replica(runs_dir: Path) -> None:
    seen: list[sv.ProbeTarget] = []

    async def listening(target: sv.ProbeTarget) -> bool:
        seen.append(target)
        try:
            async with await anyio.connect_tcp("127.0.0.1", target.port or 0):
                return True
        except OSError:
            return False

    topo = sv.Topology(name="call", services=[http_server("web", delay=0.2, ready=listening)])
    async with sv.launch(topo, runs_dir=runs_dir) as group:
        assert seen[-1].port == group["web"].port and seen[-1].pid == group["web"].pids[0]


async def test_exit_while_probing_fails_at_once_with_code_and_log_tail(runs_dir: Path) -> None:
    """The probe would wait 60 s; the process dies after 0.2 s and we learn it right away."""
    code = "import sys, time; print('loading model'); print('CUDA out of memory', flush=True); time.sleep(0.2); sys.exit(3)"
    topo = sv.Topology(
        name="dies",
        services=[
            sleeper("kv"),
            sv.Service(
                name="worker",
                command=[PYTHON, "-c", code],
                depends_on=["kv"],
                ready=sv.Probe(sv.HttpCheck("http://127.0.0.1:9/health"), timeout_seconds=60),
            ),
        ],
    )
    began = time.monotonic()
    with pytest.raises(sv.ServiceFailed) as info:
        async with sv.launch(topo, runs_dir=runs_dir):
            pytest.fail("launch must not succeed")
    assert time.monotonic() - began < 10
    error = info.value
    assert error.replica == "worker" and error.exit_code == 3
    assert "exited with code 3 before it was ready" in str(error)
    assert "http http://127.0.0.1:9/health" in str(error)
    assert "CUDA out of memory" in str(error)


async def test_readiness_timeout_names_service_probe_and_log(runs_dir: Path) -> None:
    topo = sv.Topology(
        name="slow",
        services=[sleeper("slow", after=30, ready=sv.Probe(sv.LogCheck("never"), timeout_seconds=0.3))],
    )
    with pytest.raises(sv.ReadinessTimeout) as info:
        async with sv.launch(topo, runs_dir=runs_dir):
            pytest.fail("launch must not succeed")
    assert "slow: not ready after 0.3s: probe log /never/" in str(info.value)


async def test_missing_program_at_spawn_is_a_clear_failure(runs_dir: Path, tmp_path: Path) -> None:
    program = tmp_path / "vanishing"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    plan = sv.make_plan(
        sv.Topology(name="gone", services=[sv.Service(name="x", command=[str(program)])]), runs_dir=runs_dir
    )
    program.unlink()  # it existed when we planned, not when we spawn
    with pytest.raises(sv.ServiceFailed, match="x: cannot start"):
        async with sv.launch(plan):
            pytest.fail("launch must not succeed")


async def test_teardown_kills_stubborn_leader_and_setsid_grandchildren(runs_dir: Path, tmp_path: Path) -> None:
    """Leader ignores SIGTERM; grandchildren in and out of the group, one double-forked daemon: none survive."""
    pids_file = tmp_path / "pids"
    argv = [PYTHON, str(PROGRAMS / "tree.py"), "--pids", str(pids_file), "--ignore-term",
            "--children", "2", "--setsid-children", "2", "--daemon"]  # fmt: skip
    topo = sv.Topology(
        name="stubborn",
        services=[
            sv.Service(
                name="tree",
                command=argv,
                ready=sv.LogCheck("tree ready"),
                stop=sv.StopPolicy(grace_seconds=0.3),
            ),
            sleeper("polite", depends_on=["tree"]),
        ],
    )
    async with sv.launch(topo, runs_dir=runs_dir) as group:
        pids = [int(line) for line in pids_file.read_text().split()]
        assert len(pids) == 6 and all(alive(pid) for pid in pids)
        run_id = group.run_id
    assert not [pid for pid in pids if alive(pid)]
    assert marked_processes(run_id) == {}
    stops = [e for e in group.event_history if isinstance(e, sv.Stopped)]
    assert [e.replica for e in stops] == ["polite", "tree"]  # reverse dependency order
    assert stops[1].killed and not stops[0].killed
    assert group.leftovers == []


async def test_teardown_waits_for_graceful_exit_within_grace(runs_dir: Path) -> None:
    code = "import signal, sys, time\ndef bye(*_):\n    time.sleep(0.3); print('bye', flush=True); sys.exit(0)\nsignal.signal(signal.SIGTERM, bye)\nprint('up', flush=True)\nwhile True: time.sleep(1)"
    topo = sv.Topology(
        name="graceful",
        services=[sv.Service(name="g", command=[PYTHON, "-c", code], ready=sv.LogCheck("up"))],
    )
    async with sv.launch(topo, runs_dir=runs_dir) as group:
        pass
    stopped = next(e for e in group.event_history if isinstance(e, sv.Stopped))
    assert not stopped.killed and stopped.seconds >= 0.3
    assert "bye" in group["g"].replicas[0].log_path.read_text()


async def test_crash_after_ready_cancels_the_body_and_raises(runs_dir: Path) -> None:
    code = "import sys, time; print('up', flush=True); time.sleep(0.3); print('segfault imminent', flush=True); sys.exit(7)"
    topo = sv.Topology(
        name="crash",
        services=[
            sleeper("steady"),
            sv.Service(name="crashy", command=[PYTHON, "-c", code], ready=sv.LogCheck("up")),
        ],
    )
    with pytest.raises(sv.ServiceFailed) as info:
        async with sv.launch(topo, runs_dir=runs_dir) as group:
            await anyio.sleep(30)
    assert info.value.replica == "crashy" and info.value.exit_code == 7
    assert "segfault imminent" in str(info.value)
    assert not alive(group["steady"].pids[0])


async def test_run_returns_when_every_job_completed(runs_dir: Path) -> None:
    topo = sv.Topology(
        name="jobs",
        services=[
            sv.Service(name="one", command=[PYTHON, "-c", "print('done')"]),
            sv.Service(name="two", command=[PYTHON, "-c", "print('done')"], depends_on={"one": "completed"}),
        ],
    )
    with anyio.fail_after(20):
        assert await sv.run(topo, runs_dir=runs_dir) is None


async def test_events_stream_and_jsonl_record(runs_dir: Path) -> None:
    topo = sv.Topology(name="ev", services=[sleeper("a"), sleeper("b", depends_on=["a"])])
    seen: list[str] = []
    async with sv.launch(topo, runs_dir=runs_dir) as group:

        async def collect() -> None:
            async for event in group.events(history=True):
                seen.append(f"{event.kind}:{event.replica}")

        async with anyio.create_task_group() as tg:
            tg.start_soon(collect)
            await group.stop()
    assert seen[:4] == ["spawned:a", "ready:a", "spawned:b", "ready:b"]
    assert "stopped:b" in seen and seen.index("stopped:b") < seen.index("stopped:a")
    lines = [json.loads(line) for line in (group.run_dir / "events.jsonl").read_text().splitlines()]
    assert [f"{x['event']}:{x['replica']}" for x in lines] == seen
    assert all("monotonic" in x and "wall_time" in x for x in lines)
    manifest = json.loads((group.run_dir / "manifest.json").read_text())
    assert manifest["services"]["a"]["replicas"][0]["pid"] == group["a"].pids[0]
    assert (group.run_dir.stat().st_mode & 0o777) == 0o700
    summary = json.loads((group.run_dir / "summary.json").read_text())
    assert summary["outcome"] == "stopped" and summary["verified_no_leftovers"] is True and summary["leftovers"] == []


async def test_secrets_are_redacted_in_the_manifest(runs_dir: Path) -> None:
    topo = sv.Topology(name="sec", services=[sleeper("a", env={"HF_TOKEN": "hf_secret_value", "MODE": "x"})])
    async with sv.launch(topo, runs_dir=runs_dir) as group:
        pass
    text = (group.run_dir / "manifest.json").read_text()
    assert "hf_secret_value" not in text and '"MODE": "x"' in text


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_second_kill_now_skips_the_grace(runs_dir: Path, tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    argv = [
        PYTHON,
        str(PROGRAMS / "tree.py"),
        "--pids",
        str(pids_file),
        "--ignore-term",
        "--setsid-children",
        "1",
    ]
    topo = sv.Topology(
        name="killnow",
        services=[
            sv.Service(name="t", command=argv, ready=sv.LogCheck("tree ready"), stop=sv.StopPolicy(grace_seconds=60))
        ],
    )
    began = time.monotonic()
    async with sv.launch(topo, runs_dir=runs_dir) as group:
        group.kill_now()
    assert time.monotonic() - began < 30
    assert not [p for p in map(int, pids_file.read_text().split()) if alive(p)]


def test_signal_constants_are_real() -> None:
    assert sv.StopPolicy(signal="term").signal == "SIGTERM"
    assert sv.StopPolicy(signal=signal.SIGINT).signal == "SIGINT"
    with pytest.raises(ValueError, match="unknown signal"):
        sv.StopPolicy(signal="SIGNOPE")


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_outside_cancellation_still_tears_everything_down(runs_dir: Path, tmp_path: Path) -> None:
    """The caller's timeout cancels the block; teardown still sees exits and escalates to SIGKILL."""
    pids_file = tmp_path / "pids"
    argv = [
        PYTHON,
        str(PROGRAMS / "tree.py"),
        "--pids",
        str(pids_file),
        "--ignore-term",
        "--setsid-children",
        "1",
    ]
    topo = sv.Topology(
        name="cancel",
        services=[
            sv.Service(name="t", command=argv, ready=sv.LogCheck("tree ready"), stop=sv.StopPolicy(grace_seconds=0.2)),
            sleeper("s", depends_on=["t"]),
        ],
    )
    with anyio.move_on_after(15) as outer:
        async with sv.launch(topo, runs_dir=runs_dir) as group:
            outer.deadline = anyio.current_time()  # cancel right now, from outside
            await anyio.sleep(30)
    assert outer.cancelled_caught
    assert not [p for p in map(int, pids_file.read_text().split()) if alive(p)]
    assert [e.replica for e in group.event_history if isinstance(e, sv.Stopped)] == ["s", "t"]


async def test_cancelled_while_starting_stops_what_was_spawned(runs_dir: Path) -> None:
    topo = sv.Topology(name="midstart", services=[sleeper("fast"), sleeper("slow", after=30)])
    with anyio.move_on_after(1.0):
        async with sv.launch(topo, runs_dir=runs_dir):
            pytest.fail("must not be ready")
    run = next(runs_dir.iterdir())
    manifest = json.loads((run / "manifest.json").read_text())
    pids = [r["pid"] for s in manifest["services"].values() for r in s["replicas"]]
    assert len(pids) == 2 and not [p for p in pids if alive(p)]
