"""A throwaway engine env whose ``bin/`` runs the stand-ins: ``vllm``, ``trtllm-serve`` and a ``python`` that
maps ``-m sglang.launch_server`` / ``-m sglang_router.launch_router`` to them (anything else: the real one)."""

from __future__ import annotations

import sys
from pathlib import Path

PYTHON = sys.executable
MODEL = "standin/tiny-llm"

_CONSOLE = """#!{python}
import os, sys
os.execv({python!r}, [{python!r}, "-m", "standins", {role!r}, *sys.argv[1:]])
"""
_PYTHON = """#!{python}
import os, sys
ROLES = {{"sglang.launch_server": "sglang", "sglang_router.launch_router": "sglang-router"}}
args = sys.argv[1:]
if args[:1] == ["-m"] and len(args) > 1 and args[1] in ROLES:
    args = ["-m", "standins", ROLES[args[1]], *args[2:]]
os.execv({python!r}, [{python!r}, *args])
"""


def standin_env(root: Path) -> Path:
    """``root`` as an engine env (``env_path``): tiny executable wrappers, no shell involved."""
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    scripts = {
        "vllm": _CONSOLE.format(python=PYTHON, role="vllm"),
        "trtllm-serve": _CONSOLE.format(python=PYTHON, role="trtllm-serve"),
        "python": _PYTHON.format(python=PYTHON),
    }
    for name, text in scripts.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(0o755)
    return root
