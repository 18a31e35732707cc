"""A task of a Slurm step for the tests: says where it runs, serves HTTP, records the signals it gets.

    slurm_task.py RECORD_DIR NAME [--port P] [--rank R] [--term-delay S] [--ignore-term] [--fail-once]

Writes ``RECORD_DIR/NAME.<node>.json`` at start (its node, step, ranks and whether it carries the run's
mark) and appends ``TERM <wall time>`` to ``RECORD_DIR/NAME.<node>.signals`` on SIGTERM, then exits 0
after ``--term-delay`` seconds (or ignores it). ``--fail-once`` exits 3 at once the first time (a
marker file remembers), to test restarts. Rank 0 serves on port P, other ranks on a free port.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path


def main() -> int:
    record, name, *options = sys.argv[1:]
    record_dir = Path(record)
    node = os.environ.get("SLURMD_NODENAME", "local")
    port = int(options[options.index("--port") + 1]) if "--port" in options else None
    rank = int(options[options.index("--rank") + 1]) if "--rank" in options else 0
    if port is not None and rank > 0:
        # emulated nodes share this host, and only rank 0 is probed: another rank takes any free port (port +
        # rank was reserved by no one; a fresh-clone CI run found it taken, and the rank died at its bind)
        port = 0
    delay = float(options[options.index("--term-delay") + 1]) if "--term-delay" in options else 0.0
    base = record_dir / f"{name}.{node}"
    if "--fail-once" in options:
        marker = record_dir / f"{name}.failed-once"
        if not marker.exists():
            marker.write_text("x")
            print("failing on purpose", flush=True)
            return 3
    info = {
        "node": node,
        "job": os.environ.get("SLURM_JOB_ID"),
        "step": os.environ.get("SLURM_STEP_ID"),
        "nodeid": os.environ.get("SLURM_NODEID"),
        "procid": os.environ.get("SLURM_PROCID"),
        "argv": sys.argv[1:],
        "pid": os.getpid(),
        "marked": "TOPOVISOR_RUN_ID" in os.environ,
    }

    def on_term(signum: int, _frame: object) -> None:
        with open(base.parent / (base.name + ".signals"), "a") as file:
            file.write(f"TERM {time.time()!r}\n")
        if "--ignore-term" in options:
            return
        time.sleep(delay)
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    # written once the handler is in place: a task that says it started records its SIGTERM (only rank 0 of
    # a multi-node replica is probed, so the stop may reach another rank as soon as it started)
    (base.parent / (base.name + ".json")).write_text(json.dumps(info))
    if port is not None:
        server = socket.create_server(("127.0.0.1", port))
        # the HTTP thread never takes SIGTERM: the kernel then hands it to the main thread, which runs the handler
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        threading.Thread(target=serve, args=(server,), daemon=True).start()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    print(f"task ready on {node}", flush=True)
    # short sleeps: CPython runs the handler only in the main thread, once a blocking call of it wakes; a
    # SIGTERM the kernel hands to the server thread would otherwise wait out a long sleep (then SIGKILL)
    while True:
        time.sleep(0.2)


def serve(server: socket.socket) -> None:
    while True:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")


if __name__ == "__main__":
    sys.exit(main())
