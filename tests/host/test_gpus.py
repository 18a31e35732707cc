"""GPU assignment on fake and simulated nodes (no NVML here): counts, ids, contiguity, NVLink preference,
over-subscription, the free-memory check, the release wait after teardown, and what a child sees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import psutil
import pytest

import supervisor as sv
from supervisor._cli.gpus import render_gpus
from supervisor._host.gpu_inventory import (
    FakeInventory,
    GpuDevice,
    GpuProcess,
    GpuUnavailable,
    NvmlInventory,
)
from supervisor._host.gpu_visible import open_inventory, visible_indices
from supervisor._marks import REPLICA_ENV, RUN_ID_ENV
from supervisor._runtime import gpu_checks as _gpu_checks

from ..helpers import PYTHON, SLEEPER, plan_of

SLEEP = [PYTHON, "-c", "import time; time.sleep(60)"]


def gpus_of(*services: sv.Service, gpus: Any = "8x80GB") -> dict[str, tuple[int, ...]]:
    plan = plan_of(*services, name="g", gpus=gpus)
    return {r.name: r.gpus for s in plan.services for r in s.replicas}


def svc(name: str, gpus: Any, replicas: int = 1, **kwargs: Any) -> sv.Service:
    kwargs.setdefault("command", SLEEP)
    return sv.Service(name=name, replicas=replicas, gpus=gpus, **kwargs)


def test_counts_take_the_lowest_free_indices_in_plan_order() -> None:
    assert gpus_of(svc("a", 2, replicas=2), svc("b", 1)) == {"a.0": (0, 1), "a.1": (2, 3), "b": (4,)}


def test_explicit_ids_are_honoured_and_reserved_before_counts() -> None:
    """``a`` comes first but must not take GPUs 0 and 1, which ``b`` named."""
    got = gpus_of(svc("a", 2), svc("b", sv.GpuRequest(ids=[1, 0])))
    assert got == {"a": (2, 3), "b": (1, 0)}


def test_contiguous_takes_consecutive_indices() -> None:
    taken = svc("x", sv.GpuRequest(ids=[1, 4]))
    assert gpus_of(taken, svc("y", 2))["y"] == (0, 2)
    assert gpus_of(taken, svc("y", sv.GpuRequest(count=2, contiguous=True)))["y"] == (2, 3)
    assert gpus_of(taken, svc("y", sv.GpuRequest(count=3, contiguous=True)))["y"] == (5, 6, 7)


def test_multi_gpu_replicas_prefer_sets_joined_by_nvlink() -> None:
    pairs = FakeInventory(4, links=[(0, 2), (1, 3)])
    assert gpus_of(svc("a", 2, replicas=2), gpus=pairs) == {"a.0": (0, 2), "a.1": (1, 3)}
    assert gpus_of(svc("a", 2, replicas=2), gpus=FakeInventory(4, links=[])) == {"a.0": (0, 1), "a.1": (2, 3)}
    islands = FakeInventory(8, links=[(a, b) for a in range(8) for b in range(8) if a < b and a // 4 == b // 4])
    got = gpus_of(svc("x", sv.GpuRequest(ids=[0])), svc("y", sv.GpuRequest(count=4, contiguous=True)), gpus=islands)
    assert got["y"] == (4, 5, 6, 7)  # 1-4 is consecutive too, but crosses the islands


def test_over_subscription_is_one_error_showing_the_plan() -> None:
    with pytest.raises(sv.ConfigError) as caught:
        gpus_of(svc("a", 2, replicas=2), svc("b", 2, replicas=3))
    assert len(caught.value.problems) == 1
    message = str(caught.value)
    assert "10 GPUs asked in all; simulated node 8x80GB: 8 GPUs (0-7; 80 GB each)" in message
    assert "a.0  -> GPU 0, 1" in message and "b.1  -> GPU 6, 7" in message
    assert "b.2  REFUSED: wants 2 GPUs; free: none" in message
    assert message.startswith("service 'b', field 'gpus'")


@pytest.mark.parametrize(
    ("services", "expected"),
    [
        ([svc("a", sv.GpuRequest(ids=[0]), replicas=2)], "a.1  REFUSED: wants GPU 0, already given to a.0"),
        ([svc("a", sv.GpuRequest(ids=[1])), svc("b", sv.GpuRequest(ids=[1, 2]))], "wants GPU 1, already given to a"),
        ([svc("a", sv.GpuRequest(ids=[9]))], "a  REFUSED: wants GPU 9, which the node does not have"),
        ([svc("a", sv.GpuRequest(count=2, contiguous=True))], "wants 2 contiguous GPUs; free: 0"),
        ([svc("a", sv.GpuRequest(count=1, min_free_memory_bytes="100GB"))], "needs 100 GB free on GPU 0"),
    ],
    ids=["same-id-two-replicas", "same-id-two-services", "no-such-gpu", "contiguous", "more-than-the-gpu-has"],
)
def test_refused_plans_name_the_replica_and_the_cause(services: list[sv.Service], expected: str) -> None:
    node = FakeInventory(1) if "contiguous" in expected or "100 GB" in expected else "8x80GB"
    with pytest.raises(sv.ConfigError) as caught:
        gpus_of(*services, gpus=node)
    assert expected in str(caught.value) and len(caught.value.problems) == 1


@pytest.mark.parametrize(
    ("gpus", "expected"),
    [
        (sv.GpuRequest(count=-1), "count must be a whole number of GPUs (0 or more), got -1"),
        (sv.GpuRequest(ids=[0, 0]), "ids name a GPU twice: [0, 0]"),
        (sv.GpuRequest(ids=[-1]), "ids must be GPU indices (0 or more)"),
        (sv.GpuRequest(count=3, ids=[0, 1]), "count 3 disagrees with ids [0, 1]"),
    ],
)
def test_bad_requests_are_reported_before_any_node_is_read(gpus: sv.GpuRequest, expected: str) -> None:
    with pytest.raises(sv.ConfigError, match="service 'a', field 'gpus'") as caught:
        gpus_of(svc("a", gpus), gpus=None)  # None would open NVML: the field check comes first
    assert expected in str(caught.value)


def test_a_gpu_request_without_nvml_is_a_clear_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError, whatever is installed
    with pytest.raises(GpuUnavailable) as caught:
        NvmlInventory.open()
    assert "nvidia-ml-py is not installed" in str(caught.value)
    with pytest.raises(sv.ConfigError) as plan_error:
        gpus_of(svc("a", 1), svc("b", 0), gpus=None)
    assert str(plan_error.value) == (
        "service 'a' needs GPUs but NVML is not available: nvidia-ml-py is not installed (import of pynvml halted; "
        "None in sys.modules); install nvidia-ml-py / use --gpus 8x80GB to plan against a simulated node"
    )
    assert gpus_of(svc("b", 0), gpus=None) == {"b": ()}  # gpus: 0 asks for nothing: no NVML needed


def test_nvml_init_failure_is_gpu_unavailable() -> None:
    class NoDriver:
        def nvmlInit(self) -> None:
            raise RuntimeError("Driver Not Loaded")

    with pytest.raises(GpuUnavailable, match="Driver Not Loaded \\(no NVIDIA driver on this machine\\?\\)"):
        NvmlInventory.open(importer=NoDriver)


class StandInNvml:
    """nvidia-ml-py's function names and result shapes (13.x), for a node of ``count`` GPUs all joined by
    NVLink; ``GPU-<index>`` UUIDs. No driver here: every NVML call of NvmlInventory is checked against it."""

    NVML_P2P_CAPS_INDEX_NVLINK = 2
    NVML_P2P_STATUS_OK = 0

    def __init__(self, count: int = 2) -> None:
        self.count = count

    def nvmlInit(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int:
        return self.count

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return f"GPU-{h}"

    def nvmlDeviceGetName(self, h: int) -> bytes:
        return b"NVIDIA H200"

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlDeviceGetPciInfo(self, h: int) -> SimpleNamespace:
        return SimpleNamespace(busId=f"00000000:{h + 0x18:02X}:00.0")

    def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:
        return SimpleNamespace(total=141 * 10**9, used=h * 10**9)

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[SimpleNamespace]:
        return [SimpleNamespace(pid=100 + h, usedGpuMemory=None if h else 5)]

    def nvmlDeviceGetGraphicsRunningProcesses(self, h: int) -> list[SimpleNamespace]:
        raise RuntimeError("Not Supported")

    def nvmlDeviceGetP2PStatus(self, a: int, b: int, index: int) -> int:
        return 0 if index == 2 else 1


def test_nvml_inventory_reads_devices_processes_and_nvlink() -> None:
    """NvmlInventory's calls, against a stand-in with nvidia-ml-py's function names and result shapes."""
    inventory = NvmlInventory.open(importer=StandInNvml)
    devices = inventory.devices()
    assert [(d.index, d.name, d.pci_bus_id, d.memory_free_bytes) for d in devices] == [
        (0, "NVIDIA H200", "00000000:18:00.0", 141 * 10**9),
        (1, "NVIDIA H200", "00000000:19:00.0", 140 * 10**9),
    ]
    assert inventory.processes() == [GpuProcess(0, 100, 5), GpuProcess(1, 101, None)]
    assert inventory.nvlink_peers(0) == {1}
    assert inventory.driver_version() == "550.54.15"


def test_processes_are_listed_on_a_driver_older_than_the_v3_struct() -> None:
    """nvidia-ml-py 13's unversioned call needs the driver's _v3 symbol (R510+); on an older LTS driver it
    raises NVMLLibraryMismatchError, and the processes must come from the _v2 call, not be silently none
    (the memory check would name no holder and the release wait would end at once)."""

    class OldDriver(StandInNvml):
        def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[SimpleNamespace]:
            raise RuntimeError("Unversioned function called and the pyNVML version does not match the NVML lib")

        def nvmlDeviceGetComputeRunningProcesses_v2(self, h: int) -> list[SimpleNamespace]:
            return [SimpleNamespace(pid=200 + h, usedGpuMemory=7)]

        def nvmlDeviceGetGraphicsRunningProcesses_v2(self, h: int) -> list[SimpleNamespace]:
            raise RuntimeError("Not Supported")

    inventory = NvmlInventory.open(importer=OldDriver)
    assert inventory.processes() == [GpuProcess(0, 200, 7), GpuProcess(1, 201, 7)]


def test_nvml_is_initialised_once_per_process_and_shut_down_when_opening_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each plan, run and `supervisor gpus` opens the inventory: one nvmlInit for them all (the docstring's
    promise; each init is a reference NVML keeps); an open that fails after nvmlInit pairs it with
    nvmlShutdown."""

    class Counting(StandInNvml):
        inits = shutdowns = 0

        def nvmlInit(self) -> None:
            self.inits += 1

        def nvmlShutdown(self) -> None:
            self.shutdowns += 1

    nvml = Counting(2)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    first, second = open_inventory(None, environ={}), open_inventory(None, environ={})
    assert first is second and (nvml.inits, nvml.shutdowns) == (1, 0)

    class Broken(Counting):
        def nvmlDeviceGetCount(self) -> int:
            raise RuntimeError("Unknown Error")

    broken = Broken(2)
    with pytest.raises(GpuUnavailable, match="Unknown Error"):
        NvmlInventory.open(importer=lambda: broken)
    assert (broken.inits, broken.shutdowns) == (1, 1)


def test_a_gpu_nvml_may_not_open_is_left_out_and_the_others_keep_their_indices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In a Slurm cgroup or a container NVML may count a GPU that this process cannot open (Insufficient
    Permissions): that GPU is not ours; it must not make the whole node unusable (exit 2)."""

    class Cgroup(StandInNvml):
        def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
            if index == 1:
                raise RuntimeError("Insufficient Permissions")
            return index

    monkeypatch.setitem(sys.modules, "pynvml", Cgroup(4))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    inventory = open_inventory(None)
    assert [d.index for d in inventory.devices()] == [0, 2, 3]
    assert inventory.nvlink_peers(0) == {2, 3} and inventory.nvlink_peers(1) == frozenset()
    assert gpus_of(svc("a", 2), gpus=None) == {"a": (0, 2)}


class MigOnGpu1(StandInNvml):
    """GPU 1 is in MIG mode; the others have no MIG (nvmlDeviceGetMigMode raises Not Supported there)."""

    NVML_DEVICE_MIG_ENABLE = 1

    def nvmlDeviceGetMigMode(self, h: int) -> list[int]:
        if h != 1:
            raise RuntimeError("Not Supported")
        return [1, 1]


def test_a_gpu_in_mig_mode_is_never_handed_out_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """CUDA_VISIBLE_DEVICES=<index> of a GPU in MIG mode gives CUDA one of its instances, not the GPU, and
    its memory is the instances': the planner must skip it, refuse it by id, and say so."""
    monkeypatch.setitem(sys.modules, "pynvml", MigOnGpu1(4))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpus_of(svc("a", 2), svc("b", 1), gpus=None) == {"a": (0, 2), "b": (3,)}
    with pytest.raises(sv.ConfigError) as caught:
        gpus_of(svc("a", 4), gpus=None)
    assert "4 GPUs (0-3; 141 GB each; in MIG mode, not handed out: 1))" in str(caught.value)
    assert "a  REFUSED: wants 4 GPUs; free: 0, 2, 3" in str(caught.value)
    with pytest.raises(sv.ConfigError, match="wants GPU 1, which is in MIG mode"):
        gpus_of(svc("a", sv.GpuRequest(ids=[1])), gpus=None)
    assert "GPU 1  NVIDIA H200  00000000:19:00.0  1 GB / 141 GB used  MIG mode" in render_gpus(open_inventory(None))


def test_a_supervisor_given_cuda_visible_devices_plans_on_those_gpus_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """NVML lists all 8 GPUs whatever CUDA_VISIBLE_DEVICES says; a supervisor given GPUs 4-7 (a Slurm step,
    a shared box) must hand out only those, named by index or UUID, and tell its children NVML's indices."""
    monkeypatch.setitem(sys.modules, "pynvml", StandInNvml(8))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,GPU-6,7")
    plan = sv.make_plan(sv.Topology(name="g", services=[svc("a", 2), svc("b", sv.GpuRequest(ids=[7]))]))
    a, b = plan.service("a").replicas[0], plan.service("b").replicas[0]
    assert (a.gpus, b.gpus) == ((4, 5), (7,))
    assert a.env == {"CUDA_VISIBLE_DEVICES": "4,5", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}  # replaces the inherited one
    with pytest.raises(sv.ConfigError) as caught:
        gpus_of(svc("a", 2, replicas=3), gpus=None)
    assert "; NVML (CUDA_VISIBLE_DEVICES=4,5,GPU-6,7): 4 GPUs (4-7; 141 GB each))" in str(caught.value)
    assert "a.2  REFUSED: wants 2 GPUs; free: none" in str(caught.value)
    with pytest.raises(sv.ConfigError, match="wants GPU 0, which the node does not have"):
        gpus_of(svc("a", sv.GpuRequest(ids=[0])), gpus=None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3,1", (3, 1)),
        (" 2 , GPU-5", (2, 5)),
        ("GPU-3-dead-beef", ()),  # no such UUID: CUDA sees nothing from there on
        ("2,-1,3", (2,)),  # the list ends at the first entry naming no GPU, as in CUDA
        ("-1", ()),
        ("", ()),
        ("9", ()),  # not on this node
        ("1,1,2", (1,)),
        ("MIG-4f1a2b3c", ()),  # a MIG instance is not a GPU this planner hands out
    ],
)
def test_cuda_visible_devices_is_read_as_cuda_reads_it(value: str, expected: tuple[int, ...]) -> None:
    assert visible_indices(value, NvmlInventory.open(importer=lambda: StandInNvml(8)).devices()) == expected


def test_supervisor_gpus_and_the_memory_check_see_only_the_visible_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", StandInNvml(4))
    inventory = open_inventory(None, environ={"CUDA_VISIBLE_DEVICES": "3,1"})
    assert [d.index for d in inventory.devices()] == [1, 3]
    assert inventory.nvlink_peers(1) == {3}
    assert {p.pid for p in inventory.processes()} == {100, 101, 102, 103}  # the release wait sees every pid
    text = render_gpus(inventory)
    assert text.splitlines()[0] == "2 GPUs on NVML (CUDA_VISIBLE_DEVICES=3,1)"
    assert "GPU 1 " in text and "GPU 3 " in text and "GPU 0 " not in text and "GPU 2 " not in text
    assert [d.index for d in open_inventory(None, environ={}).devices()] == [0, 1, 2, 3]


def test_env_and_gpus_template_in_the_plan() -> None:
    plan = sv.make_plan(
        sv.Topology(
            name="g",
            services=[
                svc("a", 2, replicas=2, env={"TP_DEVICES": "{gpus}"}),
                svc("b", 1, env={"CUDA_VISIBLE_DEVICES": "GPU-uuid-x"}),  # the user's own value wins
                sv.Service(name="c", command=[*SLEEP, "{gpus}"], gpus=0),
            ],
        ),
        gpus="8x80GB",
    )
    a1, b, c = plan.service("a").replicas[1], plan.service("b").replicas[0], plan.service("c").replicas[0]
    assert a1.env == {"TP_DEVICES": "2,3", "CUDA_VISIBLE_DEVICES": "2,3", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert b.env == {"CUDA_VISIBLE_DEVICES": "GPU-uuid-x", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert c.argv[-1] == "" and c.env == {}


def test_the_gpus_template_is_unknown_without_a_gpu_request() -> None:
    with pytest.raises(sv.ConfigError, match="unknown template \\{gpus\\}"):
        gpus_of(sv.Service(name="a", command=[*SLEEP, "{gpus}"]))


# ----- runtime: what a child sees, the memory check, the release wait ----------------------------------

SHOW_ENV = (
    "import os, sys, time; "
    "print('seen', os.environ.get('CUDA_VISIBLE_DEVICES'), os.environ.get('CUDA_DEVICE_ORDER'), sys.argv[1], flush=True); "
    "time.sleep(60)"
)


@pytest.mark.anyio
async def test_a_child_sees_its_gpus_and_the_manifest_records_them(runs_dir: Path) -> None:
    topology = sv.Topology(
        name="g",
        services=[
            sv.Service(
                name="w", command=[PYTHON, "-c", SHOW_ENV, "{gpus}"], replicas=2, gpus=2, ready=sv.LogCheck("seen")
            ),
        ],
    )
    async with sv.launch(topology, runs_dir=runs_dir, gpus="4x80GB") as group:
        logs = [group.replica(f"w.{i}").log_path.read_text() for i in range(2)]
        run_dir = group.run_dir
    assert "seen 0,1 PCI_BUS_ID 0,1" in logs[0] and "seen 2,3 PCI_BUS_ID 2,3" in logs[1]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [r["gpus"] for r in manifest["services"]["w"]["replicas"]] == [[0, 1], [2, 3]]


@pytest.mark.anyio
async def test_free_memory_check_names_the_holder_and_starts_nothing(runs_dir: Path, tmp_path: Path) -> None:
    env = dict(os.environ, **{RUN_ID_ENV: "20260101-000000-other-abc123", REPLICA_ENV: "decode.1"})
    holder = subprocess.Popen(SLEEP, env=env)
    try:
        node = FakeInventory(2, processes=[GpuProcess(1, holder.pid, 70 * 10**9)])
        canary = tmp_path / "CANARY"
        topology = sv.Topology(
            name="g",
            services=[
                sv.Service(name="canary", command=[PYTHON, "-c", f"open({str(canary)!r}, 'w')"]),
                svc("w", sv.GpuRequest(count=1, min_free_memory_bytes="20GB"), replicas=2),
            ],
        )
        with pytest.raises(sv.ConfigError) as caught:
            async with sv.launch(topology, runs_dir=runs_dir, gpus=node):
                pytest.fail("started despite the memory check")
        assert str(caught.value) == (
            "service 'w', field 'gpus': w.1 needs 20 GB free on GPU 1 (min_free_memory), it has 10 GB free of 80 GB; "
            f"held by pid {holder.pid} ({psutil.Process(holder.pid).name()}, 70 GB, "
            "run 20260101-000000-other-abc123 replica decode.1)"
        )
        assert not canary.exists() and not runs_dir.exists()
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.anyio
@pytest.mark.parametrize("pid_offset", [0, 1 << 23], ids=["same pid namespace", "host pids"])
async def test_teardown_waits_until_the_gpus_release_the_run(runs_dir: Path, pid_offset: int) -> None:
    """The fake driver lists a process until 0.5 s after its exit: leaving ``launch`` must wait for it, also
    when the driver lists pids of another namespace (a container: older drivers give host pids), and leave
    alone what it listed before the run."""
    earlier = GpuProcess(0, os.getpid(), 10**9)
    node = FakeInventory(2, processes=[earlier], release_delay_seconds=0.5, pid_offset=pid_offset)

    def on_event(event: sv.Event) -> None:
        if isinstance(event, sv.Spawned):
            node.held.append(GpuProcess(0, event.pid, 10**9))

    topology = sv.Topology(name="g", services=[svc("w", 1, command=SLEEPER, ready=sv.LogCheck("service ready"))])
    async with sv.launch(topology, runs_dir=runs_dir, gpus=node, on_event=on_event) as group:
        assert len(node.processes()) == 2
    assert node.processes() == [GpuProcess(0, os.getpid() + pid_offset, 10**9)]
    assert not any(isinstance(e, sv.GpuNotReleased) for e in group.event_history)


@pytest.mark.anyio
async def test_a_process_the_gpus_keep_listing_is_named_after_a_bounded_wait(
    runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_gpu_checks, "GPU_RELEASE_SECONDS", 0.5)
    node = FakeInventory(2, live_only=False)  # lists what it was told, dead or not: a survivor
    pids: list[int] = []

    def on_event(event: sv.Event) -> None:
        if isinstance(event, sv.Spawned):
            pids.append(event.pid)
            node.held.append(GpuProcess(1, event.pid, 3 * 10**9))

    topology = sv.Topology(name="g", services=[svc("w", sv.GpuRequest(ids=[1]), command=SLEEPER)])
    async with sv.launch(topology, runs_dir=runs_dir, gpus=node, on_event=on_event) as group:
        leaving = time.monotonic()
    assert time.monotonic() - leaving < 10
    warnings = [e for e in group.event_history if isinstance(e, sv.GpuNotReleased)]
    assert [(w.replica, w.pid, w.gpu, w.used_memory_bytes) for w in warnings] == [("w", pids[0], 1, 3 * 10**9)]
    assert 0.5 <= warnings[0].waited_seconds < 5
    events = (group.run_dir / "events.jsonl").read_text()
    assert '"event": "gpu_not_released"' in events or '"event":"gpu_not_released"' in events


@pytest.mark.anyio
async def test_wait_released_is_bounded_and_ignores_other_pids() -> None:
    node = FakeInventory(1, processes=[GpuProcess(0, 1, None), GpuProcess(0, 99999999, None)], live_only=False)
    with anyio.fail_after(5):
        assert await _gpu_checks.wait_released(node, {2: "x"}, seconds=30) == []
        started = time.monotonic()
        assert await _gpu_checks.wait_released(node, {1: "x"}, seconds=0.2) == [GpuProcess(0, 1, None)]
    assert 0.2 <= time.monotonic() - started < 2


#: listed pids of "another namespace": above any pid_max, so no process here has one
HOST_PIDS = 1 << 23


@pytest.mark.anyio
async def test_the_release_wait_counts_new_processes_of_another_pid_namespace_on_the_run_s_gpus() -> None:
    """In a container without the host's pid namespace, older drivers list host pids: a new one on one of
    the run's GPUs is the run's (the wait went on; it ended at once); one listed before the run, one on
    another GPU, and a process that lives here but is not ours are not."""
    before = frozenset({(0, HOST_PIDS + 1)})
    node = FakeInventory(
        3,
        processes=[
            GpuProcess(0, HOST_PIDS + 1),  # listed before the run
            GpuProcess(0, HOST_PIDS + 2),  # new, in another namespace: the run's
            GpuProcess(2, HOST_PIDS + 3),  # new, but not on the run's GPUs
            GpuProcess(1, os.getpid()),  # lives here, not the run's
        ],
        live_only=False,
    )
    with anyio.fail_after(5):
        left = await _gpu_checks.wait_released(node, {}, seconds=0.2, gpus={0, 1}, before=before)
        assert left == [GpuProcess(0, HOST_PIDS + 2)]
        assert await _gpu_checks.wait_released(node, {}, seconds=0.2, gpus={0, 1}, before=None) == []
    with_gpus, without = (sv.make_plan(sv.Topology(name="g", services=[svc("w", g)]), gpus=node) for g in (1, None))
    assert _gpu_checks.listed_before(node, with_gpus) == frozenset((p.gpu, p.pid) for p in node.processes())
    assert _gpu_checks.listed_before(node, without) is None


@pytest.mark.anyio
async def test_a_process_of_another_namespace_the_gpu_keeps_listing_is_named_after_the_replica_on_it(
    runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_gpu_checks, "GPU_RELEASE_SECONDS", 0.5)
    node = FakeInventory(2, live_only=False, pid_offset=HOST_PIDS)

    def on_event(event: sv.Event) -> None:
        if isinstance(event, sv.Spawned):
            node.held.append(GpuProcess(1, event.pid, 3 * 10**9))

    topology = sv.Topology(name="g", services=[svc("w", sv.GpuRequest(ids=[1]), command=SLEEPER)])
    async with sv.launch(topology, runs_dir=runs_dir, gpus=node, on_event=on_event) as group:
        pid = group.replica("w").pid
    warnings = [e for e in group.event_history if isinstance(e, sv.GpuNotReleased)]
    assert pid is not None
    assert [(w.replica, w.service, w.pid, w.gpu) for w in warnings] == [("w", "w", pid + HOST_PIDS, 1)]


def test_import_supervisor_loads_no_nvml() -> None:
    code = "import sys, supervisor; supervisor.make_plan; assert 'pynvml' not in sys.modules, 'pynvml imported'"
    subprocess.run([PYTHON, "-c", code], check=True, timeout=60)


def test_devices_of_a_fake_count_the_memory_its_processes_hold() -> None:
    node = FakeInventory([GpuDevice(3, "u", "n", "b", 100, 10)], processes=[GpuProcess(3, os.getpid(), 30)])
    assert [d.memory_free_bytes for d in node.devices()] == [60]


@pytest.mark.anyio
async def test_gpus_listing_names_the_run_of_a_holder_even_without_its_mark(runs_dir: Path) -> None:
    """``env -i`` drops the run's mark: the run is then found through the pids its manifest records."""
    from supervisor._cli.gpus import render_gpus

    unmarked = sv.Service(name="engine", command=["env", "-i", *SLEEPER], ready=sv.LogCheck("service ready"))
    async with sv.launch(sv.Topology(name="g", services=[unmarked]), runs_dir=runs_dir) as group:
        pid = group.replica("engine").pid
        assert pid is not None and RUN_ID_ENV not in psutil.Process(pid).environ()
        node = FakeInventory(2, processes=[GpuProcess(1, pid, 2 * 10**9)])
        text = await anyio.to_thread.run_sync(render_gpus, node)
        name = psutil.Process(pid).name()
    assert text.splitlines()[3:5] == [
        "GPU 1  fake GPU  00000000:02:00.0  2 GB / 80 GB used  nvlink: 0",
        f"    pid {pid} ({name}, 2 GB, run {group.run_id} replica engine)",
    ]


@pytest.mark.anyio
async def test_a_plan_made_on_a_simulated_node_needs_its_inventory_to_launch(
    runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    plan = sv.make_plan(sv.Topology(name="g", services=[svc("w", 1)]), runs_dir=runs_dir, gpus="2x80GB")
    with pytest.raises(sv.ConfigError, match="the plan assigns GPUs but NVML is not available"):
        async with sv.launch(plan):
            pytest.fail("started without an inventory")
    assert not runs_dir.exists()
    async with sv.launch(plan, gpus="2x80GB") as group:
        assert group.replica("w").plan.gpus == (0,)


def test_gpu_problems_are_reported_together_with_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(sv.ConfigError) as caught:
        gpus_of(svc("a", 1, command=[*SLEEP, "{prot}"]), gpus=None)
    assert len(caught.value.problems) == 2
    assert "needs GPUs but NVML is not available" in str(caught.value) and "unknown template {prot}" in str(
        caught.value
    )
