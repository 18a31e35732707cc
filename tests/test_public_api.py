"""The public surface: one sorted ``__all__``, every name importable, nothing public left out."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import subprocess
import sys
import types
from pathlib import Path

import supervisor

MODULES = sorted(
    info.name.removeprefix("supervisor.")
    for info in pkgutil.walk_packages(supervisor.__path__, "supervisor.")
    if info.name != "supervisor.__main__"
)


def test_all_is_sorted_and_importable() -> None:
    assert supervisor.__all__ == sorted(supervisor.__all__)
    for name in supervisor.__all__:
        assert getattr(supervisor, name) is not None


def test_every_module_declares_all_and_public_classes_are_exported() -> None:
    exported = set(supervisor.__all__)
    for name in MODULES:
        module = importlib.import_module(f"supervisor.{name}")
        assert hasattr(module, "__all__"), name
    for name in (
        "Topology",
        "Service",
        "Probe",
        "HttpCheck",
        "ServiceFailed",
        "ConfigError",
        "launch",
        "run",
        "load",
    ):
        assert name in exported


def test_importing_a_module_never_hides_a_public_name() -> None:
    """``import supervisor._runtime.runner`` must not turn ``supervisor.launch`` into a module (names must differ)."""
    for name in MODULES:
        importlib.import_module(f"supervisor.{name}")
    shadowed = [name for name in supervisor.__all__ if isinstance(getattr(supervisor, name), types.ModuleType)]
    assert shadowed == []


def test_import_is_light() -> None:
    """``import supervisor`` loads no heavy dependency until a name is used."""
    code = "import sys, supervisor; print(sorted(m for m in ('httpx', 'cattrs', 'yaml', 'psutil', 'anyio') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_supervisord_install_over_ours_is_detected(tmp_path: Path) -> None:
    package = Path(supervisor.__file__).parent
    fake = tmp_path / "supervisor"
    fake.mkdir()
    for source in package.glob("*.py"):
        (fake / source.name).write_text(source.read_text())
    (fake / "supervisord.py").write_text("# supervisord's main module\n")
    result = subprocess.run(
        [sys.executable, "-c", "import supervisor"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path)},
    )
    assert result.returncode != 0 and "mixes topovisor with supervisord" in result.stderr


def test_every_module_is_internal_and_the_surface_is_one_table() -> None:
    """Users import ``supervisor`` only; the type checkers' view of it is the same table as ``_LAZY``."""
    assert [name for name in MODULES if not name.startswith("_")] == []
    source = Path(supervisor.__file__).read_text()
    tree = ast.parse(source)
    checked = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    typed = {
        alias.asname or alias.name: node.module
        for node in checked.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert typed == supervisor._LAZY
    assert supervisor.__all__ == sorted(supervisor._LAZY)


def test_the_public_entry_points_carry_no_private_keyword() -> None:
    """What the CLI and the sync twin pass (a head start, an allocation, a group hook) goes through
    ``launch_prepared``/``supervise_prepared``, not through hidden ``_x`` arguments of the public calls."""
    import inspect

    for function in (supervisor.launch, supervisor.supervise, supervisor.run):
        hidden = [name for name in inspect.signature(function).parameters if name.startswith("_")]
        assert hidden == [], function.__name__
