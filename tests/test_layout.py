"""The layout shows the layers: a few shared leaves at the top, the running group in its own package, and
no module outside the runtime reaching into the group's or a replica's private state."""

from __future__ import annotations

import re
from pathlib import Path

import supervisor as sv

PACKAGE = Path(__file__).parent.parent / "supervisor"
#: ``group._x``, ``replica._x``: a private member of the running group or of a replica
_PRIVATE_ACCESS = re.compile(r"\b(?:group|replica|running|topology|run)\._[a-z]\w*")


def test_the_package_top_holds_only_the_door_and_a_few_shared_leaves() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 12, top
    assert {"__init__.py", "__main__.py"} <= set(top)


def test_the_running_group_lives_in_the_runtime_package() -> None:
    assert sv.RunningTopology.__module__ == "supervisor._runtime.group"
    assert sv.Replica.__module__ == "supervisor._runtime.replica"


def test_private_access_finds_a_reach_into_the_group() -> None:
    assert _PRIVATE_ACCESS.findall("x = group._stopping or replica.state") == ["group._stopping"]


def test_no_module_outside_the_runtime_touches_a_private_member_of_the_group_or_a_replica() -> None:
    found = [
        f"{path.relative_to(PACKAGE)}: {match}"
        for path in PACKAGE.rglob("*.py")
        if "_runtime" not in path.parts
        for match in _PRIVATE_ACCESS.findall(path.read_text())
    ]
    assert found == []


def test_a_replica_side_flag_changes_only_in_the_replica_module() -> None:
    """``held``, ``trial``, ``restarts``, ``restart_pending``, ``settled``, ``loop_scope``: read-only
    properties; the replica's methods say why each changes."""
    assignment = re.compile(
        r"\b(?:replica|target|member|r)\.(held|trial|restarts|restart_pending|settled|loop_scope)\s*(?:=|\+=)[^=]"
    )
    found = [
        f"{path.relative_to(PACKAGE)}: {match}"
        for path in PACKAGE.rglob("*.py")
        if path.name != "replica.py"
        for match in assignment.findall(path.read_text())
    ]
    assert found == []
