"""Every example of the docs runs (or says why not): see ``tests/docs/blocks.py`` for the markers.

Each page runs in a work dir of its own, its blocks in page order, so a block can use the files an earlier
one wrote. Engines are the stand-ins (``standins/``): no GPU, no network."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from supervisor._host.proctable import marked_processes

from .blocks import ROOT, Block, blocks, console_steps, matches, pages, prepare, problems, run_block

PAGES = pages()
#: the pages with a block to run (the others are checked by the marker test only: every block says why not)
RUNNABLE_PAGES = [page for page in PAGES if any(block.kind == "run" for block in blocks(page))]


def test_the_docs_have_pages() -> None:
    names = {str(page.relative_to(ROOT)) for page in PAGES}
    assert {"README.md", "docs/index.md", "docs/tutorial.md", "docs/how-to/migrating.md", "docs/control.md"} <= names


def test_every_example_block_is_run_or_says_why_not() -> None:
    found = [problem for page in PAGES for block in blocks(page) if (problem := problems(block))]
    assert found == []


def _leftovers(work: Path) -> list[int]:
    runs = work / "state" / "topovisor" / "runs"
    return sorted(pid for run in (runs.iterdir() if runs.is_dir() else ()) for pid in marked_processes(run.name))


def test_the_front_pages_and_the_guides_have_examples_that_run() -> None:
    names = {str(page.relative_to(ROOT)) for page in RUNNABLE_PAGES}
    assert {"README.md", "docs/index.md", "docs/tutorial.md", "docs/how-to/python.md", "docs/how-to/cli.md"} <= names


@pytest.mark.parametrize("page", RUNNABLE_PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_page_examples_run(page: Path, tmp_path: Path) -> None:
    runnable = [block for block in blocks(page) if block.kind in ("file", "run")]
    env = prepare(tmp_path)
    try:
        for block in runnable:
            _check(block, tmp_path, env)
    finally:
        left = _leftovers(tmp_path)
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, 9)
    assert left == [], f"{page}: processes of a run outlived the page's examples"


def _check(block: Block, work: Path, env: dict[str, str]) -> None:
    expected_code = 0
    if block.argument.startswith("exit "):
        expected_code = int(block.argument.removeprefix("exit "))
    ran = run_block(block, work, env)
    shown = [lines for _, lines in console_steps(block.text)] if block.language == "console" else [[] for _ in ran]
    for index, (result, output) in enumerate(zip(ran, shown, strict=True)):
        last = index == len(ran) - 1
        wanted = expected_code if last else 0
        assert result.code == wanted, (
            f"{block.where()}: `{result.command}` exited {result.code}, not {wanted}:\n{result.output[-3000:]}"
        )
        missing = matches(output, result.output)
        assert missing is None, (
            f"{block.where()}: `{result.command}` did not print {missing!r} (in order, numbers aside):\n"
            f"{result.output[-3000:]}"
        )
