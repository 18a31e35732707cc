"""Round trips on a unix socket, timed from another process: ``control_client.py PATH MODE COUNT LINE``.

MODE ``persistent``: COUNT request lines on one connection, each timed until its reply line is read.
MODE ``fresh``: a new connection per request (connect, send, read the reply, close), timed whole.
Prints one JSON list of the round trips in milliseconds. Standard library only; a path over the 108-byte
socket limit is not handled here (the benchmark's paths are short).
"""

from __future__ import annotations

import json
import socket
import sys
import time


def read_line(client: socket.socket, buffer: bytearray) -> bytes:
    while True:
        end = buffer.find(b"\n")
        if end >= 0:
            line = bytes(buffer[: end + 1])
            del buffer[: end + 1]
            return line
        chunk = client.recv(1 << 20)
        if not chunk:
            raise SystemExit("the server closed the connection")
        buffer.extend(chunk)


def main() -> None:
    path, mode, count, line = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode() + b"\n"
    times: list[float] = []
    if mode == "persistent":
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(30)
            client.connect(path)
            buffer = bytearray()
            for _ in range(count):
                began = time.perf_counter()
                client.sendall(line)
                read_line(client, buffer)
                times.append((time.perf_counter() - began) * 1000)
    else:
        for _ in range(count):
            began = time.perf_counter()
            with socket.socket(socket.AF_UNIX) as client:
                client.settimeout(30)
                client.connect(path)
                client.sendall(line)
                read_line(client, bytearray())
            times.append((time.perf_counter() - began) * 1000)
    print(json.dumps(times))


if __name__ == "__main__":
    main()
