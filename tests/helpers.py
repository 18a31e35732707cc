"""Helpers shared by the tests: the interpreter, the test programs, waiting with a deadline."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
import psutil
import pytest

import supervisor as sv
from supervisor import Event, RunningTopology

PROGRAMS = Path(__file__).parent / "programs"
PYTHON = sys.executable
ROOT = Path(__file__).parent.parent


T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, what: str = "", interval: float = 0.01) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {what or predicate}")
        time.sleep(interval)


def free_port() -> int:
    """A loopback port the kernel had free a moment ago (for a test's own server, not for a service)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def plan_of(*services: sv.Service, name: str = "t", **options: Any) -> sv.Plan:
    """The plan of a topology of ``services``; ``options`` go to ``make_plan`` (runs_dir, gpus, which...)."""
    return sv.make_plan(sv.Topology(name=name, services=list(services)), **options)


def plan_problems(*services: sv.Service, **options: Any) -> str:
    """The ``ConfigError`` that planning ``services`` raises, as text (the test fails if it raises none)."""
    with pytest.raises(sv.ConfigError) as caught:
        plan_of(*services, **options)
    return str(caught.value)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


SLEEPER = [PYTHON, "-c", "import time; print('service ready', flush=True); time.sleep(60)"]


async def wait_for(group: RunningTopology, predicate: Callable[[list[Event]], bool], timeout: float = 8) -> None:
    """Wait until ``predicate(group.event_history)`` holds, woken by each event; fail at the deadline."""
    with anyio.fail_after(timeout):
        if predicate(group.event_history):
            return
        async for _ in group.events():
            if predicate(group.event_history):
                return


#: runs ``argv[1:]`` as the leader of a new session whose controlling terminal is stdin, as a shell does
_AS_TERMINAL = (
    "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); os.execv(sys.executable, sys.argv[1:])"
)


def ctrl_c_at_a_terminal(
    argv: list[str], ready: Callable[[], bool], *, cwd: Path, ready_timeout: float = 30
) -> tuple[int, str]:
    """Run ``argv`` with a pseudo-terminal as its controlling terminal; once ``ready()`` holds, type Ctrl-C
    (SIGINT to the terminal's foreground process group). Returns the exit code and stderr."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [PYTHON, "-c", _AS_TERMINAL, *argv], stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True, cwd=cwd,
    )  # fmt: skip
    os.close(slave)
    try:
        wait_until(lambda: ready() or process.poll() is not None, timeout=ready_timeout)
        assert process.poll() is None, process.communicate()
        os.write(master, b"\x03")
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        os.close(master)
    return process.returncode, stderr.decode(errors="replace")


def supervisor_cli(
    *args: str, timeout: float = 120, cwd: Path = ROOT, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m supervisor ARGS`` as a user runs it (from the checkout by default), its output captured."""
    return subprocess.run(
        [PYTHON, "-m", "supervisor", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
        env=None if env is None else dict(env),
    )  # fmt: skip


def run_detached(topology: Path, runs_dir: Path) -> tuple[str, Path]:
    """``supervisor run --detach`` of ``topology``: the run's id and directory, once it is ready."""
    started = supervisor_cli("run", "--detach", str(topology), "--runs-dir", str(runs_dir))
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    return run_id, runs_dir / run_id


@contextlib.contextmanager
def running_pd_proxy(prefill: str, decode: str) -> Iterator[str]:
    """``python -m topologies.pd_proxy`` on a free loopback port in front of ``prefill`` and ``decode``: its
    URL once it answers ``/health``; terminated (and waited for) afterwards."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "topologies.pd_proxy", "--port", str(port), "--prefill", prefill]
    process = subprocess.Popen([*command, "--decode", decode], stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/health", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None, "the proxy never listened"
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def send_json(handler: BaseHTTPRequestHandler, status: int, answer: object) -> None:
    """A test upstream's JSON answer, with its length (the proxies under test read exactly that much)."""
    data = json.dumps(answer).encode()
    handler.send_response(status)
    handler.send_header("content-type", "application/json")
    handler.send_header("content-length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
