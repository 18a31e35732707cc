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
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import anyio
import httpx
import psutil

from supervisor import Event, RunningTopology

PROGRAMS = Path(__file__).parent / "programs"
PYTHON = sys.executable
ROOT = Path(__file__).parent.parent


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.01) -> None:
    """Poll ``predicate`` until true; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)


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


def supervisor_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m supervisor ARGS`` from the checkout, its output captured."""
    return subprocess.run(
        [PYTHON, "-m", "supervisor", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


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
