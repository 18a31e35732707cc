"""``python -m standins engine-env DIR``: a throwaway engine env whose ``bin/`` runs the engine stand-ins.

``bin/vllm`` and ``bin/trtllm-serve`` are the stand-ins; ``bin/python`` maps ``-m sglang.launch_server``,
``-m sglang_router.launch_router`` and ``-m vajra.entrypoints.openai.api_server`` to them and runs anything
else with the real interpreter. Give DIR as a preset's ``env_path`` to rehearse a vLLM, SGLang,
TensorRT-LLM or Vajra topology on a machine without GPUs.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["main", "make_engine_env"]

_CONSOLE = """#!{python}
import os, sys
os.execv({python!r}, [{python!r}, "-m", "standins", {role!r}, *sys.argv[1:]])
"""
_PYTHON = """#!{python}
import os, sys
ROLES = {{"sglang.launch_server": "sglang", "sglang_router.launch_router": "sglang-router",
         "vajra.entrypoints.openai.api_server": "vajra"}}
args = sys.argv[1:]
if args[:1] == ["-m"] and len(args) > 1 and args[1] in ROLES:
    args = ["-m", "standins", ROLES[args[1]], *args[2:]]
os.execv({python!r}, [{python!r}, *args])
"""


def make_engine_env(root: Path, python: str = sys.executable) -> Path:
    """``root`` as an engine env (``env_path``): tiny executable wrappers, no shell involved."""
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    scripts = {
        "vllm": _CONSOLE.format(python=python, role="vllm"),
        "trtllm-serve": _CONSOLE.format(python=python, role="trtllm-serve"),
        "python": _PYTHON.format(python=python),
    }
    for name, text in scripts.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(0o755)
    return root


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m standins engine-env DIR", file=sys.stderr)
        return 2
    root = make_engine_env(Path(argv[0]).absolute())
    print(f"stand-in engine env: {root} (use it as env_path: --set env_path={root})")
    return 0
