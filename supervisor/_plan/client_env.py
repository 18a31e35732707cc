"""The addresses of a run as environment variables, for a client that is not a service: ``supervisor run
FILE -- CMD``, ``group.environment()``, a benchmark harness.

Pure: computed from the plan (ports are fixed at plan time), so the CLI checks it before anything starts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from .._errors import ConfigError

__all__ = ["RUN_DIR_ENV", "AddressedPlan", "client_environment", "env_prefix"]


class _Addressed(Protocol):
    @property
    def url(self) -> str | None: ...
    @property
    def port(self) -> int | None: ...


class _ServiceAddresses(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def replicas(self) -> Sequence[_Addressed]: ...


class AddressedPlan(Protocol):
    """What the environment is made of: a ``Plan`` (typed here: ``Plan.client_env`` calls this module)."""

    @property
    def run_dir(self) -> Path: ...
    @property
    def source(self) -> str | None: ...
    @property
    def services(self) -> Sequence[_ServiceAddresses]: ...


RUN_DIR_ENV = "TOPOVISOR_RUN_DIR"  #: the run directory (logs/, events.jsonl, manifest.json)
_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")


def env_prefix(service: str) -> str:
    """``TOPOVISOR_<SERVICE>``: upper-cased, every non-alphanumeric as ``_`` (``kv-store`` -> ``KV_STORE``)."""
    return f"TOPOVISOR_{_NOT_ALNUM.sub('_', service).upper()}"


def client_environment(plan: AddressedPlan) -> dict[str, str]:
    """``TOPOVISOR_<SERVICE>_URL`` (replica 0), ``_URLS`` (every replica, comma-separated) and ``_PORT``
    (replica 0's first port) for each service with a port, and ``TOPOVISOR_RUN_DIR``.

    A service without ports (or with no replicas) gets no variable. Two services with ports whose names map
    to the same variables (``a-b`` and ``a_b``, ``kv`` and ``KV``) are a ``ConfigError``: a client could not
    tell them apart.
    """
    env = {RUN_DIR_ENV: str(plan.run_dir)}
    owner: dict[str, str] = {}
    for service in plan.services:
        replicas = [r for r in service.replicas if r.url]
        if not replicas:
            continue
        prefix = env_prefix(service.name)
        if prefix in owner:
            raise ConfigError(
                f"services '{owner[prefix]}' and '{service.name}' would both be {prefix}_URL in a client's "
                "environment: rename one of them",
                source=plan.source,
            )
        owner[prefix] = service.name
        first = replicas[0]
        env[f"{prefix}_URL"] = str(first.url)
        env[f"{prefix}_URLS"] = ",".join(str(r.url) for r in replicas)
        env[f"{prefix}_PORT"] = str(first.port)
    return env
