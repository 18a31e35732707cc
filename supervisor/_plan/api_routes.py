"""A replica's API routes as URLs: the ones its service declares (``api:``, paths on the replica's ``url``),
then those its probes and ``metrics`` call, so ``group[svc].api`` says where to send a request without the
caller knowing the engine's paths."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from .._spec.model import AllOf, AnyOf, Check, HttpCheck, Probe

__all__ = ["api_routes"]


def api_routes(
    declared: Mapping[str, str],
    url: str | None,
    fill: Callable[[str, str], str],
    *,
    ready: Probe | None,
    alive: Probe | None,
    metrics: str | None,
) -> dict[str, str]:
    """NAME -> URL: ``declared`` on ``url`` (templates filled), then the probes' HTTP URLs as ``ready`` and
    ``alive`` (a second check of one probe ``ready.1``...) and ``metrics``, each unless its URL or name is
    already listed (vLLM's readiness on ``/v1/models`` is its ``models`` route, not a second one)."""
    routes = {name: url + fill(path, f"api.{name}") for name, path in declared.items()} if url else {}
    listed = set(routes.values())
    found = [("ready", list(_http_urls(ready))), ("alive", list(_http_urls(alive))), ("metrics", [metrics or ""])]
    for role, addresses in found:
        for position, address in enumerate(a for a in addresses if a):
            name = role if position == 0 else f"{role}.{position}"
            if address not in listed and name not in routes:
                routes[name] = address
                listed.add(address)
    return routes


def _http_urls(probe: Probe | None) -> Iterator[str]:
    if probe is not None:
        yield from _check_urls(probe.check)


def _check_urls(check: Check) -> Iterator[str]:
    if isinstance(check, HttpCheck):
        yield check.url
    elif isinstance(check, (AllOf, AnyOf)):
        for inner in check.checks:
            yield from _check_urls(inner)
