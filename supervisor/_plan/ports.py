"""Loopback port allocation. (GPUs: ``_host.gpu_inventory``, ``_plan.gpu_assign``, ``_runtime.gpu_checks``.)"""

from __future__ import annotations

import random

__all__ = ["PortAllocator"]


class PortAllocator:
    """Hands out free loopback ports, never the same one twice in one run.

    The kernel picks the port (bind to port 0); a port is free when we look, so a server that is slow to
    bind can still lose it to another program. Fixed ports are reserved so they are never handed out.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._taken: set[int] = set()

    def reserve(self, port: int) -> None:
        self._taken.add(port)

    def taken(self, port: int) -> bool:
        """Whether ``port`` was handed out or reserved already."""
        return port in self._taken

    def allocate(self) -> int:
        import socket  # a plan without ports never opens one: the CLI's path to its first spawn skips it

        for _ in range(1000):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((self.host, 0))
                port: int = sock.getsockname()[1]
            if port not in self._taken:
                self._taken.add(port)
                return port
        raise RuntimeError("no free loopback port found after 1000 tries")

    def allocate_below(self, limit: int) -> int:
        """A free port in ``[limit // 2, limit)``, for programs that cannot take an ephemeral one."""
        return self.allocate_in(max(1024, limit // 2), limit)

    def allocate_in(self, low: int, high: int) -> int:
        """A free port in ``[low, high)``, scanned from a random start (two runs planning at once rarely
        pick the same one), never one already handed out or reserved, nor one another program has bound."""
        import socket

        span = high - low
        if span <= 0:
            raise RuntimeError(f"no ports in {low}..{high - 1}")
        start = random.randrange(span)
        for step in range(min(span, 5000)):
            port = low + (start + step) % span
            if port in self._taken:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((self.host, port))
                except OSError:
                    continue
            self._taken.add(port)
            return port
        raise RuntimeError(f"no free loopback port found in {low}..{high - 1}")
