"""A user's own preset builder, for the ``preset: module:function`` loader tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import supervisor as sv
from tests.helpers import SLEEPER


def build(
    *,
    model: str,
    replicas: int = 1,
    mode: Literal["fast", "slow"] = "fast",
    port: int | None = None,
    grace: float = 5.0,
    args: Mapping[str, object] | Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    eager: bool = False,
) -> sv.Topology:
    extra = [f"{key}={value}" for key, value in (args or {}).items()] if isinstance(args, Mapping) else list(args or [])
    return sv.Topology(
        name=f"toy-{mode}",
        services=[
            sv.Service(
                name="frontend",
                command=[*SLEEPER, model, *extra, *(["--eager"] if eager else [])],
                replicas=replicas,
                ports=["port" if port is None else {"port": port}],
                env=dict(env or {}),
                stop=sv.StopPolicy(grace_seconds=grace),
            )
        ],
    )
