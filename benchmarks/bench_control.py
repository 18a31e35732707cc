"""10. Control socket: the round trip of ``status`` on a live run, against a bare unix-socket echo."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream
from bench_dag import dag_argv
from harness import LAUNCH_LIMIT_SECONDS, PROGRAMS, Result, Settings, Stats, info, report, rounds

import supervisor as sv

# 10. control socket: status round trip

REQUESTS_PER_ROUND = 200
FRESH_PER_ROUND = 50
STATUS = json.dumps({"v": 1, "id": 1, "op": "status"})
WORKERS = 8  #: replicas in the status: a frontend and 8 workers, a realistic reply (about 4 KB)


async def echo_lines(stream: anyio.abc.SocketStream) -> None:
    """The baseline server: the same anyio stack, line framing and event loop as the run's, no protocol."""
    received = BufferedByteReceiveStream(stream)
    async with stream:
        try:
            while True:
                await stream.send(await received.receive_until(b"\n", 1 << 16) + b"\n")
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError):
            pass


async def client(path: Path, mode: str, count: int) -> list[float]:
    """Round trips in ms, timed by a client in another process (as ``supervisor status`` or ``attach``)."""
    argv = [sys.executable, "-S", str(PROGRAMS / "control_client.py"), str(path), mode, str(count), STATUS]
    done = await anyio.run_process(argv, check=True)
    times: list[float] = json.loads(done.stdout)
    return times


async def bench_control(settings: Settings, results: list[Result]) -> None:
    info(f"status of a run of {WORKERS + 1} replicas, from a client process; {REQUESTS_PER_ROUND} per round")
    services = [
        sv.Service(name="frontend", command=dag_argv(0.0), ports=["port"], ready=sv.LogCheck("^ready$")),
        sv.Service(
            name="worker", command=dag_argv(0.0), replicas=WORKERS, ports=["port"], ready=sv.LogCheck("^ready$")
        ),
    ]
    status: list[float] = []
    echo: list[float] = []
    fresh: list[float] = []
    reply_bytes = 0
    with anyio.fail_after(LAUNCH_LIMIT_SECONDS):
        async with sv.launch(sv.Topology(name="bench-control", services=services), runs_dir=settings.runs_dir) as group:
            while group.control_socket is None or not group.control_socket.exists():
                await anyio.sleep(0.005)
            path = group.control_socket
            echo_path = settings.work / "echo.sock"
            async with await anyio.create_unix_listener(echo_path) as listener, anyio.create_task_group() as tg:
                tg.start_soon(listener.serve, echo_lines)
                await client(path, "persistent", 20)  # warm: lazy imports of the status code
                for _ in rounds(settings.count(7, 3), settings.budget(20, 8)):
                    status.append(statistics.median(await client(path, "persistent", REQUESTS_PER_ROUND)))
                    echo.append(statistics.median(await client(echo_path, "persistent", REQUESTS_PER_ROUND)))
                    fresh.append(statistics.median(await client(path, "fresh", FRESH_PER_ROUND)))
                tg.cancel_scope.cancel()
            from supervisor._control.protocol import request_blocking

            reply_bytes = len(json.dumps(await anyio.to_thread.run_sync(request_blocking, path, "status")))
    ratio = statistics.median(status) / statistics.median(echo)
    note = f"reply {reply_bytes / 1024:.1f} KB; ratio to the echo {ratio:.1f}"
    report(
        Result(
            key="control_status_round_trip",
            title="10. control socket: status round trip",
            unit="ms",
            value=Stats(status),
            baseline=Stats(echo),
            baseline_label="bare unix-socket echo of the same line",
            goal_kind="max",
            goal=2.0,
            note=note,
        ),
        results,
    )
    report(
        Result(
            key="control_status_fresh_connection",
            title="10. control socket: status on a new connection (attach, the CLI)",
            unit="ms",
            value=Stats(fresh),
            baseline=Stats(echo),
            baseline_label="bare unix-socket echo of the same line",
            goal_kind="info",
            goal=None,
        ),
        results,
    )
