"""Restart policies, backoff, give-up, strategies, liveness, fatal output, quorum, with real processes."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

import supervisor as sv
from supervisor._runtime.policy import RestartBudget, backoff_delay, decide

from ..helpers import PROGRAMS, PYTHON, alive

pytestmark = pytest.mark.anyio

FLAKY = str(PROGRAMS / "flaky.py")
QUICK = sv.Backoff(initial_seconds=0.05, max_seconds=0.2, jitter=0)


def flaky(name: str, *args: str, restart: sv.RestartPolicy | str = "no", **kwargs: object) -> sv.Service:
    kwargs.setdefault("ready", sv.LogCheck("service ready"))
    return sv.Service(name=name, command=[PYTHON, FLAKY, *args], restart=restart, **kwargs)  # type: ignore[arg-type]


def of(group: sv.RunningTopology, kind: type[sv.Event], replica: str | None = None) -> list[sv.Event]:
    return [e for e in group.event_history if isinstance(e, kind) and (replica is None or e.replica == replica)]


async def wait_for(group: sv.RunningTopology, predicate: object, timeout: float = 20) -> None:
    """Wait on the event stream (no sleeping) until ``predicate(history)`` holds."""
    with anyio.fail_after(timeout):
        if predicate(group.event_history):  # type: ignore[operator]
            return
        async for _ in group.events():
            if predicate(group.event_history):  # type: ignore[operator]
                return


async def test_crash_after_ready_comes_back_after_the_backoff(runs_dir: Path, tmp_path: Path) -> None:
    policy = sv.RestartPolicy(policy="on-failure", backoff=sv.Backoff(initial_seconds=0.3, jitter=0))
    topo = sv.Topology(
        name="crash", services=[flaky("w", "--crash-after", "0.2", "--once", str(tmp_path / "once"), restart=policy)]
    )
    async with sv.launch(topo, runs_dir=runs_dir) as group:
        first_pid = group["w"].pids[0]
        await wait_for(group, lambda h: len([e for e in h if isinstance(e, sv.Ready)]) == 2)
        restarting = of(group, sv.Restarting)
        assert len(restarting) == 1 and restarting[0].delay_seconds == pytest.approx(0.3)
        exited, ready = of(group, sv.Exited)[0], of(group, sv.Ready)[1]
        assert ready.monotonic - exited.monotonic >= 0.3  # waited the backoff
        assert group["w"].pids[0] != first_pid and alive(group["w"].pids[0]) and not alive(first_pid)
        assert group["w"].replicas[0].restarts == 1 and group["w"].replicas[0].state is sv.ReplicaState.READY


async def test_crash_loop_gives_up_after_exactly_max_restarts(runs_dir: Path) -> None:
    policy = sv.RestartPolicy(policy="on-failure", max_restarts=3, window_seconds=60, backoff=QUICK)
    topo = sv.Topology(name="loop", services=[flaky("bad", "--crash-after", "0", "--exit-code", "3", restart=policy)])
    with pytest.raises(sv.ServiceFailed) as info:
        async with sv.launch(topo, runs_dir=runs_dir) as group:
            await anyio.sleep(30)  # the give-up cancels this
    assert len(of(group, sv.Restarting)) == 3 and len(of(group, sv.Spawned)) == 4
    message = str(info.value)
    assert info.value.replica == "bad" and "exited with code 3" in message
    assert "gave up after 3 restarts within 60s (max_restarts: 3)" in message


async def test_crash_loop_before_ready_fails_the_launch(runs_dir: Path) -> None:
    policy = sv.RestartPolicy(policy="on-failure", max_restarts=2, backoff=QUICK)
    topo = sv.Topology(
        name="early", services=[flaky("bad", "--crash-after", "0", ready=sv.LogCheck("never"), restart=policy)]
    )
    with pytest.raises(sv.ServiceFailed, match=r"before it was ready .*gave up after 2 restarts"):
        async with sv.launch(topo, runs_dir=runs_dir):
            pytest.fail("must not be ready")


async def test_always_restarts_a_clean_exit_and_no_completes_it(runs_dir: Path, tmp_path: Path) -> None:
    policy = sv.RestartPolicy(policy="always", backoff=QUICK)
    topo = sv.Topology(
        name="always",
        services=[
            flaky("front", "--crash-after", "0.1", "--exit-code", "0", "--once", str(tmp_path / "o"), restart=policy)
        ],
    )
    async with sv.launch(topo, runs_dir=runs_dir) as group:
        await wait_for(group, lambda h: len([e for e in h if isinstance(e, sv.Ready)]) == 2)
        assert of(group, sv.Exited)[0].exit_code == 0 and len(of(group, sv.Restarting)) == 1


async def test_rest_for_one_restarts_dependents_but_not_unrelated(runs_dir: Path, tmp_path: Path) -> None:
    policy = sv.RestartPolicy(policy="on-failure", backoff=QUICK)
    topo = sv.Topology(
        name="rest",
        strategy="rest_for_one",
        services=[
            flaky("kv", "--crash-after", "0.5", "--once", str(tmp_path / "once"), restart=policy),
            flaky("worker", depends_on=["kv"], restart=policy),
            flaky("front", depends_on=["worker"], restart=policy),
            flaky("unrelated", restart=policy),
        ],
    )
    async with sv.launch(topo, runs_dir=runs_dir) as group:
        before = {name: group[name].pids[0] for name in ("kv", "worker", "front", "unrelated")}
        await wait_for(group, lambda h: len([e for e in h if isinstance(e, sv.Ready) and e.replica == "front"]) == 2)
        after = {name: group[name].pids[0] for name in before}
        assert after["unrelated"] == before["unrelated"]
        assert all(after[n] != before[n] for n in ("kv", "worker", "front"))
        assert not [pid for n, pid in before.items() if n != "unrelated" and alive(pid)]
        ready = {e.replica: e.monotonic for e in of(group, sv.Ready)[4:]}
        assert ready["kv"] < ready["worker"] < ready["front"]  # dependents waited for readiness again
        stops = [e.replica for e in of(group, sv.Stopped)]
        assert stops.index("front") < stops.index("worker")  # stopped in reverse order


async def test_one_for_all_restarts_everything(runs_dir: Path, tmp_path: Path) -> None:
    policy = sv.RestartPolicy(policy="on-failure", backoff=QUICK)
    topo = sv.Topology(
        name="all",
        strategy="one_for_all",
        services=[
            flaky("a", restart=policy),
            flaky("b", "--crash-after", "0.3", "--once", str(tmp_path / "o"), restart=policy),
        ],
    )
    async with sv.launch(topo, runs_dir=runs_dir) as group:
        before = group["a"].pids[0]
        await wait_for(group, lambda h: len([e for e in h if isinstance(e, sv.Ready)]) == 4)
        assert group["a"].pids[0] != before


async def test_replica_group_restarts_together(runs_dir: Path, tmp_path: Path) -> None:
    """A tensor-parallel set: one rank dies, every rank restarts; others services are untouched."""
    policy = sv.RestartPolicy(policy="on-failure", backoff=QUICK, group=True)
    code = "import os, sys, time; print('service ready', flush=True); time.sleep(0.3 if os.environ['RANK'] == '1' and not os.path.exists(sys.argv[1]) else 3600); open(sys.argv[1], 'w'); sys.exit(1)"
    topo = sv.Topology(
        name="tp",
        services=[
            sv.Service(name="tp", command=[PYTHON, "-c", code, str(tmp_path / "o")], replicas=3, env={"RANK": "{replica}"},
                       ready=sv.LogCheck("service ready"), restart=policy),
            flaky("other"),
        ],
    )  # fmt: skip
    async with sv.launch(topo, runs_dir=runs_dir) as group:
        before = group["tp"].pids
        other = group["other"].pids[0]
        await wait_for(group, lambda h: len([e for e in h if isinstance(e, sv.Ready) and e.service == "tp"]) == 6)
        assert set(group["tp"].pids).isdisjoint(before) and group["other"].pids[0] == other


async def test_hung_service_is_replaced_by_liveness(runs_dir: Path, tmp_path: Path) -> None:
    policy = sv.RestartPolicy(policy="on-failure", backoff=QUICK)
    alive_probe = sv.Probe(
        sv.HttpCheck("http://127.0.0.1:{port}/health"), period_seconds=0.1, timeout_seconds=0.3, failures=2
    )
    topo = sv.Topology(
        name="hung",
        services=[
            flaky("srv", "--port", "{port}", "--hang-after", "0.3", "--once", str(tmp_path / "o"), ports=["port"],
                  alive=alive_probe, restart=policy, stop=sv.StopPolicy(grace_seconds=0.3)),
        ],
    )  # fmt: skip
    async with sv.launch(topo, runs_dir=runs_dir) as group:
        hung = group["srv"].pids[0]
        await wait_for(group, lambda h: len([e for e in h if isinstance(e, sv.Ready)]) >= 2)
        assert of(group, sv.Unready) and "liveness probe http" in of(group, sv.Restarting)[0].reason
        assert not alive(hung) and of(group, sv.Stopped)[0].killed  # SIGSTOPped: only SIGKILL ends it


async def test_lost_and_regained_readiness_is_an_event_not_a_restart(runs_dir: Path) -> None:
    gate = "import os, sys, time, http.server, threading\nclass H(http.server.BaseHTTPRequestHandler):\n    def do_GET(self):\n        self.send_response(503 if os.path.exists(sys.argv[2]) else 200); self.end_headers()\n    def log_message(self, *a): pass\nthreading.Thread(target=http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever, daemon=True).start()\nprint('service ready', flush=True)\nwhile True: time.sleep(1)"
    flag = runs_dir.parent / "sick"
    topo = sv.Topology(
        name="flap",
        services=[sv.Service(name="s", command=[PYTHON, "-c", gate, "{port}", str(flag)], ports=["port"], ready=sv.LogCheck("service ready"),
                             alive=sv.Probe(sv.HttpCheck("http://127.0.0.1:{port}/"), period_seconds=0.05, failures=1000))],
    )  # fmt: skip
    async with sv.launch(topo, runs_dir=runs_dir) as group:
        flag.touch()
        await wait_for(group, lambda h: any(isinstance(e, sv.Unready) for e in h))
        assert group["s"].replicas[0].state is sv.ReplicaState.UNREADY
        flag.unlink()
        await wait_for(group, lambda h: len([e for e in h if isinstance(e, sv.Ready)]) == 2)
        assert group["s"].replicas[0].state is sv.ReplicaState.READY and not of(group, sv.Restarting)


@pytest.mark.parametrize(
    ("say", "fatal", "quoted"),
    [
        ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", (), "CUDA out of memory"),
        ("OSError: [Errno 98] Address already in use", (), "Address already in use"),
        ("RuntimeError: NCCL error in: ProcessGroupNCCL.cpp:1234, unhandled system error", (), "NCCL error"),
        ("ValueError: bad tensor_parallel_size 3", ("bad tensor_parallel_size",), "bad tensor_parallel_size 3"),
        ("RuntimeError: CUDA OOM on rank 0", ("(?i)cuda oom", "boom"), "CUDA OOM on rank 0"),  # its own flags
    ],
)
async def test_fatal_output_is_not_retried(runs_dir: Path, say: str, fatal: tuple[str, ...], quoted: str) -> None:
    policy = sv.RestartPolicy(policy="on-failure", max_restarts=5, backoff=QUICK)
    topo = sv.Topology(
        name="fatal", services=[flaky("w", "--crash-after", "0.1", "--say", say, restart=policy, fatal=fatal)]
    )
    with pytest.raises(sv.ServiceFailed) as info:
        async with sv.launch(topo, runs_dir=runs_dir) as group:
            await anyio.sleep(30)
    assert not of(group, sv.Restarting)
    assert "not retried, the output says" in str(info.value) and quoted in str(info.value)


async def test_backoff_resets_after_stable_uptime(runs_dir: Path) -> None:
    stable = sv.RestartPolicy(policy="on-failure", max_restarts=10, reset_after_seconds=0.2,
                              backoff=sv.Backoff(initial_seconds=0.05, factor=4, jitter=0))  # fmt: skip
    topo = sv.Topology(name="reset", services=[flaky("w", "--crash-after", "0.4", restart=stable)])
    async with sv.launch(topo, runs_dir=runs_dir) as group:
        await wait_for(group, lambda h: len([e for e in h if isinstance(e, sv.Restarting)]) == 3)
        assert [e.attempt for e in of(group, sv.Restarting)] == [1, 1, 1]
        assert [e.delay_seconds for e in of(group, sv.Restarting)] == [0.05, 0.05, 0.05]


async def test_backoff_grows_without_stable_uptime(runs_dir: Path) -> None:
    unstable = sv.RestartPolicy(policy="on-failure", max_restarts=10, reset_after_seconds=60,
                                backoff=sv.Backoff(initial_seconds=0.02, factor=2, jitter=0))  # fmt: skip
    topo = sv.Topology(name="grow", services=[flaky("w", "--crash-after", "0.05", restart=unstable)])
    async with sv.launch(topo, runs_dir=runs_dir) as group:
        await wait_for(group, lambda h: len([e for e in h if isinstance(e, sv.Restarting)]) == 3)
        assert [e.delay_seconds for e in of(group, sv.Restarting)][:3] == [0.02, 0.04, 0.08]


async def test_quorum_keeps_serving_with_one_replica_down(runs_dir: Path, tmp_path: Path) -> None:
    code = "import os, sys, time; print('service ready', flush=True); time.sleep(0.3 if os.environ['RANK'] == '1' else 3600); sys.exit(9)"
    topo = sv.Topology(
        name="quorum",
        services=[sv.Service(name="decode", command=[PYTHON, "-c", code], replicas=3, env={"RANK": "{replica}"},
                             ready=sv.LogCheck("service ready"), min_ready=2)],
    )  # fmt: skip
    async with sv.launch(topo, runs_dir=runs_dir) as group:
        await wait_for(group, lambda h: any(isinstance(e, sv.Degraded) for e in h))
        degraded = of(group, sv.Degraded)[0]
        assert (degraded.ready, degraded.total, degraded.min_ready) == (2, 3, 2)
        assert group["decode.1"].state is sv.ReplicaState.FAILED
        assert all(alive(group[f"decode.{i}"].pids[0]) for i in (0, 2))


async def test_losing_the_quorum_fails_the_run(runs_dir: Path) -> None:
    code = "import os, sys, time; print('service ready', flush=True); time.sleep(0.2 if os.environ['RANK'] != '0' else 3600); sys.exit(9)"
    topo = sv.Topology(
        name="noquorum",
        services=[sv.Service(name="decode", command=[PYTHON, "-c", code], replicas=3, env={"RANK": "{replica}"},
                             ready=sv.LogCheck("service ready"), min_ready=2)],
    )  # fmt: skip
    with pytest.raises(sv.ServiceFailed, match="exited with code 9 while running"):
        async with sv.launch(topo, runs_dir=runs_dir):
            await anyio.sleep(30)


async def test_progress_extends_the_readiness_deadline(runs_dir: Path) -> None:
    probe = sv.Probe(sv.LogCheck("service ready"), timeout_seconds=0.3, progress_timeout_seconds=0.5)
    topo = sv.Topology(name="progress", services=[flaky("loader", "--load", "1.2", "--progress", "0.1", ready=probe)])
    async with sv.launch(topo, runs_dir=runs_dir) as group:
        assert of(group, sv.Ready)[0].seconds >= 1.2  # long past the 0.3 s timeout, thanks to progress


async def test_silence_fails_the_progress_deadline(runs_dir: Path) -> None:
    probe = sv.Probe(sv.LogCheck("service ready"), progress_timeout_seconds=0.4)
    topo = sv.Topology(name="stall", services=[flaky("loader", "--load", "30", ready=probe)])
    with pytest.raises(sv.ReadinessTimeout, match=r"no progress for 0\.4s"):
        async with sv.launch(topo, runs_dir=runs_dir):
            pytest.fail("must not be ready")


async def test_group_restart_and_stop_by_name(runs_dir: Path) -> None:
    topo = sv.Topology(name="ops", services=[flaky("kv"), flaky("worker", depends_on=["kv"], replicas=2)])
    async with sv.launch(topo, runs_dir=runs_dir) as group:
        kv, workers = group["kv"].pids[0], group["worker"].pids
        await group.restart("worker.1")
        assert group["worker.1"].pids[0] != workers[1] and group["worker.0"].pids[0] == workers[0]
        assert group["worker.1"].state is sv.ReplicaState.READY and group["worker.1"].restarts == 1
        await group.stop("worker")
        assert not [p for p in group["worker"].pids if alive(p)] and alive(kv)
        assert {r.state for r in group["worker"].replicas} == {sv.ReplicaState.STOPPED}


def test_backoff_is_a_pure_function() -> None:
    policy = sv.RestartPolicy(
        policy="on-failure", backoff=sv.Backoff(initial_seconds=1, max_seconds=5, factor=2, jitter=0)
    )
    assert [backoff_delay(policy, n) for n in range(1, 6)] == [1, 2, 4, 5, 5]
    budget = RestartBudget(sv.RestartPolicy(policy="on-failure", max_restarts=2, window_seconds=10))
    decisions = [
        decide(budget.policy, budget, exit_code=1, now=t, uptime_seconds=0, why="x").action for t in (0, 1, 2, 20)
    ]
    assert decisions == ["restart", "restart", "fail", "restart"]  # the window slides
    assert decide(budget.policy, budget, exit_code=0, now=30, uptime_seconds=0, why="x").action == "complete"


async def test_an_old_recovered_error_does_not_block_restarts(runs_dir: Path, tmp_path: Path) -> None:
    """Only the end of the output (64 KiB) is judged: an OOM in one request long ago is not why it died."""
    once = tmp_path / "once"
    code = (
        "import os, sys; print('service ready', flush=True)\n"
        "if not os.path.exists(sys.argv[1]):\n"
        "    open(sys.argv[1], 'w'); print('request 7: CUDA out of memory, request failed, serving on')\n"
        "    print('\\n'.join('served request %d' % i for i in range(20000)), flush=True); sys.exit(1)\n"
        "import time; time.sleep(3600)"
    )
    policy = sv.RestartPolicy(policy="on-failure", backoff=QUICK)
    topo = sv.Topology(
        name="old",
        services=[
            sv.Service(
                name="w", command=[PYTHON, "-c", code, str(once)], ready=sv.LogCheck("service ready"), restart=policy
            )
        ],
    )
    async with sv.launch(topo, runs_dir=runs_dir) as group:
        await wait_for(group, lambda h: len([e for e in h if isinstance(e, sv.Ready)]) == 2)
        assert len(of(group, sv.Restarting)) == 1


async def test_rest_for_one_while_dependents_are_still_starting(runs_dir: Path, tmp_path: Path) -> None:
    """kv is ready, worker is still loading when kv crashes: both restart, and launch still returns ready."""
    policy = sv.RestartPolicy(policy="on-failure", backoff=QUICK)
    topo = sv.Topology(
        name="midstart",
        strategy="rest_for_one",
        services=[
            flaky("kv", "--crash-after", "0.2", "--once", str(tmp_path / "once"), restart=policy),
            flaky("worker", "--load", "1.0", depends_on=["kv"], restart=policy),
            flaky("front", depends_on=["worker"], restart=policy),
        ],
    )
    with anyio.fail_after(30):
        async with sv.launch(topo, runs_dir=runs_dir) as group:
            assert {r.state for s in group for r in s.replicas} == {sv.ReplicaState.READY}
            spawned = [e.replica for e in of(group, sv.Spawned)]
            assert spawned.count("kv") == 2 and spawned.count("worker") == 2 and spawned.count("front") == 1
            ready = {e.replica: e.monotonic for e in of(group, sv.Ready)}  # the last Ready of each
            assert ready["kv"] < ready["worker"] < ready["front"]


async def test_zero_replicas_do_not_block_dependents(runs_dir: Path) -> None:
    topo = sv.Topology(name="zero", services=[flaky("off", replicas=0), flaky("on", depends_on=["off"])])
    with anyio.fail_after(20):
        async with sv.launch(topo, runs_dir=runs_dir) as group:
            assert group["on"].replicas[0].state is sv.ReplicaState.READY and group["off"].pids == []
