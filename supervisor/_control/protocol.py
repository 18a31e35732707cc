"""The control socket's wire format and address, shared by the run (server) and its clients.

Versioned JSON lines over a unix stream socket in the run directory (``<run_dir>/control.sock``, mode
0600, the directory 0700): one request per line, ``{"v": 1, "id": ..., "op": ..., ...}``, answered by one
line ``{"v": 1, "id": ..., "ok": true, ...}`` or ``{"v": 1, "id": ..., "ok": false, "error": "..."}``;
``events`` answers with a stream of lines instead. docs/control.md is the reference. A run answers a
request of a version it does not speak with an error that lists the ones it does (``versions``); a client
meets a reply of a version it does not speak (a newer run's) with ``IncompatibleVersion``, which says
which ``supervisor`` talks to that run (``check_reply``).

A unix socket address is limited to 108 bytes, and run directories can be deeper than that. A long one
is reached through ``/proc/self/fd/<fd of the run dir>/control.sock``: the socket still lives in the run
directory, only the name used to bind or connect is short. Standard library only: the CLI's client
commands import this and nothing of the runtime.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeGuard

from .._errors import IncompatibleVersion

__all__ = [
    "MAX_CLIENTS",
    "MAX_LINE_BYTES",
    "MAX_REPLY_BYTES",
    "OLDEST_PROTOCOL_VERSION",
    "PROTOCOL_VERSION",
    "SOCKET_NAME",
    "ProtocolError",
    "UnsupportedVersion",
    "check_reply",
    "connect_blocking",
    "decode_line",
    "encode",
    "error_reply",
    "is_request_id",
    "read_line",
    "remove_stale_sockets",
    "request_blocking",
    "short_address",
    "socket_path",
]

PROTOCOL_VERSION = 1  #: what this topovisor speaks, and sends
OLDEST_PROTOCOL_VERSION = 1  #: the oldest request version a run still answers
SOCKET_NAME = "control.sock"
MAX_LINE_BYTES = 64 * 1024  #: a longer request line is refused and its connection closed
#: connections at once, and one more for a single request (the CLI's; see ``ControlServer``); a client past
#: those is answered with an error and closed
MAX_CLIENTS = 64
_MAX_ADDRESS_BYTES = 107  #: sun_path holds 108 bytes, the last one a NUL


class ProtocolError(ValueError):
    """A request the server cannot take: not JSON, not an object, wrong version, op or field types."""


class UnsupportedVersion(ProtocolError):
    """A request of a protocol version this run does not speak; its refusal lists the ones it does."""


def _versions() -> list[int]:
    return list(range(OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION + 1))


def _spoken(versions: list[int]) -> str:
    return f"version {versions[0]}" if len(versions) == 1 else f"versions {versions[0]}-{versions[-1]}"


def check_reply(reply: dict[str, Any], run_id: str) -> dict[str, Any]:
    """``reply`` when this topovisor understands it; ``IncompatibleVersion`` naming the run and both
    versions when it is of a newer protocol, or refuses our request for its version (a newer run's)."""
    version, listed = reply.get("v"), reply.get("versions")
    theirs: list[int] = []
    if type(version) is int and version > PROTOCOL_VERSION:
        theirs = [version]
    elif reply.get("ok") is False and isinstance(listed, list) and listed and all(type(v) is int for v in listed):
        theirs = [] if set(listed) & set(_versions()) else sorted(listed)
    if theirs:
        raise IncompatibleVersion(
            f"run {run_id} speaks control protocol {_spoken(theirs)}; this topovisor speaks "
            f"{_spoken(_versions())}: use that version's `supervisor` to talk to it"
        )
    return reply


def socket_path(run_dir: str | os.PathLike[str]) -> Path:
    """Where a run's control socket lives."""
    return Path(run_dir) / SOCKET_NAME


def remove_stale_sockets(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Remove the control socket and any staging socket (``.control.sock.<pid>``: the server binds there
    and renames it into place once it listens; a kill in between leaves it) of a run whose supervisor is
    dead (the caller checked); only sockets, never a file that happens to have the name. Returns them."""
    directory = Path(run_dir)
    candidates = [socket_path(directory)]
    with contextlib.suppress(OSError):
        candidates += sorted(directory.glob(f".{SOCKET_NAME}.*"))
    removed = []
    for path in candidates:
        with contextlib.suppress(OSError):  # unlink takes any path length; no socket address involved
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)
                removed.append(path)
    return removed


@contextlib.contextmanager
def short_address(path: str | os.PathLike[str]) -> Iterator[str]:
    """A name for ``path`` that fits in a socket address: the path itself when short enough, else the
    same file reached through an open descriptor of its directory (Linux ``/proc/self/fd``), valid while
    the context is open."""
    text = os.fspath(path)
    if len(os.fsencode(text)) <= _MAX_ADDRESS_BYTES:
        yield text
        return
    directory, name = os.path.split(text)
    fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        short = f"/proc/self/fd/{fd}/{name}"
        if len(os.fsencode(short)) > _MAX_ADDRESS_BYTES or not os.path.isdir(f"/proc/self/fd/{fd}"):
            raise OSError(f"socket path too long ({len(text)} bytes) and no /proc to shorten it: {text}")
        yield short
    finally:
        os.close(fd)


def encode(message: Mapping[str, Any]) -> bytes:
    """One protocol line."""
    return (json.dumps(message, separators=(",", ":"), default=str) + "\n").encode()


def decode_line(line: bytes) -> dict[str, Any]:
    """A request or reply line as a dict; ``ProtocolError`` for anything else (nesting deeper than the
    parser's recursion limit too: ``[[[[...`` is a malformed request, not a failure of the server)."""
    try:
        value = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError("not JSON we take: nested too deeply") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"expected a JSON object, got {type(value).__name__}")
    return value


def is_request_id(value: object) -> TypeGuard[str | int | float | None]:
    """A string, a finite number or null. Python's JSON reads ``NaN`` and ``1e999`` as floats, but echoed
    back they would be ``NaN``/``Infinity``, which no strict JSON parser takes; a bool is not a number."""
    if value is None or isinstance(value, str):
        return True
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def error_reply(request_id: object, message: str, *, versions: bool = False) -> dict[str, Any]:
    """An ``ok: false`` reply; it carries ``request_id`` back only when that is a valid id (else null),
    and with ``versions`` the protocol versions this run speaks (the refusal of a version it does not)."""
    echoed = request_id if is_request_id(request_id) else None
    reply = {"v": PROTOCOL_VERSION, "id": echoed, "ok": False, "error": message}
    return {**reply, "versions": _versions()} if versions else reply


def connect_blocking(path: str | os.PathLike[str], *, timeout_seconds: float | None = 10.0) -> socket.socket:
    """A connected blocking client socket (the CLI's); ``OSError`` when no run listens there."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(timeout_seconds)
    try:
        with short_address(path) as address:
            client.connect(address)
    except BaseException:
        client.close()
        raise
    return client


MAX_REPLY_BYTES = 64 * 1024 * 1024  #: a status of thousands of replicas fits; more is a broken server


def read_line(client: socket.socket, buffer: bytearray, max_bytes: int = MAX_REPLY_BYTES) -> bytes | None:
    """The next line from a blocking socket (``buffer`` keeps what follows it); None at the end."""
    while True:
        end = buffer.find(b"\n")
        if end >= 0:
            line = bytes(buffer[: end + 1])
            del buffer[: end + 1]
            return line
        if len(buffer) > max_bytes:
            raise ProtocolError(f"reply line longer than {max_bytes} bytes")
        chunk = client.recv(65536)
        if not chunk:
            return None
        buffer.extend(chunk)


def request_blocking(
    path: str | os.PathLike[str], op: str, *, timeout_seconds: float | None = None, **fields: Any
) -> dict[str, Any]:
    """One request on a connection of its own, and its reply (``ok`` true or false); ``OSError`` when
    no run listens at ``path``, ``ProtocolError`` when the connection ends without a reply."""
    with connect_blocking(path, timeout_seconds=timeout_seconds) as client:
        client.sendall(encode({"v": PROTOCOL_VERSION, "id": 1, "op": op, **fields}))
        line = read_line(client, bytearray())
    if line is None:
        raise ProtocolError(f"the run closed the connection without answering {op!r}")
    return decode_line(line)
