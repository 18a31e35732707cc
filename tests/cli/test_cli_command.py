"""``supervisor run FILE -- CMD``: CMD's braces pass through, and a bad CMD is exit 2 before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..helpers import PYTHON
from .test_cli import CANARY_SERVICE, supervisor

TOPOLOGY = (
    "name: cmd\nservices:\n  front:\n    command: ['{python}', -c, 'import time; time.sleep(60)']\n    ports: [port]\n"
)


def test_braces_in_cmd_that_are_not_ours_pass_through(tmp_path: Path, runs_dir: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(TOPOLOGY)
    script = "import sys; p = 'x'; print(f'{p}', sys.argv[1:])"
    result = supervisor("run", str(path), "--runs-dir", str(runs_dir), "-q", "--", PYTHON, "-c", script,
                        "{front.url}", "{print $1}", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    printed = result.stdout.strip()
    assert printed.startswith("x ['http://127.0.0.1:") and printed.endswith("'{print $1}']"), printed


@pytest.mark.parametrize(
    ("cmd", "expected"),
    [
        (["no-such-program-xyz", "--url", "{front.url}"], "executable 'no-such-program-xyz' not found on PATH"),
        ([PYTHON, "{front.urll}"], "unknown template {front.urll} (did you mean 'front.url'?)"),
    ],
    ids=["missing-program", "template-typo"],
)
def test_a_bad_cmd_is_exit_2_and_nothing_starts(tmp_path: Path, runs_dir: Path, cmd: list[str], expected: str) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(TOPOLOGY + CANARY_SERVICE)
    result = supervisor("run", str(path), "--runs-dir", str(runs_dir), "--", *cmd, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "CANARY").exists()
    assert not runs_dir.exists() or not list(runs_dir.iterdir())
