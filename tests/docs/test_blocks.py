"""The docs test's own rules: an unmarked example fails, shown output is compared without the numbers."""

from __future__ import annotations

from pathlib import Path

from .blocks import blocks, console_steps, matches, problems


def _page(tmp_path: Path, text: str) -> list[str | None]:
    page = tmp_path / "docs" / "p.md"
    page.parent.mkdir()
    page.write_text(text)
    return [problems(block) for block in blocks(page)]


def test_an_unmarked_example_is_a_problem(tmp_path: Path) -> None:
    found = _page(tmp_path, "text\n\n```sh\necho hi\n```\n\n```text\nshown\n```\n")
    assert found[0] is not None and "neither run nor marked" in found[0] and "p.md:3" in found[0]
    assert found[1] is None


def test_markers_make_examples_run_or_skip_with_a_reason(tmp_path: Path) -> None:
    text = "<!-- run -->\n```sh\necho hi\n```\n<!-- not run: needs a GPU -->\n\n```python\nx\n```\n<!-- not run -->\n```yaml\na: 1\n```\n"
    found = _page(tmp_path, text)
    assert found[:2] == [None, None]
    assert found[2] is not None and "needs a reason" in found[2]


def test_a_block_without_a_language_is_a_problem(tmp_path: Path) -> None:
    (found,) = _page(tmp_path, "```\n$ echo hi\n```\n")
    assert found is not None and "without a language" in found


def test_console_steps_and_output_matching() -> None:
    steps = console_steps("$ supervisor graph \\\n    x.yaml\ndemo: 4 services\n  layer 0  kv\n$ true\n")
    assert steps == [("supervisor graph  x.yaml", ["demo: 4 services", "  layer 0  kv"]), ("true", [])]
    output = "noise\ndemo: 5 services\n  layer 0    kv\n"
    assert matches(["demo: 4 services", "layer 0 kv"], output) is None  # numbers and spacing aside
    assert matches(["layer 0 kv", "demo: 4 services"], output) == "demo: 4 services"  # in order
    assert matches(["run ... is up"], "run 2026-x-abc is up") is None
    assert matches(["demo: 4 replicas"], output) == "demo: 4 replicas"
