"""``<run_dir>/endpoints.json`` (the ``{endpoints}`` template): every service's replicas and URLs.

Written before the first spawn and again whenever a scale changes a service's replicas, atomically (a
reader sees the old file or the new one). A program that must follow a pool as it grows (a router) reads
it at start and again on the signal its ``on_change: {signal: SIGHUP}`` asks for.
"""

from __future__ import annotations

from typing import Any

from .._plan.plan import Plan
from .._records.paths import warn_record_failure, write_json

__all__ = ["ENDPOINTS_FILE", "endpoints_of", "write_endpoints"]

ENDPOINTS_FILE = "endpoints.json"


def endpoints_of(plan: Plan) -> dict[str, Any]:
    """``{"run_id": ..., "services": {svc: {"urls": [...], "replicas": [{name, url, host, ports}]}}}``."""
    return {
        "run_id": plan.run_id,
        "services": {
            service.name: {
                "urls": [r.url for r in service.replicas if r.url],
                "replicas": [
                    {"name": r.name, "url": r.url, "host": r.host, "ports": dict(r.ports)} for r in service.replicas
                ],
            }
            for service in plan.services
        },
    }


def write_endpoints(plan: Plan) -> None:
    """Never raises: a full disk must not stop a run (the first failure is a warning)."""
    try:
        write_json(plan.run_dir / ENDPOINTS_FILE, endpoints_of(plan), indent=2)
    except OSError as exc:
        warn_record_failure(plan.run_dir, ENDPOINTS_FILE, exc)
