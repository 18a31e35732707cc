"""``group[svc].api``: a service's routes as full URLs on replica 0, the same from the group that launched
the run, from ``attach`` and from ``status``; each URL answers."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest

import supervisor as sv
from supervisor._control.ops import status_of

from ..helpers import PYTHON


def topology() -> sv.Topology:
    web = sv.Service(
        name="web",
        command=[PYTHON, "-m", "http.server", "--bind", "127.0.0.1", "{port}"],
        ports=["port"],
        replicas=2,
        ready=sv.HttpCheck("http://127.0.0.1:{port}/"),
        api={"listing": "/", "missing": "/no-such-file"},
    )
    return sv.Topology(name="routes", services=[web])


async def socket_open(group: sv.RunningTopology) -> None:
    with anyio.fail_after(10):
        while group.control_socket is None or not group.control_socket.exists():
            await anyio.sleep(0.01)


@pytest.mark.anyio
async def test_api_lists_full_urls_of_replica_0_the_same_launched_attached_and_in_status(runs_dir: Path) -> None:
    """The routes are URLs on replica 0 that its server answers; ``status`` and ``attach`` show the same."""
    async with sv.launch(topology(), runs_dir=runs_dir) as group:
        url = group["web"].url
        assert url is not None
        # the readiness probe calls the listing route: not listed a second time
        assert group["web"].api == {"listing": f"{url}/", "missing": f"{url}/no-such-file"}
        assert group["web.1"].api["listing"] == f"{group['web.1'].url}/" != f"{url}/"  # each replica its own
        async with httpx.AsyncClient(trust_env=False) as client:
            assert (await client.get(group["web"].api["listing"])).status_code == 200
            assert (await client.get(group["web"].api["missing"])).status_code == 404  # a real path, on that server
        status = status_of(group)["services"]["web"]
        assert status["api"] == group["web"].api and status["replicas"][1]["api"] == group["web.1"].api
        await socket_open(group)
        async with sv.attach(group.run_dir) as attached:
            assert attached["web"].api == group["web"].api and attached["web.1"].api == group["web.1"].api
