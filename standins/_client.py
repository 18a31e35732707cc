"""A small HTTP/1.1 client for calls between stand-ins (kv lookups, prefill, decode)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from urllib.parse import urlsplit

from ._http import HttpError, PeerClosed, UpstreamError, iter_chunked, parse_headers, read_body, read_head


class Upstream:
    """A response being read from another stand-in; the caller must ``close()`` it."""

    __slots__ = ("_reader", "_writer", "headers", "status")

    def __init__(
        self, status: int, headers: dict[str, str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.status = status
        self.headers = headers
        self._reader = reader
        self._writer = writer

    async def read(self, timeout: float) -> bytes:
        try:
            return await asyncio.wait_for(read_body(self._reader, self.headers, request=False), timeout)
        except (OSError, EOFError, ValueError, asyncio.TimeoutError, HttpError) as exc:
            raise UpstreamError(f"reading the response failed: {exc!r}") from None

    async def pieces(self, timeout: float) -> AsyncGenerator[bytes, None]:
        """The body as it arrives (one item per chunk when chunked); ``timeout`` applies per piece."""
        chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        source = iter_chunked(self._reader, None) if chunked else self._raw_pieces()
        try:
            while True:
                try:
                    piece = await asyncio.wait_for(source.__anext__(), timeout)
                except StopAsyncIteration:
                    return
                except (OSError, EOFError, ValueError, asyncio.TimeoutError, HttpError) as exc:
                    raise UpstreamError(f"upstream stream failed: {exc!r}") from None
                yield piece
        finally:
            await source.aclose()

    async def _raw_pieces(self) -> AsyncGenerator[bytes, None]:
        length_text = self.headers.get("content-length")
        remaining = int(length_text) if length_text and length_text.isdigit() else None
        while remaining is None or remaining > 0:
            piece = await self._reader.read(65536 if remaining is None else min(remaining, 65536))
            if not piece:
                return
            if remaining is not None:
                remaining -= len(piece)
            yield piece

    def close(self) -> None:
        self._writer.close()


async def open_upstream(url: str, method: str = "GET", body: bytes | None = None, timeout: float = 2.0) -> Upstream:
    """Sends one request (``Connection: close``) and reads the response head within ``timeout``."""
    split = urlsplit(url)
    host = split.hostname or "127.0.0.1"
    port = split.port or 80
    target = (split.path or "/") + (f"?{split.query}" if split.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"host: {split.netloc}", "connection: close", "accept: */*"]
    if body is not None:
        lines += ["content-type: application/json", f"content-length: {len(body)}"]
    writer: asyncio.StreamWriter | None = None
    try:
        reader, opened = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        writer = opened
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
        await writer.drain()
        head = await asyncio.wait_for(read_head(reader), timeout)
        if head is None:
            raise PeerClosed("empty response")
        status = int(head[0].split(" ", 2)[1])
        return Upstream(status, parse_headers(head[1:]), reader, opened)
    except (OSError, EOFError, ValueError, IndexError, asyncio.TimeoutError, HttpError) as exc:
        if writer is not None:
            writer.close()
        raise UpstreamError(f"{method} {url}: {exc!r}") from None


async def fetch(url: str, method: str = "GET", body: bytes | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    upstream = await open_upstream(url, method, body, timeout)
    try:
        return upstream.status, await upstream.read(timeout)
    finally:
        upstream.close()
