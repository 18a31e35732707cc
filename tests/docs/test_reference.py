"""The generated topology reference lists every key the loader takes: the loader itself is asked (an unknown
key in each block makes it name the keys it knows), so a field added to the loader and not to the page fails."""

from __future__ import annotations

import importlib.util
import re
from typing import Any

import pytest

import supervisor as sv

from .blocks import ROOT

_LINE = re.compile(
    r"(?:top level|(?:service '(?P<service>\w+)'(?:, )?)?(?:field '(?P<field>[\w.]+)')?): unknown field '[\w.]+' \(known: (?P<known>[^)]*)\)"
)


def _reference() -> Any:
    spec = importlib.util.spec_from_file_location("docs_reference", ROOT / "docs" / "hooks" / "reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _service(**fields: object) -> dict[str, object]:
    return {"name": "t", "services": {"a": {"command": ["x"], **fields}}}


BOGUS = {"zzqx": 1}
PROBES = [{kind: value, **BOGUS} for kind, value in
          [("http", "http://x"), ("tcp", "1"), ("log", "x"), ("exec", ["x"]), ("all", [{"tcp": "1"}]), ("any", [{"tcp": "1"}])]]  # fmt: skip
CASES: list[dict[str, object]] = [
    {**_service(), **BOGUS},
    _service(**BOGUS),
    *(_service(ready=probe) for probe in PROBES),
    *(_service(alive=probe) for probe in PROBES),
    _service(stop=BOGUS, log=BOGUS, restart={"backoff": BOGUS, **BOGUS}),
    _service(gpus=BOGUS, profile={"tool": "nsys", **BOGUS}, placement=BOGUS),
    _service(ports={"p": BOGUS}, depends_on={"b": BOGUS}),
    {**_service(), "cluster": BOGUS},
    {**_service(), "cluster": {"slurm": BOGUS}},
]


def _accepted_keys(data: dict[str, object]) -> set[str]:
    """The full paths of the keys the loader says it knows in the blocks where ``data`` has an unknown one."""
    with pytest.raises(sv.ConfigError) as raised:
        sv.topology_from_dict(data)
    keys = set()
    for match in _LINE.finditer(str(raised.value)):
        prefix = ""
        if match.group("service"):
            prefix = "services.NAME."
        if match.group("field"):
            prefix += match.group("field") + "."
        for known in match.group("known").split(", "):
            if prefix.endswith("ports."):
                known = re.sub(r"^\w+\.", "NAME.", known)  # {p: {below: N}}: p is the port's name
            elif prefix.endswith("depends_on."):
                known = "NAME." + known  # {kv: {condition: ready}}
            keys.add(prefix + known)
    assert keys, str(raised.value)
    return keys


def test_every_key_the_loader_accepts_is_on_the_topology_page() -> None:
    page = _reference().topology_reference()
    accepted = set().union(*(_accepted_keys(case) for case in CASES))
    assert len(accepted) > 80  # every block was reached
    missing = sorted(key for key in accepted if f"| `{key}` |" not in page)
    assert missing == []


def test_the_keys_read_outside_the_converter_are_on_the_page_too() -> None:
    """``preset:`` (read before the rest), a phase's name, ``on_change: {signal: ...}``: no error lists them."""
    page = _reference().topology_reference()
    for key in (
        "preset",
        "vars",
        "services.NAME.phases.NAME",
        "services.NAME.on_change.signal",
        "services.NAME.ports.NAME",
    ):
        assert f"| `{key}` |" in page


def test_the_cli_and_python_pages_cover_every_command_and_public_name() -> None:
    from supervisor._cli.table import COMMANDS

    reference = _reference()
    cli, python = reference.cli_reference(), reference.python_reference()
    assert all(f"## {command.name}\n" in cli for command in COMMANDS)
    assert all(f"## {name}\n" in python for name in sv.__all__)
