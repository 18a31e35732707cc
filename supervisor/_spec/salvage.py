"""A topology the converter could not build, checked as far as it can be: one round reports every problem
that does not wait for another's fix.

The converter words each field it could not read (``_spec.load``). To find the problems elsewhere in the
same round, those fields are left out (their defaults stand in), the rest is built and ``check_topology``
runs on it. What it then says about a field left out, or about a field whose check reads one left out
(``command`` reads ``shell``; ``phases`` reads ``ready``...), is held back: such checks wait for the fixes,
and so do the checks inside a block left out (a probe's regex when its timeout is bad) and the cycle
check when some service's dependencies could not be read. Those are counted, not guessed at.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .fields import _CONVERTER, _FIELDS_OF
from .model import Service, Topology
from .validate import check_topology

__all__ = ["Salvage"]

#: a check of the field on the left reads the fields on the right
_READS: dict[str, tuple[str, ...]] = {
    "command": ("command", "shell"),
    "shell": ("command", "shell"),
    "phases": ("ready",),
    "min_ready": ("replicas",),
}
_CLUSTER_READERS = ("placement", "profile", "gpus")  #: checked against the top-level cluster:
_SERVICE_PATH = re.compile(r"\$\.services\[(\d+)\](?:\.(\w+))?")
_TOP_PATH = re.compile(r"\$\.(\w+)")
_REPORT = re.compile(r"service '([^']*)'(?:, field '(\w+))?|field '(\w+)")


class Salvage:
    """What the failed paths (``$.services[2].ready``...) leave readable, and the checks of that part."""

    def __init__(
        self, data: Mapping[str, Any], failed_paths: list[str], names: list[str], *, top_unknown: bool = False
    ) -> None:
        self.data, self.names = data, names
        self.left_out: dict[str, set[str]] = {}  #: service label -> its fields left out
        self.unknown: set[str] = set()  #: services with an unknown field (it may be a field misspelt)
        self.unread: set[str] = set()  #: services not read at all
        self.top_left_out: set[str] = set()
        self.gave_up = False
        for path in failed_paths:
            self._note(re.sub(r"_seconds\b", "", path))
        if top_unknown and "cluster" not in data:  # the unknown field may be cluster:, misspelt
            self.top_left_out.add("cluster")

    def _label(self, index: int) -> str:
        return self.names[index] if index < len(self.names) else f"#{index}"

    def _note(self, path: str) -> None:
        service = _SERVICE_PATH.match(path)
        if service:
            label = self._label(int(service.group(1)))
            if service.group(2) is None:
                self.unknown.add(label)  # the service's own mapping: an unknown field
            elif service.group(2) == "name":
                self.unread.add(label)
            else:
                self.left_out.setdefault(label, set()).add(service.group(2))
        elif (top := _TOP_PATH.match(path)) and top.group(1) != "services":
            self.top_left_out.add(top.group(1))
        else:
            self.gave_up = True

    def check(self) -> tuple[list[str], int]:
        """The problems of what could be read, and how many checks wait for the fixes."""
        topology = self._readable()
        if topology is None:
            return [], 1  # all the checks of the topology wait
        problems: list[str] = []
        held = 0

        def report(line: str) -> None:
            nonlocal held
            if self._about_unread(line):
                return  # counted once for the service
            if self._waits(line):
                held += 1
            else:
                problems.append(line)

        waiting = check_topology(topology, report)  # the cycle check, when a name is defined twice
        blocks = sum(isinstance(self._raw(label).get(f), Mapping) for label, fs in self.left_out.items() for f in fs)
        blocks += sum(
            isinstance(value, Mapping)
            for label in self.unknown
            for key, value in self._raw(label).items()
            if key not in _FIELDS_OF[Service]
        )
        deps_unread = self.unread or any("depends_on" in fields for fields in self.left_out.values())
        cycle_waits = bool(deps_unread) and not waiting and not any(p.startswith("dependency cycle:") for p in problems)
        return problems, held + waiting + blocks + len(self.unread) + cycle_waits

    def _raw(self, label: str) -> Mapping[str, Any]:
        services = self.data.get("services")
        for index, body in enumerate(services if isinstance(services, list) else []):
            if self._label(index) == label and isinstance(body, Mapping):
                return body
        return {}

    def _readable(self) -> Topology | None:
        """The topology without the fields that could not be read; None when even that cannot be built."""
        if self.gave_up or not isinstance(self.data.get("services"), list):
            return None
        services = []
        for index, body in enumerate(self.data["services"]):
            label = self._label(index)
            if not isinstance(body, Mapping) or label in self.unread:
                self.unread.add(label)
                services.append({"name": label})
                continue
            dropped = self.left_out.get(label, set())
            known = _FIELDS_OF[Service] if label in self.unknown else list(body)
            services.append({k: v for k, v in body.items() if k in known and k not in dropped})
        top = {k: v for k, v in self.data.items() if k not in self.top_left_out}
        if "name" in self.top_left_out:
            top["name"] = "_"
        try:
            return _CONVERTER.structure({**top, "services": services}, Topology)
        except Exception:  # a field left out was required: nothing more can be said this round
            return None

    def _about_unread(self, line: str) -> bool:
        match = _REPORT.match(line)
        return match is not None and match.group(1) in self.unread

    def _waits(self, line: str) -> bool:
        """Whether a problem found on the readable part is about, or reads, a field that was left out."""
        match = _REPORT.match(line)
        if match is None:
            return False
        label, field, top_field = match.groups()
        if top_field is not None:
            return top_field in self.top_left_out
        if field is None:
            return False
        left_out = self.left_out.get(label, set())
        raw = self._raw(label)
        reads = _READS.get(field, ())
        if field in left_out or any(r in left_out for r in reads):
            return True
        if label in self.unknown and any(r not in raw for r in reads):  # the unknown field may be it, misspelt
            return True
        return "cluster" in self.top_left_out and field in _CLUSTER_READERS
