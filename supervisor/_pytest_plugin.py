"""The pytest plugin (entry point ``pytest11``: ``topovisor``): a ``launch_topology`` fixture.

Installed with the package, it is active in every pytest session of that environment, so importing it
costs nothing: the library (anyio, httpx, psutil) loads only when a test asks for the fixture.

Safe under pytest-xdist: every launch has its own run id, run dir (under the test's temporary
directory) and free ports picked by the kernel, and teardown finds processes by that run's mark and its
process groups, never by name, so workers never touch each other's processes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import pytest

if TYPE_CHECKING:
    from ._plan.plan import Plan
    from ._runtime.sync import SyncTopology
    from ._spec.model import Topology

__all__ = ["LaunchTopology", "launch_topology"]


class LaunchTopology(Protocol):
    """What the fixture gives: ``launch_topology(path_or_topology, overrides={...}, **launch_kwargs)``."""

    def __call__(
        self,
        topology: str | os.PathLike[str] | Topology | Plan,
        *,
        overrides: Mapping[str, object] | None = None,
        **launch_kwargs: Any,
    ) -> SyncTopology: ...


@pytest.fixture
def launch_topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaunchTopology]:
    """Launch a topology (a YAML path, a bundled preset name, a ``Topology`` or a ``Plan``) and return it
    ready, as a synchronous group (``launch_sync``); every topology the test launched is torn down after
    it, last launched first. A service that failed during the test raises its ``ServiceFailed`` from the
    test's next call on the group, or else from the teardown (the test errors). Runs go under a temporary
    directory unless ``runs_dir=`` is given.
    """
    with contextlib.ExitStack() as stack:

        def launch(
            topology: str | os.PathLike[str] | Topology | Plan,
            *,
            overrides: Mapping[str, object] | None = None,
            **launch_kwargs: Any,
        ) -> SyncTopology:
            from ._runtime.sync import launch_sync
            from ._spec.load import load

            if isinstance(topology, (str, os.PathLike)):
                topology = load(topology, overrides=overrides)
            elif overrides:
                raise TypeError("launch_topology: overrides= applies to a YAML file; build the Topology with them")
            launch_kwargs.setdefault("runs_dir", tmp_path_factory.mktemp("topovisor-runs"))
            launched = launch_sync(topology, **launch_kwargs)
            group = launched.__enter__()
            stack.callback(_close, launched, group)
            return group

        yield launch


def _close(launched: contextlib.AbstractContextManager[SyncTopology], group: SyncTopology) -> None:
    """Tear down; a failure is raised here unless the test already got it from a call (one report, not two)."""
    from ._errors import ServiceFailed

    try:
        launched.__exit__(None, None, None)
    except ServiceFailed as error:
        if not (group.failure_raised and error is group.failure):
            raise
