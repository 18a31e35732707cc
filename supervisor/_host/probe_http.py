"""The probes' own HTTP/1.1 GET over a non-blocking socket, parsed by ``h11``.

Readiness is polled fast, so an attempt must be cheap: a refused loopback connect costs microseconds here
(httpx's connection pool costs about three times the CPU per attempt). Names are resolved without blocking
the event loop (``anyio.getaddrinfo``); literal addresses skip the lookup.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:  # h11 loads with the first HTTP probe: TCP probes and plain runs do without it
    import h11

__all__ = ["Address", "connect", "get", "request", "resolve"]

Address = tuple[int, tuple[str, int]]  #: (address family, socket address)

MAX_BODY_BYTES = 1 << 20  #: a longer body is cut here (probes judge the start of it)
_USER_AGENT = "topovisor-probe"


async def resolve(host: str, port: int) -> list[Address]:
    """Addresses to try, in the resolver's order; a literal IP address costs no lookup at all."""
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
        return [(family, (host, port))]
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[Address] = []
    for family, _, _, _, sockaddr in infos:
        address = (int(family), (str(sockaddr[0]), int(sockaddr[1])))
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise OSError(errno.EADDRNOTAVAIL, f"{host!r} has no address")
    return addresses


async def connect(addresses: Sequence[Address]) -> socket.socket:
    """A TCP connection to the first address that accepts; refused everywhere raises ConnectionRefusedError."""
    error: OSError = OSError(errno.EADDRNOTAVAIL, "no address to connect to")
    for family, sockaddr in addresses:
        try:
            return await _connect_one(family, sockaddr)
        except ConnectionRefusedError as exc:
            error = exc
        except OSError as exc:
            if not isinstance(error, ConnectionRefusedError):
                error = exc
    raise error


async def _connect_one(family: int, sockaddr: tuple[str, int]) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        code = sock.connect_ex(sockaddr)
        if code == errno.EINPROGRESS:
            await anyio.wait_writable(sock)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code == errno.ECONNREFUSED:
            raise ConnectionRefusedError(code, os.strerror(code))
        if code:
            raise OSError(code, os.strerror(code))
    except BaseException:
        sock.close()
        raise
    return sock


def request(target: str, host_header: str, extra: Sequence[tuple[str, str]] = ()) -> h11.Request:
    """The GET a probe sends on every attempt (built once: h11 validates it; ValueError when invalid).
    ``extra`` headers (an ``Authorization``) come after ours; the error never quotes their values."""
    import h11

    headers = [("Host", host_header), ("User-Agent", _USER_AGENT), ("Accept", "*/*"), ("Connection", "close")]
    try:
        return h11.Request(method="GET", target=target, headers=[*headers, *extra])
    except h11.LocalProtocolError as exc:
        names = f" with headers {', '.join(name for name, _ in extra)}" if extra else ""
        reason = "an invalid header" if extra else str(exc)
        raise ValueError(f"cannot send GET {target!r} to {host_header!r}{names}: {reason}") from None


async def get(addresses: Sequence[Address], request: h11.Request) -> tuple[int, bytes]:
    """One GET on a fresh connection: (status, body). Refused connections raise at once; a response that
    is not HTTP raises ValueError. Reading stops when the message is complete, not when the socket closes."""
    import h11

    sock = await connect(addresses)
    try:
        connection = h11.Connection(h11.CLIENT)
        data = (connection.send(request) or b"") + (connection.send(h11.EndOfMessage()) or b"")
        await _send_all(sock, data)
        return await _receive_response(sock, connection)
    finally:
        sock.close()


async def _send_all(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view) :]
        except BlockingIOError:
            await anyio.wait_writable(sock)


async def _receive_response(sock: socket.socket, connection: h11.Connection) -> tuple[int, bytes]:
    import h11

    status: int | None = None
    body = bytearray()
    received = 0
    while True:
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError as exc:
            if status is not None:
                return status, bytes(body)  # a body cut short: judge what came
            if not received:
                raise ValueError("connection closed before the response headers") from None
            raise ValueError(f"not an HTTP response: {exc}") from None
        if event is h11.NEED_DATA:
            data = await _receive(sock)
            received += len(data)
            connection.receive_data(data)
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) >= MAX_BODY_BYTES:
                return _status(status), bytes(body[:MAX_BODY_BYTES])
        elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            return _status(status), bytes(body)


def _status(status: int | None) -> int:
    if status is None:
        raise ValueError("connection closed before the response headers")
    return status


async def _receive(sock: socket.socket) -> bytes:
    while True:
        try:
            return sock.recv(65536)
        except BlockingIOError:
            await anyio.wait_readable(sock)
