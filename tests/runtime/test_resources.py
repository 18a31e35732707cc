"""Resources per replica: CPU, memory (now and peak), processes and GPU memory, sampled from its cgroup (or
/proc without one) and shown on the replica, in ``status`` and in the summary."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

import supervisor as sv
from supervisor._control.ops import status_of
from supervisor._host.resources import ResourceUsage
from supervisor._records.summary import read_summary
from supervisor._runtime import resources as sampling

PYTHON = sys.executable
MB = 1000**2
#: allocates 150 MB (touched, so resident) on SIGUSR1
_GROWS = (
    "import signal, time\n"
    "held = []\n"
    "signal.signal(signal.SIGUSR1, lambda *_: held.append(b'x' * (150 * 10**6)))\n"
    "print('up', flush=True)\n"
    "while True: time.sleep(1)\n"
)


@pytest.fixture(autouse=True)
def fast_sampling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sampling, "SAMPLE_INTERVAL_SECONDS", 0.05)


def _service(code: str, **options: object) -> sv.Service:
    return sv.Service(name="w", command=[PYTHON, "-c", code], ready=sv.LogCheck("up"), **options)  # type: ignore[arg-type]


async def _sampled(
    replica: sv.Replica, predicate: Callable[[ResourceUsage], bool], timeout: float = 15.0
) -> ResourceUsage:
    """The first sample that satisfies ``predicate`` (polled, bounded)."""
    with anyio.fail_after(timeout):
        while True:
            usage = replica.resources
            if usage is not None and predicate(usage):
                return usage
            await anyio.sleep(0.02)


@pytest.mark.anyio
@pytest.mark.parametrize("containment", ["auto", "marks"])
async def test_memory_grows_and_the_peak_covers_it(runs_dir: Path, containment: str) -> None:
    """A replica that allocates 150 MB shows memory_bytes grown by about that, and a peak at least as large."""
    topo = sv.Topology(name="mem", services=[_service(_GROWS)], containment=containment)
    async with sv.launch(topo, runs_dir=runs_dir) as group:
        replica = group["w"].replicas[0]
        before = await _sampled(replica, lambda u: u.memory_bytes > 0)
        assert replica.pid is not None
        os.kill(replica.pid, signal.SIGUSR1)
        after = await _sampled(replica, lambda u: u.memory_bytes >= before.memory_bytes + 120 * MB)
        assert after.memory_peak_bytes >= after.memory_bytes
        assert after.processes == 1
        assert after.gpu_memory_bytes is None  # no GPU inventory: none to read
        reported = status_of(group)["services"]["w"]["replicas"][0]["resources"]
        assert {"cpu_seconds", "memory_bytes", "memory_peak_bytes", "processes", "gpu_memory_bytes"} <= set(reported)
        assert reported["memory_peak_bytes"] >= 120 * MB
    summary = read_summary(group.run_dir)
    totals = summary.replicas["w"].resources
    assert totals is not None and totals.memory_peak_bytes is not None and totals.memory_peak_bytes >= 120 * MB
    service = summary.services["w"].resources
    assert service is not None and service.memory_peak_bytes is not None and service.memory_peak_bytes >= 120 * MB


@pytest.mark.anyio
@pytest.mark.parametrize("containment", ["auto", "marks"])
async def test_cpu_seconds_grow_for_a_busy_loop(runs_dir: Path, containment: str) -> None:
    """A replica spinning on a core accumulates CPU seconds, and its CPU % is above zero."""
    topo = sv.Topology(
        name="cpu", services=[_service("print('up', flush=True)\nwhile True: pass\n")], containment=containment
    )
    async with sv.launch(topo, runs_dir=runs_dir) as group:
        replica = group["w"].replicas[0]
        usage = await _sampled(replica, lambda u: u.cpu_seconds >= 0.5 and (u.cpu_percent or 0) > 0)
        assert usage.cpu_seconds >= 0.5
    summary = read_summary(group.run_dir)
    totals = summary.replicas["w"].resources
    assert totals is not None and totals.cpu_seconds is not None and totals.cpu_seconds >= 0.5
    service = summary.services["w"].resources
    assert service is not None and service.cpu_seconds is not None and service.cpu_seconds >= 0.5


@pytest.mark.anyio
@pytest.mark.parametrize("containment", ["auto", "marks"])
async def test_processes_count_a_forked_child(runs_dir: Path, containment: str) -> None:
    """A replica that started a child has two processes; once the child is gone, one."""
    code = (
        "import os, signal, subprocess, time\n"
        "child = subprocess.Popen(['sleep', '60'])\n"
        "signal.signal(signal.SIGUSR1, lambda *_: (child.kill(), child.wait()))\n"
        "print('up', flush=True)\n"
        "while True: time.sleep(1)\n"
    )
    topo = sv.Topology(name="fork", services=[_service(code)], containment=containment)
    async with sv.launch(topo, runs_dir=runs_dir) as group:
        replica = group["w"].replicas[0]
        await _sampled(replica, lambda u: u.processes == 2)
        assert replica.pid is not None
        os.kill(replica.pid, signal.SIGUSR1)
        await _sampled(replica, lambda u: u.processes == 1)


@pytest.mark.anyio
async def test_gpu_memory_is_summed_from_the_inventory(runs_dir: Path) -> None:
    """GPU memory is what the GPU inventory lists for the replica's processes, on every GPU it uses."""
    node = sv.FakeInventory(2)
    code = "import time\nprint('up', flush=True)\nwhile True: time.sleep(1)\n"
    topo = sv.Topology(name="gpu", services=[_service(code)])
    async with sv.launch(topo, runs_dir=runs_dir, gpus=node) as group:
        replica = group["w"].replicas[0]
        await _sampled(replica, lambda u: u.gpu_memory_bytes == 0)
        assert replica.pid is not None
        node.held += [sv.GpuProcess(0, replica.pid, 3 * 10**9), sv.GpuProcess(1, replica.pid, 4 * 10**9)]
        usage = await _sampled(replica, lambda u: u.gpu_memory_bytes == 7 * 10**9)
        assert status_of(group)["services"]["w"]["replicas"][0]["resources"]["gpu_memory_bytes"] == 7 * 10**9
        assert usage.gpu_memory_peak_bytes == 7 * 10**9
    totals = read_summary(group.run_dir).replicas["w"].resources
    assert totals is not None and totals.gpu_memory_peak_bytes == 7 * 10**9


def test_the_sampler_waits_longer_after_a_round_that_cost_more_than_its_share() -> None:
    """A round of a few replicas waits the interval; one that cost 50 ms of CPU waits 10 s, so sampling
    takes at most half a percent of a core whatever the number of replicas."""
    assert sampling.next_sample_in(0.0001) == sampling.SAMPLE_INTERVAL_SECONDS
    assert sampling.next_sample_in(0.05) == pytest.approx(0.05 / sampling.SAMPLER_CPU_SHARE) == pytest.approx(10.0)
