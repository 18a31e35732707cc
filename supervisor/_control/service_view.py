"""What a service's handle answers from its replicas, the same for a run of ours (``_runtime.replica.ServiceHandle``)
and an attached one (``_control.attach.RemoteService``): one place that says ``port``, ``url`` and ``api`` are
replica 0's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["AddressedReplica", "ServiceAddresses"]


class AddressedReplica(Protocol):
    """What a service's addresses are made of: each replica's pids, ports and URL."""

    @property
    def pids(self) -> list[int]: ...
    @property
    def port(self) -> int | None: ...
    @property
    def ports(self) -> dict[str, int]: ...
    @property
    def url(self) -> str | None: ...
    @property
    def api(self) -> dict[str, str]: ...


class ServiceAddresses:
    """``pids``, ``port``, ``ports``, ``url``, ``urls`` and ``api`` of a service from its ``replicas``."""

    replicas: Sequence[AddressedReplica]

    @property
    def pids(self) -> list[int]:
        return [pid for r in self.replicas for pid in r.pids]

    @property
    def port(self) -> int | None:
        return self.replicas[0].port if self.replicas else None

    @property
    def ports(self) -> dict[str, int]:
        return self.replicas[0].ports if self.replicas else {}

    @property
    def url(self) -> str | None:
        return self.replicas[0].url if self.replicas else None

    @property
    def urls(self) -> list[str]:
        return [r.url for r in self.replicas if r.url]

    @property
    def api(self) -> dict[str, str]:
        """Route name -> URL on replica 0 (``health``, ``models``, ``chat_completions``...): what its service
        declares (``api:``, a preset's engine routes) and what its probes and ``metrics`` call."""
        return self.replicas[0].api if self.replicas else {}
