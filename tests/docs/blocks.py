"""The example blocks of the docs (``README.md`` and ``docs/**/*.md``) and how each is run.

The marker on the line before a fence (an HTML comment, invisible on the site) says what a block is:

- ``<!-- file: NAME -->``: its text is written to NAME in the page's work dir (later blocks use it);
- ``<!-- run -->``: run in that dir: ``python`` blocks as a script, ``sh``/``bash`` with /bin/sh -e (bash),
  ``console`` blocks command by command (``$ `` lines; a trailing ``\\`` continues one), each shown output
  line compared, in order, with what the command printed (see ``matches``); ``<!-- run: exit N -->``
  expects exit status N of the last command;
- ``<!-- not run: REASON -->``: shown only, for the reason given (needs a GPU, a cluster, a fragment...).

A ``python``, ``sh``, ``bash``, ``shell``, ``console`` or ``yaml`` block without one of these fails the docs
test, so no example can be forgotten; a block without a language fails too. Other languages (``text``,
``json``) are shown output or formats, not examples.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXAMPLE_LANGUAGES = {"python", "py", "sh", "bash", "shell", "console", "yaml", "yml"}
BLOCK_TIMEOUT = 90.0  #: seconds for one block (a command of a console block); the process group is killed after
_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)")
_MARKER = re.compile(r"^\s*<!--\s*(?P<kind>file|run|not run)\s*(?::\s*(?P<arg>.*?))?\s*-->\s*$")


class Block(NamedTuple):
    page: Path
    line: int  #: 1-based line of the opening fence
    language: str
    text: str
    kind: str | None  #: file, run, not run, or None (unmarked)
    argument: str

    def where(self) -> str:
        page = self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page
        return f"{page}:{self.line}"


def pages() -> list[Path]:
    """The site's pages, and the README (the front page on the code host)."""
    return [ROOT / "README.md", *sorted(path for path in DOCS.rglob("*.md") if "hooks" not in path.parts)]


def blocks(page: Path) -> Iterator[Block]:
    lines = page.read_text().splitlines()
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if match is None:
            index += 1
            continue
        start, fence, indent = index, match.group("fence"), len(match.group("indent"))
        body: list[str] = []
        index += 1
        while index < len(lines) and not lines[index].strip().startswith(fence):
            body.append(lines[index][indent:])
            index += 1
        index += 1
        kind, argument = None, ""
        before = start - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        marker = _MARKER.match(lines[before]) if before >= 0 else None
        if marker is not None:
            kind, argument = marker.group("kind"), (marker.group("arg") or "").strip()
        text = "\n".join(body) + "\n"
        yield Block(page, start + 1, match.group("lang").lower(), text, kind, argument)


def problems(block: Block) -> str | None:
    """Why a block breaks the convention, or None."""
    if not block.language:
        return f"{block.where()}: a block without a language (```text for output, ```sh for commands...)"
    if block.kind == "not run" and not block.argument:
        return f"{block.where()}: '<!-- not run -->' needs a reason: '<!-- not run: needs a GPU -->'"
    if block.kind == "file" and not block.argument:
        return f"{block.where()}: '<!-- file -->' needs a name: '<!-- file: topo.yaml -->'"
    if block.language in EXAMPLE_LANGUAGES and block.kind is None:
        return (
            f"{block.where()}: a {block.language} block that is neither run nor marked: precede it with "
            "'<!-- run -->', '<!-- file: NAME -->' or '<!-- not run: REASON -->'"
        )
    if block.kind == "run" and block.language not in EXAMPLE_LANGUAGES - {"yaml", "yml"}:
        return f"{block.where()}: '<!-- run -->' on a {block.language} block: only python and shell blocks run"
    return None


# ----- running ----------------------------------------------------------------------------------------------
class Ran(NamedTuple):
    command: str
    code: int
    output: str


def prepare(work: Path) -> dict[str, str]:
    """The page's work dir: ``supervisor`` and ``python`` on PATH running this checkout, ``examples/`` beside.

    Runs go under the work dir's state dir (``XDG_STATE_HOME``), never the user's."""
    bin_dir = work / ".bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    shims = {
        "supervisor": f'#!/bin/sh\nexec "{sys.executable}" -m supervisor "$@"\n',
        "python": f'#!/bin/sh\nexec "{sys.executable}" "$@"\n',
        "python3": f'#!/bin/sh\nexec "{sys.executable}" "$@"\n',
    }
    for name, text in shims.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    if not (work / "examples").exists():
        (work / "examples").symlink_to(ROOT / "examples")
    env = {key: value for key, value in os.environ.items() if not key.startswith("TOPOVISOR_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    env["XDG_STATE_HOME"] = str(work / "state")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(argv: list[str], work: Path, env: dict[str, str], shown: str) -> Ran:
    process = subprocess.Popen(
        argv, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=BLOCK_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # its own session and group: only what this block started
        output, _ = process.communicate()
        return Ran(shown, -9, output + f"\n[docs test: killed after {BLOCK_TIMEOUT:g}s]")
    return Ran(shown, process.returncode, output)


def run_block(block: Block, work: Path, env: dict[str, str]) -> list[Ran]:
    if block.kind == "file":
        target = work / block.argument
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.text)
        return []
    if block.language in ("python", "py"):
        script = work / f".block-{block.line}.py"
        script.write_text(block.text)
        return [_run([sys.executable, str(script)], work, env, f"python block at {block.where()}")]
    if block.language == "console":
        return [_run(["/bin/sh", "-c", command], work, env, command) for command, _ in console_steps(block.text)]
    shell = "/bin/bash" if block.language == "bash" else "/bin/sh"
    return [_run([shell, "-e", "-c", block.text], work, env, block.text.strip())]


def console_steps(text: str) -> list[tuple[str, list[str]]]:
    """``$ command`` lines (``\\`` continues one) and the output shown after each."""
    steps: list[tuple[str, list[str]]] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line.startswith("$ "):
            if steps:
                steps[-1][1].append(line)
            continue
        command = line[2:]
        while command.endswith("\\") and index < len(lines):
            command = command[:-1] + " " + lines[index].strip()
            index += 1
        steps.append((command, []))
    return steps


def _normal(line: str) -> str:
    """Numbers (times, ports, pids, counts) and runs of spaces do not count: they differ on every run."""
    return " ".join(re.sub(r"\d+(?:\.\d+)?", "N", line).split())


def matches(shown: list[str], output: str) -> str | None:
    """None when every shown line is found in the output, in order (``...`` in a line: anything); else which is not."""
    actual = [_normal(line) for line in output.splitlines()]
    position = 0
    for line in shown:
        if not line.strip():
            continue
        pattern = re.compile(re.escape(_normal(line)).replace(re.escape("..."), ".*"))
        found = next((i for i in range(position, len(actual)) if pattern.fullmatch(actual[i])), None)
        if found is None:
            return line
        position = found + 1
    return None
