"""2. Readiness notice latency: log and http probes against a pipe read and a raw 1 ms poll."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
from harness import (
    HOST,
    LAUNCH_LIMIT_SECONDS,
    PROGRAMS,
    PYTHON,
    Result,
    Settings,
    Stats,
    hand_processes,
    info,
    read_stamp,
    read_until,
    report,
    rounds,
    spread,
)

import supervisor as sv

# 2. readiness notice latency


@dataclass
class Variant:
    key: str
    title: str
    mode: str  # 503 | late | log
    announce: bool
    goal: float | None  # ms
    health_seconds: float = 0.0  # how long each GET /health takes (a busy server)


VARIANTS = [
    Variant("ready_log", "2. ready latency, log probe", "log", True, 2.0),
    Variant("ready_http_503_announced", "2. ready latency, http 503->200, line printed", "503", True, 10.0),
    Variant("ready_http_503_silent", "2. ready latency, http 503->200, silent", "503", False, 10.0),
    Variant("ready_http_late_announced", "2. ready latency, http bind-late, line printed", "late", True, 10.0),
    Variant("ready_http_late_silent", "2. ready latency, http bind-late, silent", "late", False, 10.0),
    # diagnostic: output that arrives while a probe attempt is in flight should still wake the probe
    Variant("ready_http_503_slow", "2. ready latency, 503->200, printed, 30ms /health", "503", True, None, 0.03),
]


def server_argv(mode: str, delay: float, stamp: Path, port: str, *, announce: bool, health: float = 0.0) -> list[str]:
    argv = [PYTHON, "-S", str(PROGRAMS / "ready_server.py"), "--mode", mode, "--delay", f"{delay:.4f}"]
    argv += ["--stamp", str(stamp), "--port", port, "--health-seconds", str(health)]
    return argv + (["--announce"] if announce else [])


async def latency_supervised(settings: Settings, variant: Variant, delay: float, stamp: Path) -> float:
    http = sv.HttpCheck("http://127.0.0.1:{port}/health")
    check: sv.Check = sv.LogCheck("^READY$") if variant.mode == "log" else http
    service = sv.Service(
        name="server",
        command=server_argv(
            variant.mode, delay, stamp, "{port}", announce=variant.announce, health=variant.health_seconds
        ),
        ports=["port"],
        ready=sv.Probe(check, timeout_seconds=60),
    )
    with anyio.fail_after(LAUNCH_LIMIT_SECONDS):
        async with sv.launch(sv.Topology(name="bench-ready", services=[service]), runs_dir=settings.runs_dir):
            returned = time.monotonic()
            return (returned - await read_stamp(stamp)) * 1000


async def http_ok(port: int) -> bool:
    """One raw GET /health; true on a 200."""
    try:
        async with await anyio.connect_tcp(HOST, port) as stream:
            await stream.send(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            head = b""
            while b"\r\n" not in head:
                head += await stream.receive(256)
            return head.split(b" ", 2)[1] == b"200"
    except (OSError, anyio.EndOfStream, IndexError):
        return False


async def latency_hand(mode: str, delay: float, stamp: Path) -> float:
    """The floor: read the pipe directly (log), or a raw GET every millisecond (http)."""
    port = free_port()
    with hand_processes() as hand, anyio.fail_after(LAUNCH_LIMIT_SECONDS):
        proc = hand.spawn(server_argv(mode, delay, stamp, str(port), announce=mode == "log"))
        assert proc.stdout is not None
        if mode == "log":
            seen = await read_until(proc.stdout.fileno(), b"READY\n", bytearray())
        else:
            while not await http_ok(port):
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with {proc.returncode}")
                await anyio.sleep(0.001)
            seen = time.monotonic()
        return (seen - await read_stamp(stamp)) * 1000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


async def bench_readiness(settings: Settings, results: list[Result]) -> None:
    count = settings.count(7, 3)
    info("servers become ready 0.3-0.5 s after start (varied per round); latency = launch return - ready stamp")
    hand: dict[str, list[float]] = {"log": [], "503": [], "late": []}
    supervised: dict[str, list[float]] = {v.key: [] for v in VARIANTS}
    stamps = settings.work / "stamps"
    stamps.mkdir(exist_ok=True)
    serial = 0

    def next_stamp() -> Path:
        nonlocal serial
        serial += 1
        return stamps / f"ready-{serial}"

    for index in rounds(count, settings.budget(90, 35)):
        delay = spread(index, 0.3, 0.5)
        for mode in hand:
            hand[mode].append(await latency_hand(mode, delay, next_stamp()))
        for variant in VARIANTS:
            supervised[variant.key].append(await latency_supervised(settings, variant, delay, next_stamp()))
    for variant in VARIANTS:
        floor = "pipe read" if variant.mode == "log" else "raw 1ms poll"
        if variant.health_seconds:
            info(
                f"(next line: each GET /health takes {variant.health_seconds * 1000:.0f} ms, so about that is "
                "expected; a max near the 100 ms poll period means a ready line was missed)"
            )
        report(
            Result(
                key=variant.key,
                title=variant.title,
                unit="ms",
                value=Stats(supervised[variant.key]),
                baseline=None if variant.health_seconds else Stats(hand[variant.mode]),
                baseline_label=f"hand {floor}",
                goal_kind="max" if variant.goal is not None else "info",
                goal=variant.goal,
            ),
            results,
        )
