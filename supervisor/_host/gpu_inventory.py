"""What GPUs this node has, who holds their memory, and which are joined by NVLink: one small protocol.

``NvmlInventory`` reads the real node through NVML (``nvidia-ml-py``, imported as ``pynvml`` only when a
topology asks for GPUs, so ``import supervisor`` stays fast and works without a driver); AMD GPUs are read
through ``amdsmi`` (``gpu_amdsmi``: XGMI is their NVLink). ``SimulatedInventory`` is a node that does not
exist (``--gpus 8x80GB``, ``--gpus 8xMI300X``: plan and rehearse a topology meant for a GPU box on a
laptop); ``FakeInventory`` is a node given in code, for tests. All are real classes; planning and checks
only see the protocol, and ``gpu_vendor`` (an inventory's optional ``vendor``, NVIDIA when absent) says
which variables a replica is given its GPUs through.

Indices are NVML's, which follow the PCI bus order; replicas get ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` so that
CUDA numbers the devices the same way. A supervisor started with ``CUDA_VISIBLE_DEVICES`` set plans on
those GPUs only (``gpu_visible``, which also opens the inventory a plan uses).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import attrs

from .._errors import ConfigError
from .._units import parse_size
from .gpu_vendors import AMD, NVIDIA

__all__ = [
    "AMD",
    "NVIDIA",
    "FakeInventory",
    "GpuDevice",
    "GpuInventory",
    "GpuProcess",
    "GpuUnavailable",
    "NvmlInventory",
    "SimulatedInventory",
    "format_bytes",
    "gpu_vendor",
    "link_name",
]

PLAN_ANYWAY_HINT = "use --gpus 8x80GB to plan against a simulated node"
#: what to do about it, by cause (``GpuUnavailable.hint``): the Python binding is missing
NO_NVML_HINT = f"install nvidia-ml-py / {PLAN_ANYWAY_HINT}"
#: the binding is there, the driver's library is not (a machine without an NVIDIA driver)
NO_LIBRARY_HINT = (
    "nvidia-ml-py is installed, but the NVIDIA driver's NVML library (libnvidia-ml.so.1) was not found: "
    f"{PLAN_ANYWAY_HINT} anyway"
)
#: the library is there, the kernel driver is not loaded
NO_DRIVER_HINT = f"nvidia-ml-py is installed, but the NVIDIA driver is not loaded: {PLAN_ANYWAY_HINT} anyway"


class GpuUnavailable(ConfigError):
    """NVML cannot be used here (not installed, no driver, no GPU): nothing was started. ``hint`` says
    what to do about this cause (installing nvidia-ml-py helps only when its import failed)."""

    def __init__(self, problems: list[str] | str, *, source: str | None = None, hint: str = PLAN_ANYWAY_HINT) -> None:
        super().__init__(problems, source=source)
        self.hint = hint


@attrs.frozen
class GpuDevice:
    """One GPU as NVML reports it."""

    index: int  #: NVML index (PCI bus order)
    uuid: str
    name: str
    pci_bus_id: str
    memory_total_bytes: int
    memory_used_bytes: int = 0
    mig: bool = False  #: in MIG mode: CUDA sees its instances, not the GPU, so it is never handed out whole
    #: AMD: the partition mode when not the whole GPU (``CPX``, ``SPX/NPS4``): HIP sees its partitions as
    #: GPUs of their own, so, as a GPU in MIG mode, it is never handed out whole
    partition: str = ""

    @property
    def memory_free_bytes(self) -> int:
        return max(0, self.memory_total_bytes - self.memory_used_bytes)

    @property
    def divided(self) -> str | None:
        """Why the GPU is never handed out (``MIG mode``, ``partitioned (CPX)``), or None."""
        if self.mig:
            return "MIG mode"
        return f"partitioned ({self.partition})" if self.partition else None


@attrs.frozen
class GpuProcess:
    """A process with a context on a GPU."""

    gpu: int  #: the device's index
    pid: int
    used_memory_bytes: int | None = None  #: None where the driver does not tell


class GpuInventory(Protocol):
    """The node's GPUs. Read again on each call: memory and processes change."""

    @property
    def description(self) -> str:
        """For messages: ``NVML`` or ``simulated node 8x80GB``."""
        ...

    def devices(self) -> Sequence[GpuDevice]: ...

    def processes(self) -> Sequence[GpuProcess]: ...

    def nvlink_peers(self, index: int) -> frozenset[int]:
        """Indices of the GPUs that ``index`` reaches over NVLink (directly or through NVSwitch)."""
        ...


def gpu_vendor(inventory: GpuInventory) -> str:
    """``NVIDIA`` or ``AMD``: an inventory's ``vendor`` attribute, NVIDIA for one without it (the protocol
    predates AMD support; an inventory of AMD GPUs sets ``vendor = "amd"``)."""
    vendor = getattr(inventory, "vendor", NVIDIA)
    return AMD if vendor == AMD else NVIDIA


def link_name(vendor: str) -> str:
    """What joins the GPUs of a set: NVLink (NVIDIA) or XGMI (AMD Infinity Fabric)."""
    return "XGMI" if vendor == AMD else "NVLink"


def format_bytes(size: int) -> str:
    """``80 GB``, ``24 GiB``-style sizes for people (decimal units, one decimal where it matters)."""
    for unit, scale in (("TB", 1000**4), ("GB", 1000**3), ("MB", 1000**2), ("kB", 1000)):
        if size >= scale:
            value = size / scale
            return f"{value:.0f} {unit}" if value == int(value) or value >= 100 else f"{value:.1f} {unit}"
    return f"{size} B"


# ----- simulated and fake nodes ----------------------------------------------------------------------

_SIMULATED = re.compile(r"^\s*(\d+)\s*[xX]\s*(\S+)\s*$")
_MAX_SIMULATED_GPUS = 1024


#: AMD Instinct GPUs a simulated node may name (``8xMI300X``): memory of each (HBM, decimal units)
AMD_MODELS = {"MI300X": 192 * 1000**3, "MI308X": 192 * 1000**3, "MI325X": 256 * 1000**3, "MI355X": 288 * 1000**3}


@attrs.frozen
class SimulatedInventory:
    """A node that is not there: ``count`` empty GPUs of ``memory_bytes`` each, all joined by NVLink (as
    on an HGX/DGX board with NVSwitch), or, for AMD Instinct GPUs (``8xMI300X``), all joined by XGMI (as on
    an OAM platform). Plans and rehearsals only; nothing can hold its memory."""

    count: int
    memory_bytes: int
    spec: str
    vendor: str = NVIDIA
    model: str = ""  #: the AMD model named, else empty

    @classmethod
    def parse(cls, spec: str) -> SimulatedInventory:
        """``8x80GB``, ``4x24GiB``, ``2x141GB``, or AMD ``8xMI300X`` (also MI308X, MI325X, MI355X); raises
        ``ConfigError`` naming the expected form."""
        match = _SIMULATED.match(spec)
        models = ", ".join(f"8x{name}" for name in AMD_MODELS)
        problem = f"--gpus {spec!r}: expected COUNTxMEMORY such as 8x80GB or 4x24GiB, or an AMD GPU ({models})"
        if match is None:
            raise ConfigError(problem)
        count = int(match.group(1))
        model = match.group(2).upper()
        if model in AMD_MODELS:
            memory, vendor = AMD_MODELS[model], AMD
        else:
            model, vendor = "", NVIDIA
            try:
                memory = parse_size(match.group(2))
            except ValueError:
                raise ConfigError(problem) from None
        if not 1 <= count <= _MAX_SIMULATED_GPUS or memory <= 0:
            raise ConfigError(f"{problem} (1 to {_MAX_SIMULATED_GPUS} GPUs of more than 0 bytes)")
        return cls(count, memory, spec.strip(), vendor, model)

    @property
    def description(self) -> str:
        return f"simulated node {self.spec}"

    def devices(self) -> Sequence[GpuDevice]:
        name = f"simulated AMD Instinct {self.model}" if self.model else "simulated GPU"
        return [
            GpuDevice(
                index=i,
                uuid=f"GPU-simulated-{i:04d}",
                name=f"{name} ({format_bytes(self.memory_bytes)})",
                pci_bus_id=f"00000000:{i + 1:02X}:00.0",
                memory_total_bytes=self.memory_bytes,
            )
            for i in range(self.count)
        ]

    def processes(self) -> Sequence[GpuProcess]:
        return []

    def nvlink_peers(self, index: int) -> frozenset[int]:
        return frozenset(i for i in range(self.count) if i != index)


def _pid_alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class FakeInventory:
    """A node given in code, for tests: devices, the processes on them, and NVLink pairs.

    ``held`` may be changed at any time. With ``live_only`` (the default) a listed process is shown only
    while its pid lives, as NVML does, and ``release_delay_seconds`` more (a driver freeing the context
    a moment after the exit); without ``live_only`` it is listed until removed (a survivor). With
    ``pid_offset``, each is listed as its pid plus that: a driver in a container without the host's pid
    namespace, which lists the host's pids. ``vendor="amd"``: a node of AMD GPUs (replicas get ROCm's
    variables; the links are XGMI).
    """

    def __init__(
        self,
        devices: Iterable[GpuDevice] | int,
        *,
        processes: Iterable[GpuProcess] = (),
        links: Iterable[tuple[int, int]] | None = None,
        memory_bytes: int = 80 * 1000**3,
        live_only: bool = True,
        release_delay_seconds: float = 0.0,
        pid_offset: int = 0,
        vendor: str = NVIDIA,
        driver: str | None = None,
    ) -> None:
        if isinstance(devices, int):
            devices = [
                GpuDevice(i, f"GPU-fake-{i:04d}", "fake GPU", f"00000000:{i + 1:02X}:00.0", memory_bytes)
                for i in range(devices)
            ]
        self._devices = list(devices)
        self.vendor = vendor
        self.driver = driver  #: what ``driver_version()`` says (a sweep's rows record it)
        self.held: list[GpuProcess] = list(processes)
        self.live_only = live_only
        self.release_delay_seconds = release_delay_seconds
        self.pid_offset = pid_offset
        self._gone_since: dict[int, float] = {}
        self._peers: dict[int, set[int]] = {d.index: set() for d in self._devices}
        indices = [d.index for d in self._devices]
        pairs = links if links is not None else [(a, b) for a in indices for b in indices if a < b]
        for a, b in pairs:
            self._peers.setdefault(a, set()).add(b)
            self._peers.setdefault(b, set()).add(a)

    @property
    def description(self) -> str:
        return f"fake node with {len(self._devices)} GPUs"

    def driver_version(self) -> str | None:
        return self.driver

    def devices(self) -> Sequence[GpuDevice]:
        used: dict[int, int] = {}
        for process in self.processes():
            used[process.gpu] = used.get(process.gpu, 0) + (process.used_memory_bytes or 0)
        return [attrs.evolve(d, memory_used_bytes=d.memory_used_bytes + used.get(d.index, 0)) for d in self._devices]

    def processes(self) -> Sequence[GpuProcess]:
        listed = [p for p in self.held if not self.live_only or self._listed(p.pid)]
        return [attrs.evolve(p, pid=p.pid + self.pid_offset) for p in listed] if self.pid_offset else listed

    def _listed(self, pid: int) -> bool:
        if _pid_alive(pid):
            return True
        gone = self._gone_since.setdefault(pid, time.monotonic())
        return time.monotonic() - gone < self.release_delay_seconds

    def nvlink_peers(self, index: int) -> frozenset[int]:
        return frozenset(self._peers.get(index, ()))


# ----- NVML ------------------------------------------------------------------------------------------


class NvmlInventory:
    """The real node, through NVML. ``open()`` initialises NVML once (per process) or raises
    ``GpuUnavailable`` saying why; every read after that queries the driver again."""

    description = "NVML"
    vendor = NVIDIA

    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml
        self._handles: dict[int, Any] = {}
        for index in range(nvml.nvmlDeviceGetCount()):
            # a GPU this process may not open (a Slurm job's cgroup, a container: "Insufficient
            # Permissions") is not ours to plan on; the others keep their NVML indices
            with contextlib.suppress(Exception):
                self._handles[index] = nvml.nvmlDeviceGetHandleByIndex(index)

    @classmethod
    def open(cls, importer: Callable[[], Any] | None = None) -> NvmlInventory:
        try:
            nvml = importer() if importer is not None else _import_pynvml()
        except ImportError as exc:
            raise GpuUnavailable(
                f"NVML is not available: nvidia-ml-py is not installed ({exc})", hint=NO_NVML_HINT
            ) from None
        global _opened
        if _opened is not None and _opened[0] is nvml:  # one nvmlInit per process, not one per plan
            return _opened[1]
        try:
            nvml.nvmlInit()
        except Exception as exc:  # NVMLError and its many subclasses: no driver, no device, no permission
            raise GpuUnavailable(f"NVML is not available: {_nvml_message(exc)}", hint=_nvml_hint(exc)) from None
        try:
            inventory = cls(nvml)
        except Exception as exc:
            with contextlib.suppress(Exception):  # pairs the nvmlInit above: NVML is not kept open for nothing
                nvml.nvmlShutdown()
            raise GpuUnavailable(f"NVML is not available: {_nvml_message(exc)}") from None
        _opened = (nvml, inventory)
        return inventory

    def driver_version(self) -> str | None:
        """The NVIDIA driver's version (``550.54.15``), for a record of where a figure was measured."""
        try:
            return _text(self._nvml.nvmlSystemGetDriverVersion())
        except Exception:  # NVMLError: an old driver without the call
            return None

    def devices(self) -> Sequence[GpuDevice]:
        nvml = self._nvml
        found = []
        for index, handle in self._handles.items():
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            found.append(
                GpuDevice(
                    index=index,
                    uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                    name=_text(nvml.nvmlDeviceGetName(handle)),
                    pci_bus_id=_text(nvml.nvmlDeviceGetPciInfo(handle).busId),
                    memory_total_bytes=int(memory.total),
                    memory_used_bytes=int(memory.used),
                    mig=self._mig_enabled(handle),
                )
            )
        return found

    def _mig_enabled(self, handle: Any) -> bool:
        """``nvmlDeviceGetMigMode`` is ``[current, pending]``; GPUs without MIG raise Not Supported."""
        try:
            current = self._nvml.nvmlDeviceGetMigMode(handle)[0]
        except Exception:  # NVMLError_NotSupported (no MIG on this GPU), or an old driver: not in MIG mode
            return False
        return bool(current == getattr(self._nvml, "NVML_DEVICE_MIG_ENABLE", 1))

    def processes(self) -> Sequence[GpuProcess]:
        found: dict[tuple[int, int], GpuProcess] = {}
        for index, handle in self._handles.items():
            for kind in ("Compute", "Graphics"):
                for info in self._running(kind, handle):
                    used = getattr(info, "usedGpuMemory", None)
                    found.setdefault((index, int(info.pid)), GpuProcess(index, int(info.pid), used))
        return list(found.values())

    def _running(self, kind: str, handle: Any) -> list[Any]:
        """The processes of one kind on one GPU. nvidia-ml-py's unversioned call is the newest struct (v3),
        which drivers before R510 lack (``NVMLLibraryMismatchError``): then the v2 call, as old LTS drivers
        still run on clusters. Not supported (or not allowed) on this device: nothing to list."""
        for suffix in ("", "_v2"):
            query = getattr(self._nvml, f"nvmlDeviceGet{kind}RunningProcesses{suffix}", None)
            if query is None:
                continue
            try:
                return list(query(handle))
            except Exception:  # any NVMLError: try the older struct, then give up
                continue
        return []

    def nvlink_peers(self, index: int) -> frozenset[int]:
        nvml = self._nvml
        peers = set()
        mine = self._handles.get(index)
        for other, handle in self._handles.items():
            if other == index or mine is None:
                continue
            with contextlib.suppress(Exception):  # no NVLink, or the query is not supported: not a peer
                status = nvml.nvmlDeviceGetP2PStatus(mine, handle, nvml.NVML_P2P_CAPS_INDEX_NVLINK)
                if status == nvml.NVML_P2P_STATUS_OK:
                    peers.add(other)
        return frozenset(peers)


_opened: tuple[Any, NvmlInventory] | None = None  #: NVML initialised once per process (per module), kept open


def _import_pynvml() -> Any:
    import pynvml  # nvidia-ml-py has no type hints (see [[tool.mypy.overrides]])

    return pynvml


def _nvml_message(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if "Driver Not Loaded" in text or "Library Not Found" in text or "NVML Shared Library" in text:
        return f"{text} (no NVIDIA driver on this machine?)"
    return text


def _nvml_hint(exc: BaseException) -> str:
    text = str(exc)
    if "Library Not Found" in text or "NVML Shared Library" in text:
        return NO_LIBRARY_HINT
    if "Driver Not Loaded" in text:
        return NO_DRIVER_HINT
    return PLAN_ANYWAY_HINT


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
