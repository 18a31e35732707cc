"""AMD GPUs: the amdsmi inventory (through a stand-in with amdsmi's function names and result shapes: no ROCm
here), which library a node is read with, ROCm's visibility variables, and a simulated MI300X node."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import supervisor as sv
from supervisor._cli.gpus import render_gpus
from supervisor._host.gpu_amdsmi import AmdSmiInventory
from supervisor._host.gpu_inventory import AMD, NVIDIA, FakeInventory, GpuProcess, GpuUnavailable, gpu_vendor
from supervisor._host.gpu_visible import choose_vendor, open_inventory
from supervisor._runtime import gpu_checks as _gpu_checks

from ..helpers import PYTHON, SLEEPER
from .test_gpus import gpus_of, svc

GB = 1000**3


class StandInAmdSmi:
    """amdsmi's names and shapes (ROCm 6.x): ``count`` MI300X of 192 GB all joined by XGMI, hip_id in reverse
    of amdsmi's order (the inventory must use HIP's numbering), memory in bytes, processes as dicts.
    ``held`` lists (gpu, pid, vram bytes) that the process list reports, whether the pid lives or not."""

    AmdSmiMemoryType = SimpleNamespace(VRAM=0, VIS_VRAM=1, GTT=2)
    AmdSmiIoLinkType = SimpleNamespace(PCIE=1, XGMI=2)

    def __init__(self, count: int = 4, partitioned: frozenset[int] = frozenset()) -> None:
        self.count = count
        self.partitioned = partitioned
        self.held: list[tuple[int, int, int]] = []

    def _hip(self, handle: str) -> int:
        return self.count - 1 - int(handle.removeprefix("h"))

    def amdsmi_init(self) -> None: ...
    def amdsmi_shut_down(self) -> None: ...
    def amdsmi_get_processor_handles(self) -> list[str]:
        return [f"h{i}" for i in range(self.count)]

    def amdsmi_get_gpu_enumeration_info(self, h: str) -> dict[str, int]:
        return {"drm_card": 0, "drm_render": 128, "hsa_id": 2, "hip_id": self._hip(h)}

    def amdsmi_get_gpu_device_uuid(self, h: str) -> str:
        return f"8cff74b5-0000-1000-80ea-{self._hip(h):012d}"

    def amdsmi_get_gpu_asic_info(self, h: str) -> dict[str, Any]:
        return {"market_name": "AMD Instinct MI300X", "vendor_id": "0x1002", "device_id": "0x74a1"}

    def amdsmi_get_gpu_device_bdf(self, h: str) -> str:
        return f"0000:{0x0C + 0x10 * self._hip(h):02x}:00.0"

    def amdsmi_get_gpu_memory_total(self, h: str, kind: int) -> int:
        assert kind == self.AmdSmiMemoryType.VRAM
        return 192 * GB

    def amdsmi_get_gpu_memory_usage(self, h: str, kind: int) -> int:
        assert kind == self.AmdSmiMemoryType.VRAM
        return sum(vram for gpu, _, vram in self.held if gpu == self._hip(h))

    def amdsmi_get_gpu_compute_partition(self, h: str) -> str:
        return "CPX" if self._hip(h) in self.partitioned else "SPX"

    def amdsmi_get_gpu_memory_partition(self, h: str) -> str:
        return "NPS1"

    def amdsmi_get_gpu_process_list(self, h: str) -> list[dict[str, Any]]:
        return [
            {"name": "python3", "pid": pid, "mem": vram, "memory_usage": {"gtt_mem": 0, "cpu_mem": 0, "vram_mem": vram}}
            for gpu, pid, vram in self.held
            if gpu == self._hip(h)
        ]

    def amdsmi_topo_get_link_type(self, a: str, b: str) -> dict[str, int]:
        return {"hops": 1, "type": self.AmdSmiIoLinkType.XGMI}


def test_the_amdsmi_inventory_reads_devices_memory_processes_and_xgmi_in_hip_order() -> None:
    smi = StandInAmdSmi(4)
    smi.held = [(2, 4242, 30 * GB)]
    inventory = AmdSmiInventory.open(importer=lambda: smi)
    assert gpu_vendor(inventory) == AMD and inventory.description == "amdsmi"
    devices = inventory.devices()
    assert [(d.index, d.pci_bus_id, d.memory_free_bytes) for d in devices] == [
        (0, "0000:0c:00.0", 192 * GB),
        (1, "0000:1c:00.0", 192 * GB),
        (2, "0000:2c:00.0", 162 * GB),
        (3, "0000:3c:00.0", 192 * GB),
    ]
    assert devices[0].name == "AMD Instinct MI300X" and devices[0].divided is None
    assert inventory.processes() == [GpuProcess(2, 4242, 30 * GB)]
    assert inventory.nvlink_peers(1) == {0, 2, 3}
    text = render_gpus(inventory)
    assert text.splitlines()[0] == "4 GPUs on amdsmi"
    assert "GPU 2  AMD Instinct MI300X  0000:2c:00.0  30 GB / 192 GB used  xgmi: 0,1,3" in text


def test_processes_of_an_older_amdsmi_are_read_through_their_handles() -> None:
    """Before ROCm 6.1 the process list held process handles, read with amdsmi_get_gpu_process_info."""

    class Older(StandInAmdSmi):
        def amdsmi_get_gpu_process_list(self, h: str) -> list[Any]:
            return [("proc", entry) for entry in super().amdsmi_get_gpu_process_list(h)]

        def amdsmi_get_gpu_process_info(self, h: str, process: tuple[str, dict[str, Any]]) -> dict[str, Any]:
            return process[1]

    smi = Older(2)
    smi.held = [(0, 77, 5 * GB), (1, 78, 6 * GB)]
    assert AmdSmiInventory.open(importer=lambda: smi).processes() == [
        GpuProcess(1, 78, 6 * GB),
        GpuProcess(0, 77, 5 * GB),
    ]


def test_a_partitioned_gpu_is_never_handed_out_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPU in CPX mode shows HIP one GPU per partition: like MIG, skipped, refused by id, and marked."""
    monkeypatch.setitem(sys.modules, "amdsmi", StandInAmdSmi(4, partitioned=frozenset({1})))
    monkeypatch.setenv("TOPOVISOR_GPU_VENDOR", "amd")
    for name in ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)
    assert gpus_of(svc("a", 2), svc("b", 1), gpus=None) == {"a": (0, 2), "b": (3,)}
    with pytest.raises(sv.ConfigError) as caught:
        gpus_of(svc("a", 4), gpus=None)
    assert "amdsmi: 4 GPUs (0-3; 192 GB each; partitioned, not handed out: 1))" in str(caught.value)
    with pytest.raises(sv.ConfigError, match="wants GPU 1, which is partitioned \\(CPX/NPS1: HIP sees its partitions"):
        gpus_of(svc("a", sv.GpuRequest(ids=[1])), gpus=None)
    assert "0000:1c:00.0  0 B / 192 GB used  partitioned (CPX/NPS1)  xgmi:" in render_gpus(open_inventory(None))


def test_without_amdsmi_a_gpu_request_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "amdsmi", None)
    with pytest.raises(GpuUnavailable) as caught:
        open_inventory(None, environ={"TOPOVISOR_GPU_VENDOR": "amd"})
    assert "ROCm's amdsmi Python package is not installed" in str(caught.value)
    assert "use --gpus 8x80GB to plan against a simulated node" in caught.value.hint


@pytest.mark.parametrize(
    ("present", "environ", "expected"),
    [
        ({"/dev/kfd"}, {}, AMD),
        ({"/dev/nvidiactl"}, {}, NVIDIA),
        ({"/dev/kfd", "/dev/nvidiactl"}, {}, NVIDIA),  # both: NVIDIA, unless chosen
        ({"/dev/kfd", "/proc/driver/nvidia"}, {"TOPOVISOR_GPU_VENDOR": "AMD"}, AMD),
        ({"/dev/kfd"}, {"TOPOVISOR_GPU_VENDOR": "nvidia"}, NVIDIA),
        (set(), {}, NVIDIA),  # neither: NVML says why nothing can be read
    ],
)
def test_the_library_a_node_is_read_with(present: set[str], environ: dict[str, str], expected: str) -> None:
    assert choose_vendor(environ, exists=present.__contains__) == expected


def test_an_unknown_vendor_choice_is_a_config_error() -> None:
    with pytest.raises(sv.ConfigError, match="TOPOVISOR_GPU_VENDOR='intel': expected nvidia or amd"):
        choose_vendor({"TOPOVISOR_GPU_VENDOR": "intel"})


def test_replicas_on_amd_get_hip_visible_devices_and_no_disagreeing_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A supervisor given GPUs 4-7 by ROCR_VISIBLE_DEVICES and 1,2 of those by HIP_VISIBLE_DEVICES plans on
    GPUs 5 and 6; its replicas get HIP_VISIBLE_DEVICES of global indices and lose the inherited others."""
    monkeypatch.setitem(sys.modules, "amdsmi", StandInAmdSmi(8))
    environ = {"TOPOVISOR_GPU_VENDOR": "amd", "ROCR_VISIBLE_DEVICES": "4,5,6,7", "HIP_VISIBLE_DEVICES": "1,2"}
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    inventory = open_inventory(None)
    assert [d.index for d in inventory.devices()] == [5, 6] and inventory.nvlink_peers(5) == {6}
    assert inventory.description == "amdsmi (ROCR_VISIBLE_DEVICES=4,5,6,7, HIP_VISIBLE_DEVICES=1,2)"
    plan = sv.make_plan(sv.Topology(name="g", services=[svc("a", 2), svc("own", 0, env={"X": "1"})]))
    replica = plan.service("a").replicas[0]
    assert replica.gpus == (5, 6) and plan.gpu_vendor == AMD
    assert replica.env == {"HIP_VISIBLE_DEVICES": "5,6"}
    inherited = {"CUDA_VISIBLE_DEVICES": "1,2", "ROCR_VISIBLE_DEVICES": "4,5,6,7", "PATH": "/bin"}
    assert replica.environment(inherited) == {"HIP_VISIBLE_DEVICES": "5,6", "PATH": "/bin"}
    assert plan.service("own").replicas[0].environment(inherited) == {**inherited, "X": "1"}  # no GPU: untouched


def test_a_service_mapping_its_devices_itself_gets_none_of_ours() -> None:
    node = FakeInventory(4, vendor=AMD)
    plan = sv.make_plan(
        sv.Topology(name="g", services=[svc("a", 1, env={"ROCR_VISIBLE_DEVICES": "GPU-x"}), svc("b", 2)]), gpus=node
    )
    a, b = plan.service("a").replicas[0], plan.service("b").replicas[0]
    assert (a.env, a.unset_env) == ({"ROCR_VISIBLE_DEVICES": "GPU-x"}, ())
    assert (b.env, b.unset_env) == ({"HIP_VISIBLE_DEVICES": "1,2"}, ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES"))


def test_a_simulated_mi300x_node_is_eight_gpus_of_192_gb_joined_by_xgmi() -> None:
    node = sv.SimulatedInventory.parse("8xMI300X")
    assert gpu_vendor(node) == AMD and node.description == "simulated node 8xMI300X"
    assert [d.memory_total_bytes for d in node.devices()] == [192 * GB] * 8
    assert node.nvlink_peers(3) == {0, 1, 2, 4, 5, 6, 7}
    assert sv.SimulatedInventory.parse("4xmi325x").memory_bytes == 256 * GB
    assert gpu_vendor(sv.SimulatedInventory.parse("8x80GB")) == NVIDIA
    with pytest.raises(sv.ConfigError, match="or an AMD GPU \\(8xMI300X, "):
        sv.SimulatedInventory.parse("8xMI999X")
    plan = sv.make_plan(sv.Topology(name="g", services=[svc("w", 2, replicas=2)]), gpus="8xMI300X")
    assert [r.env for r in plan.service("w").replicas] == [
        {"HIP_VISIBLE_DEVICES": "0,1"},
        {"HIP_VISIBLE_DEVICES": "2,3"},
    ]


# ----- runtime: what a child sees, the memory check, the release wait ----------------------------------

SHOW_ENV = (
    "import os; print('seen', *(os.environ.get(k, '-') for k in "
    "('HIP_VISIBLE_DEVICES', 'CUDA_VISIBLE_DEVICES', 'ROCR_VISIBLE_DEVICES')), flush=True); "
    "import time; time.sleep(60)"
)


@pytest.mark.anyio
async def test_a_child_on_amd_sees_hip_visible_devices_only(runs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")  # inherited by the supervisor: would disagree with HIP's
    monkeypatch.setenv("ROCR_VISIBLE_DEVICES", "7")
    service = sv.Service(name="w", command=[PYTHON, "-c", SHOW_ENV], replicas=2, gpus=2, ready=sv.LogCheck("seen"))
    async with sv.launch(sv.Topology(name="g", services=[service]), runs_dir=runs_dir, gpus="4xMI300X") as group:
        logs = [group.replica(f"w.{i}").log_path.read_text() for i in range(2)]
    assert "seen 0,1 - -" in logs[0] and "seen 2,3 - -" in logs[1]


@pytest.mark.anyio
async def test_amdsmi_names_the_holder_before_start_and_the_survivor_after_teardown(
    runs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The free-memory check and the VRAM-release wait read amdsmi's process list as they read NVML's."""
    monkeypatch.setattr(_gpu_checks, "GPU_RELEASE_SECONDS", 0.5)
    smi = StandInAmdSmi(2)
    inventory = AmdSmiInventory.open(importer=lambda: smi)
    smi.held = [(1, os.getpid(), 180 * GB)]
    wants_memory = svc("w", sv.GpuRequest(count=1, ids=[1], min_free_memory_bytes="20GB"), command=SLEEPER)
    with pytest.raises(sv.ConfigError, match=f"w needs 20 GB free on GPU 1 .*held by pid {os.getpid()} "):
        async with sv.launch(sv.Topology(name="g", services=[wants_memory]), runs_dir=runs_dir, gpus=inventory):
            pytest.fail("started despite the memory check")
    smi.held = []

    def on_event(event: sv.Event) -> None:
        if isinstance(event, sv.Spawned):  # the driver keeps listing it after its exit: a survivor
            smi.held.append((1, event.pid, 3 * GB))

    topology = sv.Topology(name="g", services=[svc("w", sv.GpuRequest(ids=[1]), command=SLEEPER)])
    async with sv.launch(topology, runs_dir=runs_dir, gpus=inventory, on_event=on_event) as group:
        pid = group.replica("w").pid
        assert group.replica("w").plan.env == {"HIP_VISIBLE_DEVICES": "1"}
    warnings = [e for e in group.event_history if isinstance(e, sv.GpuNotReleased)]
    assert [(w.replica, w.pid, w.gpu, w.used_memory_bytes) for w in warnings] == [("w", pid, 1, 3 * GB)]


@pytest.mark.anyio
async def test_a_scale_on_amd_gives_new_replicas_hip_visible_devices_after_the_memory_check(runs_dir: Path) -> None:
    """Replicas a scale adds get ROCm's variable too (the node is read again), and min_free_memory holds."""
    node = FakeInventory(3, vendor=AMD, processes=[GpuProcess(2, os.getpid(), 70 * GB)])
    request = sv.GpuRequest(count=1, min_free_memory_bytes="20GB")
    topology = sv.Topology(name="g", services=[svc("w", request, command=SLEEPER, ready=sv.LogCheck("service ready"))])
    async with sv.launch(topology, runs_dir=runs_dir, gpus=node) as group:
        await group.scale("w", 2)
        added = group.replica("w.1").plan
        assert (added.gpus, added.env, added.unset_env) == (
            (1,),
            {"HIP_VISIBLE_DEVICES": "1"},
            ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES"),
        )
        with pytest.raises(sv.ConfigError, match=f"w.2 needs 20 GB free on GPU 2 .*held by pid {os.getpid()} "):
            await group.scale("w", 3)
